"""Faulty communication for Algorithm 1's consensus, vectorized (docs/model.md, "Faulty communication").

The paper assumes every agent receives every neighbour's ``lambda`` every round, on a fixed graph, in
lock-step. :class:`CommNetwork` replaces that exchange with models of real communication, all driven by the
communication fields of :class:`algorithms.dual.DualConfig` (every one off by default):

* **delay** ``delay = d`` (hours): the value a neighbour sent ``d`` hours ago arrives now (with ``L`` consensus
  rounds per hour a message sent in round ``l`` of hour ``t`` arrives in round ``l`` of hour ``t + d``);
  ``delay_random = True``: each message's delay is drawn uniformly from ``{0, ..., d}`` hours, messages may
  overtake one another, and the receiver keeps the freshest (latest sent) value that has arrived;
* **message loss** ``message_loss = p``: each message is lost independently with probability ``p``;
  ``loss_mode = "hold"`` (default): the receiver keeps using the last value it received from that neighbour;
  ``"drop"``: only the values that arrived this round are used. Either way the weights are renormalised over the
  neighbours that contribute (see below);
* **time-varying graph** ``edge_up = q``: every hour each (undirected) link is up with probability ``q``,
  independently; a message crosses only a link that is up in the hour it arrives, and an agent mixes only with
  the neighbours it is linked to in that hour (the graph of the hour). ``graph_redraw = k``: every ``k`` hours
  the whole graph is redrawn from its random family (a new seed). The controller reports whether the union of
  the hourly graphs is connected over windows (jointly connected) and the longest window it needed;
* **asynchrony** ``update_prob = r``: each hour each agent performs its dual update (dual step on ``lambda``,
  its consensus rounds, step on ``nu``) with probability ``r``, on the mean of its signals since its own last
  update; ``agent_period_max = M``: agent ``i`` updates every ``T_i`` hours, ``T_i`` uniform in ``{1..M}``, at
  a random phase. Agents that do not update keep their multipliers but still send them; ``async_catch_up``:
  an agent that wakes applies the dual steps it missed at once (its signals summed, not averaged), so
  ``lambda`` and ``nu`` keep integrating every hour's signal;
* **quantised messages** ``quantize_bits = b``: a multiplier is sent as one of ``2^b`` levels evenly spread over
  ``[lambda_min, lambda_max]`` (rounded to the nearest, error at most half a step); the sender's own value stays
  exact.

One consensus round with these models, for receiver ``i`` with consensus-matrix row ``w_ij`` (random walk
``1/d_i``, or Metropolis-Hastings with its self weight ``w_ii``): let ``S_i`` be the neighbours that contribute
this round (up link, and a value held -- ``"hold"`` -- or just arrived -- ``"drop"``), ``x_ij`` the value ``i``
holds for ``j``, ``m_i = sum_{j in N_i} w_ij`` and ``a_i = sum_{j in S_i} w_ij``; then

    (W x)_i = w_ii lambda_i + (m_i / a_i) sum_{j in S_i} w_ij x_ij,   lambda_i <- lambda_i - eps (lambda_i - (W x)_i)

(renormalised over what arrived), and ``lambda_i`` is unchanged when ``S_i`` is empty. With every fault off the
executor does not use this class at all (:class:`algorithms.dual.DualConsensus` keeps its sparse matrix product),
so the results are bit-identical to the fault-free code; the class itself, with every fault off, gives the same
bits too (the same products summed in the same order as the CSR product), which the tests check.

"Hours" here are dual updates (one per hour with the default ``update_period = 1``).

Everything is edge arrays (one entry per directed link, in the CSR order of the consensus matrix) and
``numpy.bincount``: no Python loop over agents or edges, so N = 1,000,000 agents work. Random draws come from
``numpy.random.Generator`` streams spawned from one seed (one stream per model, so switching one model on does
not change the draws of another).

Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import minimum_spanning_tree

__all__ = [
    "LOSS_MODES",
    "COMM_FIELDS",
    "quantization_step",
    "quantize",
    "CommNetwork",
    "JointConnectivity",
    "comm_settings",
    "is_faulty",
]

LOSS_MODES = ("hold", "drop")
#: the DualConfig fields of the communication models (the "no fault" value of each is its default)
COMM_FIELDS = ("delay", "delay_random", "message_loss", "loss_mode", "edge_up", "graph_redraw", "update_prob",
               "agent_period_max", "async_catch_up", "quantize_bits", "comm_seed")
MAX_RANDOM_DELAY = 254  # random delays are stored as uint8 (255 = lost)
_LOST = np.uint8(255)


def is_faulty(config: Any) -> bool:
    """Whether any communication model of ``config`` (a ``DualConfig``) is switched on."""
    return bool(config.delay > 0 or config.message_loss > 0 or config.edge_up < 1 or config.graph_redraw > 0
                or config.update_prob < 1 or config.agent_period_max > 1 or config.quantize_bits > 0)


def comm_settings(config: Any) -> dict[str, Any]:
    """The communication fields of ``config`` as a dict (for facts.json)."""
    return {name: getattr(config, name) for name in COMM_FIELDS}


def quantization_step(bits: int, lo: float, hi: float) -> float:
    """The spacing ``(hi - lo) / (2^bits - 1)`` of ``2^bits`` levels over ``[lo, hi]``."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1:
        raise ValueError(f"bits must be an integer >= 1, got {bits!r}")
    return (float(hi) - float(lo)) / float(2 ** int(bits) - 1)


