"""Algorithm 1 distributed over Ray actors: each actor a shard of the vectorized core and the policies.

The agents are split into ``K`` contiguous blocks (:func:`partition`). Shard ``s`` holds the slice of the
core for its block (:func:`slice_core`: the same arrays, cut), the policies of its agent types and the local
dual state. Every hour each shard observes, acts, steps its core slice and takes its local dual step; each of the
``L`` consensus rounds then needs the multipliers of the neighbours in other shards -- the values on the *cut
edges* of the communication graph, and nothing else (:func:`exchange_plan`). A shard returns them as Ray objects
(one per neighbouring shard, in the object store), and the driver hands those references to the neighbours'
next call; Ray moves the bytes between the actors. The driver only collects a few partial sums per hour.

Bit-identity with the single-process run (``algorithms.execute.run_execution``) with every communication
fault off holds because every number is computed from the same operands in the same order:

* the physics and observation kernels work agent by agent (checked on slices in the tests);
* a consensus round on shard ``s`` multiplies the CSR *row slice* ``W[lo:hi]`` with its columns renumbered to
  the shard's local vector (own block, then the received cut-edge values): the same products summed in the
  same order as the global sparse product (:func:`local_matrix`);
* the per-hour totals (``sum_i e_grid_i`` ...) are numpy pairwise sums; :func:`sum_tree` splits the index range
  exactly as numpy's pairwise summation does, the shards sum the subtrees they own and the driver adds the
  subtrees in numpy's order (a subtree of at most 128 values that straddles a shard boundary is sent raw);
* torch's CPU matrix product gives a row a different last bit when the batch has fewer than 4 rows: the shards
  evaluate each agent type in the same batches (chunks of ``INFERENCE_CHUNK`` rows) as the single-process run,
  a small batch rebuilt at its size with the shard's rows in their places (:func:`_batched_act`);
* the diagnostics with dot products (the consensus error and sigma of Theorem 5.1) are computed on the driver
  from the gathered ``lambda`` and ``e_grid`` vectors (``diagnostics="exact"``, the default up to
  ``EXACT_DIAGNOSTICS_MAX_N`` agents); above that each shard sends weighted moments that the driver combines
  (``"partial"``: the same values up to rounding in the last bits, and O(K) numbers per hour instead of O(N)).

With communication faults on, each shard runs :class:`algorithms.comm.CommNetwork` on its local matrix
(:class:`ShardCommNetwork`), so delays, loss, asynchrony and quantisation act on cross-shard messages exactly as
on the others, and a link between two shards is up or down for both ends at once (a hash of the link and the
hour, :func:`link_up`). The random draws are not the single-process ones: those are one stream over all
messages in CSR order, and each shard would have to draw the whole stream to cut out its part. Faulty sharded
runs are therefore equal in distribution, not bit-identical; joint connectivity is not tracked across shards
(``graph_redraw`` is refused).
"""

from __future__ import annotations

import copy
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from algorithms.comm import CommNetwork
from algorithms.dual import DualConfig, dual_step_lambda, dual_step_nu
from algorithms.execute import (INFERENCE_CHUNK, DualConsensusController, ExecutionConfig, ExecutionResult, Policy,
                                policies_for)
from cmarl_env import graphs
from cmarl_env.core import AgentLayout, DemandResponseCore
from cmarl_env.evaluation.rollout import Rollout

__all__ = ["partition", "exchange_plan", "local_matrix", "sum_tree", "tree_sum", "slice_core", "link_up",
           "ShardPlan", "run_sharded", "ray_session", "check_shards", "EXACT_DIAGNOSTICS_MAX_N"]

PAIRWISE_BLOCK = 128  # numpy's pairwise summation adds up to this many values in one unrolled loop
SMALL_BATCH = 16  # torch row results are equal for every batch of >= 4 rows; below 16 a batch is rebuilt exactly
EXACT_DIAGNOSTICS_MAX_N = 20_000
SUM_FIELDS = ("e_grid", "demand", "backlog", "r0", "r2")  # per-hour totals of the roll-out and the unmet_r2 trace


# --------------------------------------------------------------------------
# partition and exchange plan (pure)
# --------------------------------------------------------------------------
def check_shards(shards: Any, n_agents: int) -> int:
    """``shards`` as an int in [1, n_agents], else a one-line ``ValueError``."""
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)):
        raise ValueError(f"shards={shards!r} must be an integer in [1, {n_agents}] (one shard per Ray actor)")
    if not 1 <= shards <= n_agents:
        raise ValueError(f"shards={shards} must be in [1, {n_agents}]: at least one agent per shard "
                         f"(the run has {n_agents} agents)")
    return int(shards)