def quantize(x: np.ndarray, bits: int, lo: float, hi: float) -> np.ndarray:
    """``x`` rounded to the nearest of ``2^bits`` levels evenly spaced over ``[lo, hi]`` (values outside are
    clipped first). The error on ``[lo, hi]`` is at most half a step (:func:`quantization_step`)."""
    step = quantization_step(bits, lo, hi)
    x = np.clip(np.asarray(x, dtype=np.float64), lo, hi)
    return np.clip(lo + np.rint((x - lo) / step) * step, lo, hi)


# --------------------------------------------------------------------------
# joint connectivity of a time-varying graph
# --------------------------------------------------------------------------
class JointConnectivity:
    """Tracks, hour by hour, the shortest window ending at hour ``t`` whose union graph is connected.

    ``update(t, up)`` records which undirected edges are up in hour ``t``. For a checked hour the window is
    ``B_t = t + 1 - tau_t``, with ``tau_t`` the largest hour such that the edges up at some hour in
    ``[tau_t, t]`` connect every agent: the bottleneck of a minimum spanning tree with edge weights
    ``t + 1 - (last hour the edge was up)`` (``inf`` while the union since hour 0 is not connected).
    ``B_t = 1`` means the graph of hour ``t`` itself is connected. The graph sequence is jointly connected
    over windows of ``B = max_t B_t`` hours (after the first hour the union is connected).
    ``stride``: check every ``stride`` hours (every hour up to 5,000 agents; a spanning tree per check).
    """

    def __init__(self, src: np.ndarray, dst: np.ndarray, n: int, stride: int | None = None) -> None:
        self.n = int(n)
        self.stride = int(stride) if stride else (1 if n <= 5_000 else 24 if n <= 200_000 else 168)
        self.reset_edges(src, dst)
        self.windows: list[int] = []
        self.first_connected: int | None = None
        self.checks = 0
        self.disconnected_checks = 0

    def reset_edges(self, src: np.ndarray, dst: np.ndarray) -> None:
        """A new edge set (a redrawn graph): the record of when edges were up starts again."""
        self.src, self.dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        self.last_up = np.full(self.src.shape[0], -1, dtype=np.int64)

    def update(self, t: int, up: np.ndarray | None) -> None:
        if up is None:
            self.last_up[:] = t
        else:
            self.last_up[up] = t
        if t % self.stride:
            return
        self.checks += 1
        window = self.window(t)
        if math.isinf(window):
            self.disconnected_checks += 1
            return
        if self.first_connected is None:
            self.first_connected = int(t)
        self.windows.append(int(window))

    def window(self, t: int) -> float:
        """``B_t``: shortest window ending at ``t`` with a connected union (``inf`` if the union is not)."""
        if self.n == 1:
            return 1.0
        ever = self.last_up >= 0
        if int(ever.sum()) < self.n - 1:
            return math.inf
        wts = (t + 1 - self.last_up[ever]).astype(np.float64)
        g = sp.csr_matrix((wts, (self.src[ever], self.dst[ever])), shape=(self.n, self.n))
        tree = minimum_spanning_tree(g)
        if tree.nnz < self.n - 1:
            return math.inf
        return float(tree.data.max())

    def facts(self) -> dict[str, Any]:
        w = np.asarray(self.windows, dtype=np.int64)
        return {
            "jointly_connected": bool(w.size and self.first_connected is not None),
            "joint_window_hours": int(w.max()) if w.size else None,
            "joint_window_hours_mean": float(w.mean()) if w.size else None,
            "first_connected_hour": self.first_connected,
            "hourly_graph_connected_fraction": float(np.sum(w == 1)) / self.checks if self.checks else None,
            "connectivity_checks": self.checks,
            "connectivity_check_stride_hours": self.stride,
        }


# --------------------------------------------------------------------------
# the links of one graph, as edge arrays in CSR order
# --------------------------------------------------------------------------
class _Links:
    """The consensus matrix ``W`` as arrays: every stored entry (CSR order) with receiver ``rows``, sender
    ``cols`` and weight ``w``; the off-diagonal entries (messages) by index ``off``; per message its undirected
    link id ``eid`` and directed key ``key = receiver * n + sender``; per receiver ``m`` (total neighbour weight)."""

    def __init__(self, W: sp.csr_matrix) -> None:
        W = sp.csr_matrix(W)
        n = W.shape[0]
        self.n = n
        self.rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(W.indptr))
        self.cols = W.indices.astype(np.int64)
        self.w = W.data.astype(np.float64)
        self.diag = self.rows == self.cols
        self.off = np.flatnonzero(~self.diag)
        self.off_rows = self.rows[self.off]
        self.off_cols = self.cols[self.off]
        self.off_w = self.w[self.off]
        self.key = self.off_rows * np.int64(n) + self.off_cols
        lo = np.minimum(self.off_rows, self.off_cols)
        hi = np.maximum(self.off_rows, self.off_cols)
        ukey = lo * np.int64(n) + hi
        self.links = np.unique(ukey)
        self.eid = np.searchsorted(self.links, ukey)
        self.link_src, self.link_dst = self.links // n, self.links % n
        self.m = np.bincount(self.off_rows, weights=self.off_w, minlength=n)
        self.has_nb = self.m > 0
        self.n_receivers = int(self.has_nb.sum())
        self.has_diag = bool(self.diag.any())
        self.n_messages = int(self.off.shape[0])

    @property
    def n_links(self) -> int:
        return int(self.links.shape[0])