def partition(n_agents: int, shards: int) -> np.ndarray:
    """Boundaries ``b`` (``K + 1`` ints, ``b[0] = 0``, ``b[K] = N``) of ``K`` contiguous blocks of near-equal size.

    Shard ``s`` holds agents ``b[s] .. b[s + 1] - 1``. Contiguous blocks keep the CSR row slices, the
    pairwise-summation subtrees and the agent types' inference batches intact; on the package's graphs (ring,
    line, two clusters, small world) agent indices follow the graph, so few edges are cut.
    """
    k = check_shards(shards, n_agents)
    return np.array([(i * n_agents) // k for i in range(k + 1)], dtype=np.int64)


def owner_of(bounds: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The shard of each agent index."""
    return np.searchsorted(bounds, idx, side="right") - 1


@dataclass
class ShardPlan:
    """What shard ``s`` exchanges: ``send[d]`` the own agents (global indices) whose values shard ``d`` needs,
    ``recv[d]`` the agents of shard ``d`` whose values it receives (the order of its local halo)."""

    index: int
    lo: int
    hi: int
    send: dict[int, np.ndarray]
    recv: dict[int, np.ndarray]

    @property
    def halo(self) -> np.ndarray:
        return (np.concatenate([self.recv[d] for d in sorted(self.recv)]) if self.recv
                else np.zeros(0, dtype=np.int64))


def exchange_plan(W: sp.csr_matrix, bounds: np.ndarray) -> tuple[list[ShardPlan], dict[str, int]]:
    """Per shard, the values to send and receive each consensus round; and the cut's size.

    Facts: ``cut_edges`` (undirected graph edges between two shards), ``boundary_values`` (values sent per round,
    over all shards: an agent's value goes once to each shard that needs it).
    """
    W = sp.csr_matrix(W)
    k = len(bounds) - 1
    rows = np.repeat(np.arange(W.shape[0], dtype=np.int64), np.diff(W.indptr))
    cols = W.indices.astype(np.int64)
    ro, co = owner_of(bounds, rows), owner_of(bounds, cols)
    cut = ro != co
    cut_edges = int(np.sum(cut & (rows < cols)))
    plans = [ShardPlan(s, int(bounds[s]), int(bounds[s + 1]), {}, {}) for s in range(k)]
    if cut.any():
        pair = ro[cut] * np.int64(k) + co[cut]  # receiver shard, sender shard
        key = pair * np.int64(W.shape[0]) + cols[cut]
        uniq = np.unique(key)
        recv_shard, send_shard, agent = uniq // W.shape[0] // k, uniq // W.shape[0] % k, uniq % W.shape[0]
        for r, s in set(zip(recv_shard.tolist(), send_shard.tolist())):
            sel = agent[(recv_shard == r) & (send_shard == s)]  # sorted (np.unique)
            plans[r].recv[s] = sel
            plans[s].send[r] = sel
    facts = {"cut_edges": cut_edges, "boundary_values": int(sum(v.size for p in plans for v in p.send.values())),
             "edges": int(np.sum(rows < cols))}
    return plans, facts


def local_matrix(W: sp.csr_matrix, plan: ShardPlan) -> sp.csr_matrix:
    """Rows ``lo:hi`` of ``W`` with the columns renumbered to the local vector ``[own block, halo]``.

    Data and row pointers are the row slice's own, so every row sums the same products in the same order as the
    global product ``W @ x``. The matrix is square (``n_local`` rows, the halo's rows empty) so the communication
    models can run on it.
    """
    W = sp.csr_matrix(W)
    lo, hi = plan.lo, plan.hi
    own = hi - lo
    halo = plan.halo
    block = W[lo:hi]
    cols = block.indices.astype(np.int64)
    local = np.empty_like(cols)
    inside = (cols >= lo) & (cols < hi)
    local[inside] = cols[inside] - lo
    order = np.argsort(halo)
    pos = np.searchsorted(halo[order], cols[~inside])
    local[~inside] = own + order[pos]
    n_local = own + halo.size
    indptr = np.concatenate([block.indptr, np.full(halo.size, block.indptr[-1], dtype=block.indptr.dtype)])
    return sp.csr_matrix((block.data.copy(), local.astype(block.indices.dtype), indptr), shape=(n_local, n_local))


# --------------------------------------------------------------------------
# numpy's pairwise summation, split across shards (pure)
# --------------------------------------------------------------------------
def sum_tree(n: int, cuts: Sequence[int]) -> tuple:
    """The pairwise-summation tree of ``np.sum`` over ``n`` values, split down to the shard boundaries ``cuts``.

    numpy sums a contiguous float64 array of more than 128 values as ``sum(x[:m]) + sum(x[m:])`` with ``m = n // 2``
    rounded down to a multiple of 8, recursively; 128 values or fewer in one unrolled loop. Nodes:
    ``("leaf", a, b)`` (inside one shard: summed there), ``("raw", a, b)`` (at most 128 values across a boundary:
    summed on the driver from the raw values), ``("node", left, right)``.
    """
    inner = [int(c) for c in cuts if 0 < c < n]

    def build(a: int, b: int) -> tuple:
        if not any(a < c < b for c in inner):
            return ("leaf", a, b)
        if b - a <= PAIRWISE_BLOCK:
            return ("raw", a, b)
        m = (b - a) // 2
        m -= m % 8
        return ("node", build(a, a + m), build(a + m, b))

    return build(0, int(n))


def tree_pieces(tree: tuple, lo: int, hi: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Shard ``[lo, hi)``'s part of ``tree``: the leaves it sums and the raw pieces it sends (global ranges)."""
    leaves, raws = [], []

    def walk(t):
        if t[0] == "node":
            walk(t[1]), walk(t[2])
        elif t[0] == "leaf":
            if lo <= t[1] and t[2] <= hi and t[2] > t[1]:
                leaves.append((t[1], t[2]))
        else:
            a, b = max(t[1], lo), min(t[2], hi)
            if a < b:
                raws.append((a, b))

    walk(tree)
    return leaves, raws


def shard_sums(x: np.ndarray, lo: int, leaves, raws) -> tuple[list[Any], list[np.ndarray]]:
    """The shard's side of :func:`tree_sum` for its slice ``x`` (global index ``lo`` first)."""
    return ([np.sum(x[a - lo:b - lo]) for a, b in leaves], [x[a - lo:b - lo].copy() for a, b in raws])


def tree_sum(tree: tuple, leaf_sums: Mapping[tuple[int, int], Any], raw_parts: Mapping[int, list[np.ndarray]]) -> Any:
    """``np.sum(x)`` from the shards' subtree sums (``leaf_sums[(a, b)]``) and raw pieces (``raw_parts[a]``:
    the pieces of the raw node starting at ``a``, in shard order): the same additions in the same order."""
    if tree[0] == "node":
        return tree_sum(tree[1], leaf_sums, raw_parts) + tree_sum(tree[2], leaf_sums, raw_parts)
    if tree[0] == "leaf":
        return leaf_sums[(tree[1], tree[2])] if tree[2] > tree[1] else np.float64(0.0)
    return np.sum(np.concatenate(raw_parts[tree[1]]))


# --------------------------------------------------------------------------
# the core, sliced (pure)
# --------------------------------------------------------------------------
_PER_AGENT = ("_row", "_offset", "_scale", "_model", "_capacity", "_initial_soc", "lam", "nu", "_phase", "soc",
              "degraded", "backlog", "demand", "solar", "price")


def slice_core(core: DemandResponseCore, lo: int, hi: int) -> DemandResponseCore:
    """A core for agents ``lo .. hi - 1`` of ``core``: its per-agent arrays cut, everything global kept
    (the dataset, the window, ``grid_limit`` and ``share = grid_limit / N`` of the whole population)."""
    out = copy.copy(core)
    for name in _PER_AGENT:
        value = getattr(core, name)
        if np.ndim(value) == 1 and value.shape[0] == core.n_agents:
            setattr(out, name, np.ascontiguousarray(value[lo:hi]).copy())
    lay = core.layout
    out.layout = AgentLayout(building=lay.building[lo:hi].copy(), offset=lay.offset[lo:hi].copy(),
                             scale=lay.scale[lo:hi].copy())
    out.n_agents = int(hi - lo)
    if np.ndim(core.start_hour) == 1:
        out.start_hour = np.asarray(core.start_hour)[lo:hi].copy()
    return out


# --------------------------------------------------------------------------
# cross-shard links under the time-varying graph model
# --------------------------------------------------------------------------
def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def link_up(lo_ids: np.ndarray, hi_ids: np.ndarray, n: int, hour: int, seed: int, q: float) -> np.ndarray:
    """Whether each undirected link ``(lo_ids[k], hi_ids[k])`` (global agent indices) is up in ``hour``, with
    probability ``q``: a hash of (seed, hour, link), so both shards of a cut link draw the same answer."""
    key = np.asarray(lo_ids, np.uint64) * np.uint64(n) + np.asarray(hi_ids, np.uint64)
    with np.errstate(over="ignore"):
        salt = _splitmix64(np.array([seed], np.uint64))[0] ^ (np.uint64(hour) * np.uint64(0xD6E8FEB86659FD93))
        u = (_splitmix64(key ^ salt) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
    return u < q


class ShardCommNetwork(CommNetwork):
    """:class:`algorithms.comm.CommNetwork` on a shard's local matrix: the local links are translated to global
    agent ids for :func:`link_up`, and joint connectivity is not tracked (the shard sees a part of the graph)."""

    def __init__(self, W_local: sp.csr_matrix, config: DualConfig, seed: Any, global_ids: np.ndarray, n_global: int,
                 link_seed: int) -> None:
        super().__init__(W_local, config, seed)
        self.joint = None
        self.global_ids, self.n_global, self.link_seed = global_ids, int(n_global), int(link_seed)
        a, b = global_ids[self.links.link_src], global_ids[self.links.link_dst]
        self._glo, self._ghi = np.minimum(a, b), np.maximum(a, b)

    def begin_hour(self) -> None:
        self.hour += 1
        if self.config.edge_up < 1:
            self.up_links = link_up(self._glo, self._ghi, self.n_global, self.hour, self.link_seed,
                                    self.config.edge_up)
            self.up_msgs = self.up_links[self.links.eid]
        else:
            self.up_links = self.up_msgs = None


# --------------------------------------------------------------------------
# policy inference in the single-process batches
# --------------------------------------------------------------------------
def _batched_act(policy: Policy, obs: np.ndarray, rank0: int, group_size: int, chunk: int = INFERENCE_CHUNK) -> np.ndarray:
    """``policy`` on the shard's rows of one agent type, batched as the single-process run batches the type.

    The shard's rows are the type's ranks ``rank0 .. rank0 + len(obs) - 1`` of ``group_size``; the single process
    evaluates the type in chunks of ``chunk`` rows. A chunk with at least ``SMALL_BATCH`` rows is evaluated from
    the shard's rows (padded to ``SMALL_BATCH``); a smaller chunk is rebuilt at its size, the shard's rows in their
    places and copies of its first row elsewhere. Row-independent policies give the same result either way."""
    n = obs.shape[0]
    out = np.empty((n, 2))
    start = rank0
    while start < rank0 + n:
        c = start // chunk
        c_lo, c_hi = c * chunk, min((c + 1) * chunk, group_size)
        stop = min(rank0 + n, c_hi)
        rows = obs[start - rank0:stop - rank0]
        if c_hi - c_lo < SMALL_BATCH:
            batch = np.repeat(rows[:1], c_hi - c_lo, axis=0)
            batch[start - c_lo:stop - c_lo] = rows
            out[start - rank0:stop - rank0] = np.asarray(policy(batch))[start - c_lo:stop - c_lo]
        elif rows.shape[0] < SMALL_BATCH:
            batch = np.concatenate([rows, np.repeat(rows[:1], SMALL_BATCH - rows.shape[0], axis=0)])
            out[start - rank0:stop - rank0] = np.asarray(policy(batch))[:rows.shape[0]]
        else:
            out[start - rank0:stop - rank0] = policy(rows)
        start = stop
    return out


def _chan(w: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """(sum w, weighted mean, sum w (x - mean)^2) of one shard, for the parallel-variance combination."""
    sw = float(w.sum())
    if sw == 0.0:
        return 0.0, 0.0, 0.0
    mean = float(np.dot(w, x)) / sw
    d = x - mean
    return sw, mean, float(np.dot(w, d * d))


def _combine_chan(parts: Sequence[tuple[float, float, float]]) -> float:
    """``sum_i w_i (x_i - m)^2`` with ``m = sum_i w_i x_i / sum_i w_i`` from per-shard triples (Chan et al.)."""
    sw = sum(p[0] for p in parts)
    if sw == 0.0:
        return 0.0
    mean = sum(p[0] * p[1] for p in parts) / sw
    return sum(p[2] + p[0] * (p[1] - mean) ** 2 for p in parts)


# --------------------------------------------------------------------------
# one shard
# --------------------------------------------------------------------------
class Shard:
    """One shard: the core slice, its agent types' policies and the local dual state (plain class; the Ray actor
    wraps it). ``advance`` is the only per-hour entry point (see :func:`run_sharded` for the schedule)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        try:
            import torch

            torch.set_num_threads(int(spec.get("torch_threads", 1)))
        except ImportError:  # pragma: no cover - torch is a dependency of the algorithms
            pass
        import numba

        # one shard = one core: the physics kernels are agent by agent, so the thread count changes no result
        numba.set_num_threads(max(1, min(int(spec.get("torch_threads", 1)), numba.config.NUMBA_NUM_THREADS)))
        self.spec = spec
        self.core: DemandResponseCore = spec["core"]
        self.plan: ShardPlan = spec["plan"]
        self.cfg: DualConfig = spec["dual"]
        self.lo, self.hi = self.plan.lo, self.plan.hi
        self.n = self.hi - self.lo
        self.W = spec["W_local"]
        self.pi = spec["pi"]
        self.exact = spec["exact"]
        self.record = spec["record"]  # own agents recorded: local indices [0, record)
        self.tree_leaves, self.tree_raws = spec["tree_leaves"], spec["tree_raws"]
        self.dst = sorted(self.plan.send)
        self.send_local = [self.plan.send[d] - self.lo for d in self.dst]
        self.src = sorted(self.plan.recv)

    def reset(self, start_hour: int, steps: int) -> float:
        t0 = time.perf_counter()
        core, c = self.core, self.cfg
        core.reset(start_hour=start_hour, steps=steps)
        scales = set(core.type_scales.tolist())
        policies = {s: p for s, p in (self.spec.get("policies") or {}).items() if s in scales}
        self.groups = [(idx, pol, self.spec["type_ranks"][float(s)])
                       for (idx, pol), s in zip(policies_for(core, policies), core.type_scales.tolist())]
        self.lam, self.nu = np.zeros(self.n), np.zeros(self.n)
        core.lam, core.nu = self.lam.copy(), self.nu.copy()
        self.acc_e, self.acc_r = np.zeros(self.n), np.zeros(self.n)
        self.acc_count = 0
        self.t = 0
        self.round = 0
        self.pending_hour: int | None = None
        self.pending_r2: np.ndarray | None = None
        self.awake_mask: np.ndarray | None = None
        self.comm: ShardCommNetwork | None = None
        self.acc_counts = None
        if c.faulty:
            halo = self.plan.halo
            ids = np.concatenate([np.arange(self.lo, self.hi, dtype=np.int64), halo])
            self.comm = ShardCommNetwork(self.W, c, self.spec["comm_seed"] + (self.plan.index,), ids,
                                         self.spec["n_global"], int(np.random.SeedSequence(
                                             list(self.spec["comm_seed"])).generate_state(1, np.uint64)[0]))
            if c.agent_period_max > 1 or c.update_prob < 1:
                self.acc_counts = np.zeros(self.n, dtype=np.int64)
        self.obs = core.observe()
        return time.perf_counter() - t0

    # -- pieces of Algorithm 1 ---------------------------------------------------------------
    def _act(self, obs: np.ndarray) -> np.ndarray:
        if len(self.groups) == 1:
            idx, pol, (rank0, size) = self.groups[0]
            return np.asarray(_batched_act(pol, obs, rank0, size), dtype=np.float64)
        actions = np.empty((obs.shape[0], 2))
        for idx, pol, (rank0, size) in self.groups:
            actions[idx] = _batched_act(pol, obs[idx], rank0, size)
        return actions

    def _local_vector(self, halo: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([self.lam, *halo]) if halo else self.lam

    def _round(self, halo: Sequence[np.ndarray]) -> None:
        x = self._local_vector(halo)
        if self.comm is None:
            wx = self.W @ x
            self.lam = self.lam - self.cfg.eps * (self.lam - wx[: self.n])
        else:
            awake = None if self.awake_mask is None else np.concatenate(
                [self.awake_mask, np.zeros(x.shape[0] - self.n, dtype=bool)])
            self.lam = self.comm.mix(x, self.cfg.eps, 1, awake)[: self.n]
        self.round += 1

    def _finish(self, records: list) -> None:
        """The end of an update: step on nu, multipliers into the core, the hour's record."""
        c = self.cfg
        if self.pending_r2 is not None:
            nu = dual_step_nu(self.nu, self.pending_r2, c.eta, c.nu_min, c.nu_max)
            self.nu = nu if self.awake_mask is None else np.where(self.awake_mask, nu, self.nu)
            self.pending_r2 = None
        self.core.lam, self.core.nu = self.lam.copy(), self.nu.copy()
        records.append(self._record(self.pending_hour))
        self.pending_hour = None

    def _record(self, hour: int) -> dict[str, Any]:
        lam, nu = self.lam, self.nu
        leaves, raws = self.tree_leaves, self.tree_raws
        rec: dict[str, Any] = {"hour": hour, "sums": [shard_sums(v, self.lo, leaves, raws) for v in (lam, nu)],
                               "min": float(lam.min()), "max": float(lam.max()),
                               "lam_rec": lam[: self.record].copy(), "nu_rec": nu[: self.record].copy()}
        if self.exact:
            rec["lam"] = lam.copy()
        else:
            rec["chan"] = _chan(self.pi, lam)
        return rec

    def _dual_update(self, e: np.ndarray, r: np.ndarray) -> bool:
        """Accumulate the hour's signals; on an update hour take the dual step on lambda (True: an update began)."""
        c = self.cfg
        asynchronous = self.acc_counts is not None
        if c.update_period == 1 and not asynchronous:
            mean_e, mean_r = e, r
        else:
            self.acc_e += e
            self.acc_r += r
            self.acc_count += 1
            if asynchronous:
                self.acc_counts += 1
            if self.acc_count < c.update_period:
                return False
            self.acc_count = 0
            if not asynchronous:
                mean_e, mean_r = self.acc_e / c.update_period, self.acc_r / c.update_period
                self.acc_e, self.acc_r = np.zeros(self.n), np.zeros(self.n)
        self.awake_mask = None
        share = self.core.share
        if self.comm is not None:
            self.comm.begin_hour()
            self.awake_mask = _awake(self.comm, self.n)
            if asynchronous:
                counts = np.maximum(self.acc_counts, 1)
                mean_e, mean_r = self.acc_e / counts, self.acc_r / counts
                if self.awake_mask is not None:
                    self.acc_e[self.awake_mask] = 0.0
                    self.acc_r[self.awake_mask] = 0.0
                    self.acc_counts[self.awake_mask] = 0
                if c.async_catch_up:
                    missed = counts / c.update_period
                    share, mean_e, mean_r = share * missed, mean_e * missed, mean_r * missed
        lam = dual_step_lambda(self.lam, mean_e, share, c.alpha, c.lambda_max, c.lambda_min)
        self.lam = lam if self.awake_mask is None else np.where(self.awake_mask, lam, self.lam)
        self.pending_r2 = mean_r
        return True

    def advance(self, mix: bool, step: bool, emit: bool, *halo: np.ndarray):
        """With ``mix``, one consensus round with the received ``halo`` values; then, with ``step``, one hour of
        the environment and the local dual step. Returns the hour's partial results and, with ``emit``, the values
        each neighbouring shard needs for the next round (one array per shard in ``self.dst``)."""
        t0 = time.perf_counter()
        out: dict[str, Any] = {"records": []}
        if mix:
            self._round(halo)
            if self.round == self.cfg.rounds:
                self._finish(out["records"])
        if step:
            obs = self.core.observe()
            res = self.core.step(self._act(obs))
            s = res.signals
            leaves, raws = self.tree_leaves, self.tree_raws
            out["env"] = {"hour": self.t, "sums": [shard_sums(getattr(s, f), self.lo, leaves, raws) for f in SUM_FIELDS],
                          "price_max": float(s.price.max()), "backlog_max": float(s.backlog.max())}
            if self.exact:
                out["env"]["e_grid"] = s.e_grid.copy()
            else:
                out["env"]["chan"] = _chan(self.pi, s.e_grid - self.core.share)
            self.pending_hour = self.t
            self.t += 1
            if self._dual_update(s.e_grid, s.r2) and self.cfg.rounds > 0:
                self.round = 0
            else:
                self._finish(out["records"])
        out["compute_s"] = time.perf_counter() - t0
        if not emit or not self.dst:
            return out
        # exact values: a quantised model quantises them on arrival (the same levels the sender would send)
        return (out, *[self.lam[idx] for idx in self.send_local])

    def final(self) -> dict[str, Any]:
        facts = {} if self.comm is None else {
            "sent": self.comm.sent, "delivered": self.comm.delivered, "mixed_weight": self.comm.mixed_weight,
            "mix_count": self.comm.mix_count, "awake_sum": self.comm.awake_sum, "awake_count": self.comm.awake_count,
            "messages_per_round": self.comm.links.n_messages}
        return {"lam": self.lam.copy(), "nu": self.nu.copy(), "comm": facts}


def _awake(comm: CommNetwork, n_own: int) -> np.ndarray | None:
    """Who updates this hour among the shard's own agents (the halo's entries of the local draws are unused)."""
    mask = comm.awake()
    return None if mask is None else mask[:n_own].copy()


# --------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------
@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected: the running session if there is one, else ``address`` (an existing cluster) or a local
    Ray with ``num_cpus`` CPUs (default: this machine's). A session started here is shut down on exit."""
    try:
        import ray
    except ImportError:
        raise ValueError("shards need Ray: pip install 'cmarl-env[scale]'") from None
    started = False
    if address:
        _probe(address)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at address={address!r}" if address else "a local Ray"
            raise ValueError(f"cannot start {where}: {' '.join(str(err).split())[:300]}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _probe(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` or ``ray://host:port`` address must accept a TCP connection within ``timeout`` seconds (Ray
    itself retries for minutes); ``auto`` and other forms are left to Ray."""
    import socket

    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = target.rpartition(":")
    if not sep or not host:
        return
    try:
        port_no = int(port)
    except ValueError:
        raise ValueError(f"address={address!r}: port {port!r} is not a number; give host:port, "
                         "ray://host:port or auto") from None
    try:
        socket.create_connection((host, port_no), timeout=timeout).close()
    except OSError as err:
        raise ValueError(f"cannot reach the Ray cluster at address={address!r} within {timeout:g} s ({err}); "
                         "start one with `ray start --head` or give its head node's host:port") from None


_ACTOR_CLASS = None


def _actor_class():
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray

        _ACTOR_CLASS = ray.remote(Shard)
    return _ACTOR_CLASS


# --------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------
def run_sharded(
    config: ExecutionConfig,
    shards: int,
    policies: Mapping[float, Policy] | None = None,
    *,
    data=None,
    address: str | None = None,
    diagnostics: str | None = None,
    progress: bool = False,
) -> ExecutionResult:
    """Algorithm 1 with the agents split over ``shards`` Ray actors; the same :class:`ExecutionResult` as
    :func:`algorithms.execute.run_execution` (bit-identical with every fault off), with ``facts["sharding"]``:
    the partition, the cut, and the time per hour split into the shards' compute and the rest (exchange
    through the object store, Ray's scheduling, the driver's sums).

    ``diagnostics``: ``"exact"`` (gather lambda and e_grid every hour for the consensus-error traces: bit-identical
    to the single-process run) or ``"partial"`` (per-shard moments; equal up to rounding); default exact up to
    ``EXACT_DIAGNOSTICS_MAX_N`` agents. ``address``: an existing Ray cluster (``ray.init(address=...)``);
    without it a local Ray is started unless one is running.
    """
    n = config.n_agents
    k = check_shards(shards, n)
    if diagnostics is None:
        diagnostics = "exact" if n <= EXACT_DIAGNOSTICS_MAX_N else "partial"
    if diagnostics not in ("exact", "partial"):
        raise ValueError(f"diagnostics={diagnostics!r} must be 'exact' or 'partial'")
    dual = config.dual
    if dual.graph_redraw > 0:
        raise ValueError(f"graph_redraw={dual.graph_redraw} is not supported with shards (the cut would change "
                         "every redraw); allowed: graph_redraw=0 with shards, or run without shards")
    if data is None:
        from cmarl_env.data import load_dataset

        data = load_dataset(config.dataset)
    t_setup = time.perf_counter()
    core = DemandResponseCore(config.env_config(data.n_steps), data)
    core.reset(start_hour=config.start_hour, steps=config.steps)
    # fault theory needs the global increments (sigma_eff); sharded runs report the measured error only
    controller = DualConsensusController(dual, policies, record_agents=config.record_agents, theory=False)
    controller.reset(core)  # the graph, the spectral facts, the policies checked against the whole population
    W = controller.dual.W
    bounds = partition(n, k)
    plans, cut = exchange_plan(W, bounds)
    tree = sum_tree(n, bounds[1:-1].tolist())
    type_ranks = []
    scales = core.layout.scale
    for s in range(k):
        ranks = {}
        for scale in core.type_scales.tolist():
            members = scales == scale
            ranks[float(scale)] = (int(members[: bounds[s]].sum()), int(members.sum()))
        type_ranks.append(ranks)
    record = min(config.record_agents, n)
    start = int(np.min(core.start_hour))
    comm_seed = (dual.comm_seed, int(config.seed), start)
    pi = controller.weights
    with ray_session(address) as ray:
        total_cpus = float(ray.cluster_resources().get("CPU", 1.0))
        per_actor = max(min(1.0, total_cpus / k), 0.01)
        Actor = _actor_class()
        actors = []
        for s, plan in enumerate(plans):
            leaves, raws = tree_pieces(tree, plan.lo, plan.hi)
            spec = {"core": slice_core(core, plan.lo, plan.hi), "plan": plan, "dual": dual,
                    "W_local": local_matrix(W, plan), "pi": pi[plan.lo:plan.hi].copy(),
                    "exact": diagnostics == "exact", "record": max(0, min(record, plan.hi) - plan.lo),
                    "tree_leaves": leaves, "tree_raws": raws, "policies": dict(policies or {}),
                    "type_ranks": type_ranks[s], "comm_seed": comm_seed, "n_global": n, "torch_threads": 1}
            actors.append(Actor.options(num_cpus=per_actor, scheduling_strategy="SPREAD").remote(spec))
        ray.get([a.reset.remote(config.start_hour, config.steps) for a in actors])
        setup_s = time.perf_counter() - t_setup
        driver = _Driver(controller, core, tree, plans, k, record, diagnostics == "exact", config.steps)
        try:
            wall = driver.run(ray, actors, dual, progress)
            finals = ray.get([a.final.remote() for a in actors])
        finally:
            for a in actors:
                ray.kill(a)
    lam = np.concatenate([f["lam"] for f in finals])
    nu = np.concatenate([f["nu"] for f in finals])
    controller.dual.state.lam, controller.dual.state.nu = lam, nu
    controller._t = config.steps
    rollout = Rollout(controller=controller.name, start_hour=int(config.start_hour), n_agents=n,
                      grid_limit=float(core.grid_limit), peak_demand=float(core.peak_demand), **driver.totals(),
                      wall_time_s=wall, traces=dict(controller.trace()), info=dict(controller.summary()))
    metrics = rollout.metrics() | {"agent_steps_per_s": n * config.steps / max(wall, 1e-12)}
    facts = core.describe() | controller.facts()
    if dual.faulty:
        facts["communication"] = {k_: v for k_, v in facts["communication"].items()
                                  if k_ not in ("theory",)} | _comm_facts(finals)
    hours = max(config.steps, 1)
    facts["sharding"] = cut | {
        "shards": k, "partition": "contiguous", "bounds": bounds.tolist(), "address": address or "local",
        "diagnostics": diagnostics, "setup_s": setup_s, "wall_s": wall, "per_hour_s": wall / hours,
        "shard_compute_per_hour_s": driver.compute_max / hours,
        "shard_compute_mean_per_hour_s": driver.compute_mean / hours,
        "per_hour_median_s": float(np.median(driver.hour_s)),
        "exchange_share": max(0.0, 1.0 - driver.compute_max / wall) if wall > 0 else None,
        "calls_per_hour": driver.calls / hours}
    return ExecutionResult(config, metrics, rollout.trajectories(), facts)


def _comm_facts(finals: list[dict[str, Any]]) -> dict[str, Any]:
    tot = {key: sum(f["comm"].get(key, 0) for f in finals) for key in (
        "sent", "delivered", "mixed_weight", "mix_count", "awake_sum", "awake_count", "messages_per_round")}
    awake_count = tot["awake_count"] / max(len(finals), 1)
    return {"messages_per_round": int(tot["messages_per_round"]), "messages_sent": int(tot["sent"]),
            "delivered_fraction": tot["delivered"] / tot["sent"] if tot["sent"] else None,
            "mixed_weight_fraction": tot["mixed_weight"] / tot["mix_count"] if tot["mix_count"] else None,
            "awake_fraction": (tot["awake_sum"] / len(finals)) / awake_count if awake_count else 1.0,
            "jointly_connected": None, "joint_window_hours": None,
            "joint_connectivity": "not tracked across shards"}


class _Driver:
    """The per-hour schedule and the driver's side of the sums and traces."""

    def __init__(self, controller, core, tree, plans, k, record, exact, steps):
        self.c, self.core, self.tree, self.plans, self.k = controller, core, tree, plans, k
        self.record, self.exact, self.steps = record, exact, steps
        self.acc = {f: np.empty(steps) for f in SUM_FIELDS}
        self.price = np.empty(steps)
        self.max_backlog = 0.0
        self.compute_max = self.compute_mean = 0.0
        self.calls = 0

    def _sum(self, parts: list[tuple[int, list, list]]) -> Any:
        """``parts``: per shard (index, leaf sums, raw pieces) -> numpy's sum of the whole vector."""
        leaf_sums, raw_parts = {}, {}
        for s, sums, raws in parts:
            leaves, raw_ranges = self._pieces[s]
            leaf_sums.update(zip(leaves, sums))
            for (a, _), piece in zip(raw_ranges, raws):
                raw_parts.setdefault(self._raw_start[(s, a)], []).append(piece)
        return tree_sum(self.tree, leaf_sums, raw_parts)

    def run(self, ray, actors, dual: DualConfig, progress: bool) -> float:
        self._pieces = [tree_pieces(self.tree, p.lo, p.hi) for p in self.plans]
        raw_nodes = []

        def collect(t):
            if t[0] == "node":
                collect(t[1]), collect(t[2])
            elif t[0] == "raw":
                raw_nodes.append((t[1], t[2]))

        collect(self.tree)
        self._raw_start = {}
        for s, (_, raws) in enumerate(self._pieces):
            for a, _ in raws:
                self._raw_start[(s, a)] = next(lo for lo, hi in raw_nodes if lo <= a < hi)
        L, period = dual.rounds, dual.update_period
        dst = [sorted(p.send) for p in self.plans]
        bar = None
        if progress:
            try:
                from tqdm import tqdm

                bar = tqdm(total=self.steps, unit="step", desc="roll-out (sharded)", leave=False)
            except ImportError:
                bar = None
        pending: list | None = None  # per shard, the refs of the values it sent (one per neighbour)
        t0 = time.perf_counter()

        def call(step: bool, emit: bool):
            nonlocal pending
            refs, outs = [], []
            for s, actor in enumerate(actors):
                halo = [] if pending is None else [pending[src][dst[src].index(s)] for src in sorted(self.plans[s].recv)]
                n_ret = 1 + (len(dst[s]) if emit else 0)
                res = actor.advance.options(num_returns=n_ret).remote(pending is not None, step, emit, *halo)
                if n_ret == 1:
                    refs.append(res)
                    outs.append([])
                else:
                    refs.append(res[0])
                    outs.append(list(res[1:]))
            self.calls += 1
            pending = outs if emit else None
            return refs

        self.hour_s = np.empty(self.steps)
        for t in range(self.steps):
            h0 = time.perf_counter()
            update = (t + 1) % period == 0
            stats = [call(True, update and L > 0)]
            if update:
                for _ in range(1, L):
                    stats.append(call(False, True))
            for refs in stats:
                self._absorb(ray.get(refs))
            self.hour_s[t] = time.perf_counter() - h0
            if bar is not None:
                bar.update(1)
        if pending is not None:
            self._absorb(ray.get(call(False, False)))
        wall = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        return wall

    def _absorb(self, outs: list[dict[str, Any]]) -> None:
        compute = [o["compute_s"] for o in outs]
        self.compute_max += max(compute)
        self.compute_mean += float(np.mean(compute))
        records = [[o["records"][j] for o in outs] for j in range(len(outs[0]["records"]))]
        env_hour = outs[0]["env"]["hour"] if "env" in outs[0] else math.inf
        for recs in records:  # hours finished before this hour's signals: their bound uses the sigma so far
            if recs[0]["hour"] < env_hour:
                self._trace(recs)
        if "env" in outs[0]:
            envs = [o["env"] for o in outs]
            t = envs[0]["hour"]
            for q, f in enumerate(SUM_FIELDS):
                self.acc[f][t] = self._sum([(s, *e["sums"][q]) for s, e in enumerate(envs)])
            self.price[t] = max(e["price_max"] for e in envs)
            self.max_backlog = max(self.max_backlog, max(e["backlog_max"] for e in envs))
            c = self.c
            if self.exact:
                deviation = np.concatenate([e["e_grid"] for e in envs]) - self.core.share
                from algorithms import theory

                sigma = theory.weighted_norm(deviation - c.weights @ deviation, c.weights)
            else:
                sigma = math.sqrt(max(_combine_chan([e["chan"] for e in envs]), 0.0))
            c.sigma = max(c.sigma, sigma)
            c._traces["unmet_r2"][t] = self.acc["r2"][t]
        for recs in records:
            if recs[0]["hour"] >= env_hour:
                self._trace(recs)

    def _trace(self, recs: list[dict[str, Any]]) -> None:
        c, t, n = self.c, recs[0]["hour"], self.core.n_agents
        tr, cfg = c._traces, c.dual_config
        lam_sum = self._sum([(s, *r["sums"][0]) for s, r in enumerate(recs)])
        nu_sum = self._sum([(s, *r["sums"][1]) for s, r in enumerate(recs)])
        if self.exact:
            from algorithms import theory

            lam = np.concatenate([r["lam"] for r in recs])
            tr["consensus_error"][t] = theory.weighted_norm(lam - c.weights @ lam, c.weights)
        else:
            tr["consensus_error"][t] = math.sqrt(max(_combine_chan([r["chan"] for r in recs]), 0.0))
        rho_l = c.rho_l
        tr["consensus_bound"][t] = (rho_l * cfg.alpha * c.sigma / (1.0 - rho_l)
                                    if cfg.rounds > 0 and rho_l < 1 else math.inf)
        tr["lambda_mean"][t] = lam_sum / n
        tr["lambda_min"][t] = min(r["min"] for r in recs)
        tr["lambda_max"][t] = max(r["max"] for r in recs)
        tr["nu_mean"][t] = nu_sum / n
        tr["lambda"][t] = np.concatenate([r["lam_rec"] for r in recs])
        tr["nu"][t] = np.concatenate([r["nu_rec"] for r in recs])

    def totals(self) -> dict[str, Any]:
        return {"total_grid": self.acc["e_grid"], "total_demand": self.acc["demand"],
                "total_backlog": self.acc["backlog"], "energy_cost": -self.acc["r0"], "prices": self.price,
                "max_agent_backlog": self.max_backlog}