class CommNetwork:
    """The exchange of multipliers under the communication models of ``config`` (a ``DualConfig``).

    Parameters: ``W`` the nominal consensus matrix (csr; random walk or Metropolis-Hastings), ``config`` the
    ``DualConfig``, ``seed`` anything ``numpy.random.SeedSequence`` accepts (the executor passes
    ``(comm_seed, scenario seed, start hour)``), ``redraw(epoch) -> W`` a function that draws the consensus
    matrix of a fresh graph of the family (required for ``graph_redraw > 0``).

    Per dual update ("hour"): :meth:`begin_hour` (redraw, links up), :meth:`awake` (who updates), then
    :meth:`mix` runs the consensus rounds.
    """

    def __init__(self, W: sp.csr_matrix, config: Any, seed: Any = 0,
                 redraw: Callable[[int], sp.csr_matrix] | None = None) -> None:
        self.config = config
        self.links = _Links(W)
        self.n = self.links.n
        if config.graph_redraw > 0 and redraw is None:
            raise ValueError("graph_redraw > 0 needs a random graph family to redraw from")
        self.redraw = redraw
        streams = np.random.SeedSequence(seed if isinstance(seed, int) else list(seed)).spawn(6)
        self.rng_async, self.rng_links, self.rng_loss, self.rng_delay, self.rng_period, _ = (
            np.random.default_rng(s) for s in streams)
        self.rounds_per_hour = max(int(config.rounds), 1)
        self.delay_rounds = int(config.delay) * self.rounds_per_hour
        self.hist_len = self.delay_rounds + 1 if config.delay > 0 else 0
        self.lo, self.hi = config.lambda_min, config.lambda_max
        self.step_q = quantization_step(config.quantize_bits, self.lo, self.hi) if config.quantize_bits else 0.0
        # periods of the periodic asynchrony
        if config.agent_period_max > 1:
            self.period = self.rng_period.integers(1, config.agent_period_max + 1, size=self.n)
            self.phase = (self.rng_period.random(self.n) * self.period).astype(np.int64)
        else:
            self.period = None
        self._init_buffers()
        self.up_links: np.ndarray | None = None
        self.up_msgs: np.ndarray | None = None
        self.joint = (JointConnectivity(self.links.link_src, self.links.link_dst, self.n)
                      if (config.edge_up < 1 or config.graph_redraw > 0) else None)
        self.hour = -1
        self.round = 0
        self.sent = 0
        self.delivered = 0
        self.mixed_weight = 0.0
        self.mix_count = 0
        self.awake_sum = 0.0
        self.awake_count = 0
        self.redraws = 0

    # -- state -----------------------------------------------------------------
    def _init_buffers(self) -> None:
        m = self.links.n_messages
        self.buf = np.zeros(m)                 # value held for each neighbour (receiver side)
        self.has = np.zeros(m, dtype=bool)     # a value has arrived at least once
        self.sent_at = np.full(m, -1, dtype=np.int64)  # send round of the value held
        if self.hist_len:
            self.hist = np.empty((self.hist_len, self.n))  # values sent in the last delay_rounds + 1 rounds
        if self.config.delay > 0 and self.config.delay_random:
            self.delays = np.full((self.hist_len, m), _LOST, dtype=np.uint8)

    def _remap(self, new: _Links) -> None:
        """After a redraw: messages on links that persist keep their state; new links start empty."""
        old = self.links
        order = np.argsort(old.key)
        pos = np.searchsorted(old.key[order], new.key)
        pos = np.minimum(pos, max(old.key.shape[0] - 1, 0))
        same = old.key.shape[0] > 0
        hit = (old.key[order][pos] == new.key) if same else np.zeros(new.key.shape[0], dtype=bool)
        src = order[pos[hit]]
        m = new.n_messages
        buf, has, sent_at = np.zeros(m), np.zeros(m, dtype=bool), np.full(m, -1, dtype=np.int64)
        buf[hit], has[hit], sent_at[hit] = self.buf[src], self.has[src], self.sent_at[src]
        self.buf, self.has, self.sent_at = buf, has, sent_at
        if self.config.delay > 0 and self.config.delay_random:
            delays = np.full((self.hist_len, m), _LOST, dtype=np.uint8)
            delays[:, hit] = self.delays[:, src]
            self.delays = delays
        self.links = new

    # -- per hour ----------------------------------------------------------------
    def begin_hour(self) -> None:
        """Start the next hour: redraw the graph when due, draw which links are up, track joint connectivity."""
        c = self.config
        self.hour += 1
        t = self.hour
        if c.graph_redraw > 0 and t > 0 and t % c.graph_redraw == 0:
            self._remap(_Links(self.redraw(t // c.graph_redraw)))
            self.redraws += 1
            if self.joint is not None:
                self.joint.reset_edges(self.links.link_src, self.links.link_dst)
        if c.edge_up < 1:
            self.up_links = self.rng_links.random(self.links.n_links, dtype=np.float32) < np.float32(c.edge_up)
            self.up_msgs = self.up_links[self.links.eid]
        else:
            self.up_links = self.up_msgs = None
        if self.joint is not None:
            self.joint.update(t, self.up_links)

    def awake(self) -> np.ndarray | None:
        """Which agents perform their dual update this hour (``None``: all)."""
        c = self.config
        mask = None
        if c.update_prob < 1:
            mask = self.rng_async.random(self.n) < c.update_prob
        if self.period is not None:
            periodic = (self.hour + self.phase) % self.period == 0
            mask = periodic if mask is None else (mask & periodic)
        if mask is not None:
            self.awake_sum += float(mask.mean())
            self.awake_count += 1
        return mask

    # -- consensus rounds ----------------------------------------------------------
    def sent_values(self, lam: np.ndarray) -> np.ndarray:
        """What the agents send: ``lam``, or its quantised levels."""
        if self.config.quantize_bits:
            return quantize(lam, self.config.quantize_bits, self.lo, self.hi)
        return lam

    def _kept(self, m: int) -> np.ndarray:
        """Which of ``m`` messages survive the loss (float32 draws: half the time of float64 at 10^6 agents)."""
        return self.rng_loss.random(m, dtype=np.float32) >= np.float32(self.config.message_loss)

    def _deliver(self, values: np.ndarray) -> np.ndarray:
        """One round of messages: update the receivers' buffers; returns which messages arrived this round."""
        c, L = self.config, self.links
        s = self.round
        m = L.n_messages
        if self.hist_len:
            self.hist[s % self.hist_len] = values
        if c.delay == 0:
            arrived = np.ones(m, dtype=bool) if c.message_loss == 0 else self._kept(m)
            if self.up_msgs is not None:
                arrived &= self.up_msgs
            np.copyto(self.buf, values[L.off_cols], where=arrived)
            np.copyto(self.sent_at, s, where=arrived)
        elif not c.delay_random:
            sent = s - self.delay_rounds
            if sent < 0:
                arrived = np.zeros(m, dtype=bool)
            else:
                arrived = np.ones(m, dtype=bool) if c.message_loss == 0 else self._kept(m)
                if self.up_msgs is not None:
                    arrived &= self.up_msgs
                np.copyto(self.buf, self.hist[sent % self.hist_len][L.off_cols], where=arrived)
                np.copyto(self.sent_at, sent, where=arrived)
        else:
            # delays of the messages sent now (in hours; 255 = lost), then every message due this round
            d = self.rng_delay.integers(0, c.delay + 1, size=m, dtype=np.uint8)
            if c.message_loss > 0:
                d[~self._kept(m)] = _LOST
            self.delays[s % self.hist_len] = d
            arrived = np.zeros(m, dtype=bool)
            for hours in range(int(c.delay), -1, -1):  # oldest first: the freshest arrival is written last
                sent = s - hours * self.rounds_per_hour
                if sent < 0:
                    continue
                due = self.delays[sent % self.hist_len] == hours
                if self.up_msgs is not None:
                    due &= self.up_msgs
                due &= sent > self.sent_at  # an older value never replaces a fresher one
                if due.any():
                    self.buf[due] = self.hist[sent % self.hist_len][L.off_cols[due]]
                    self.sent_at[due] = sent
                    arrived |= due
        self.has |= arrived
        self.sent += m if self.up_msgs is None else int(self.up_msgs.sum())
        self.delivered += int(arrived.sum())
        return arrived

    def mix(self, lam: np.ndarray, eps: float, rounds: int, awake: np.ndarray | None = None) -> np.ndarray:
        """``rounds`` consensus rounds of the awake agents (new array; ``lam`` is not modified)."""
        lam = np.array(lam, dtype=np.float64)
        L = self.links
        for _ in range(int(rounds)):
            arrived = self._deliver(self.sent_values(lam))
            contrib = arrived if self.config.loss_mode == "drop" else self.has
            if self.up_msgs is not None:
                contrib = contrib & self.up_msgs
            w_off = L.off_w * contrib
            a = np.bincount(L.off_rows, weights=w_off, minlength=self.n)
            some = a > 0
            factor = np.divide(L.m, a, out=np.zeros(self.n), where=some)
            if L.has_diag:
                # self weights (Metropolis) sit inside each row: sum in the CSR order, like the matrix product
                w_eff = L.w.copy()
                w_eff[L.off] = w_off * factor[L.off_rows]
                vals = np.empty(L.w.shape[0])
                vals[L.off] = self.buf
                vals[L.diag] = lam[L.rows[L.diag]]
                wx = np.bincount(L.rows, weights=w_eff * vals, minlength=self.n)
            else:  # random walk: every stored entry is a message
                wx = np.bincount(L.off_rows, weights=(w_off * factor[L.off_rows]) * self.buf, minlength=self.n)
            new = lam - eps * (lam - wx)
            update = some if awake is None else (some & awake)
            lam = np.where(update, new, lam)
            self.mixed_weight += float(np.sum(a[L.has_nb] / L.m[L.has_nb]))
            self.mix_count += L.n_receivers
            self.round += 1
        return lam

    # -- facts -----------------------------------------------------------------
    def facts(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "messages_per_round": self.links.n_messages,
            "messages_sent": int(self.sent),
            "delivered_fraction": self.delivered / self.sent if self.sent else None,
            "mixed_weight_fraction": self.mixed_weight / self.mix_count if self.mix_count else None,
            "quantization_step": self.step_q if c.quantize_bits else None,
            "awake_fraction": self.awake_sum / self.awake_count if self.awake_count else 1.0,
            "graph_redraws": self.redraws,
        }
        if self.joint is not None:
            out |= self.joint.facts()
        else:
            out |= {"jointly_connected": True, "joint_window_hours": 1, "hourly_graph_connected_fraction": 1.0}
        return out
