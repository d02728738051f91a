"""Distributed multiplier updates at execution time (paper Algorithm 1, eq. 10/14).

Every update, for all agents at once (float64 arrays of shape ``(N,)``, no
per-agent python loops):

1. dual step on the global-constraint multiplier
   ``lam <- clip(lam + alpha (e_grid - c/N), lambda_min, lambda_max)``
   (:func:`dual_step_lambda`),
2. ``L`` consensus rounds ``lam <- lam - eps (lam - W lam)`` (:func:`consensus`)
   with ``W`` selected by ``DualConfig.weights``:

   * ``"random_walk"`` (default, the paper's): ``W = D^-1 A``, i.e.
     ``lam_i <- lam_i - eps (lam_i - mean_{j in N(i)} lam_j)``; consensus value
     the degree-weighted average ``sum_i pi_i lam_i`` (``pi_i = d_i / sum d``), so
     the enforced constraint is ``sum_i pi_i e_grid_i = c/N``;
   * ``"metropolis"``: Metropolis-Hastings ``W_mh`` (``w_ij = 1/(1 + max(d_i, d_j))``,
     doubly stochastic); consensus value the plain average, so the enforced
     constraint is the true one ``mean_i e_grid_i = c/N`` on any connected graph,
3. local step on the local-constraint multiplier
   ``nu <- clip(nu - eta r2, nu_min, nu_max)`` (:func:`dual_step_nu`).

"No consensus" is the same with ``L = 0``.  The communication models (delays, message loss, time-varying
graphs, asynchrony, quantised messages; :mod:`algorithms.comm`) are ``DualConfig`` fields, all off by default;
with all of them off :meth:`DualConsensus.step` runs the code above unchanged.  :class:`DualConsensus` holds the
graph and the state and applies the three steps every ``update_period``
environment steps, using the mean of the signals since the previous update.

Defaults (:class:`DualConfig`): ``alpha = 0.01``, ``eps = 0.5``,
``eta = 0.07``, ``L = 1``, ``update_period = 1``, ``lam in [0, 15]``,
``nu in [-20, 20]``, ``weights = "random_walk"`` (docs/model.md).  The two dual steps pull
against each other. ``lam`` is a running sum of the grid excess, so over ``T`` hours the
average excess is at most ``lam_T / (alpha T)``: a small ``alpha`` leaves the grid over its
limit.  While unclipped ``nu_i = -eta B_i``, and serving pays once ``|nu|`` passes the price
plus ``lam``, so the standing backlog follows ``(price + lam) / eta``: when ``lam`` climbs at
the end of a window the backlog climbs with it and breaks the backlog-slope rule, while a
large ``eta`` makes demand too dear to postpone (with 0.5 a backlog of about 1 kWh already
outweighed the peak price).  ``alpha`` and ``eta`` are rank 1 of ``cmarl bench dual_steps``
(alpha in {0.01, 0.02, 0.03, 0.05, 0.1} x eta in {0.07, 0.1, 0.13, 0.2}, the shipped
policies, the leaderboard's ranking rule over the training hours 0-3000: 7 agents at
c = 0.27, 0.20, 0.195, 0.19 from 6 start hours, and N = 100 and 1,000 at calibrated levels),
as the price rule is tuned on the same hours; ``cmarl bench dual_steps_held_out`` judges every
pair on hours 3000-6000 and 5000-8000 (README, "Dual step sizes").  The previous defaults,
alpha = 0.05 and eta = 0.13, rank 13th of the 20 pairs.  ``eps`` is the paper's starting
point.  EV charging fixes its own (``EVChargingDomain.dual_defaults``).

Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from cmarl_env import graphs as _graphs
from cmarl_env.config import ConfigBase

from .theory import consensus_error as _consensus_error
from .theory import stationary_weights

__all__ = [
    "LAMBDA_RANGE",
    "NU_RANGE",
    "dual_step_lambda",
    "consensus",
    "dual_step_nu",
    "DualConfig",
    "DualState",
    "DualConsensus",
]

LAMBDA_RANGE = (0.0, 15.0)
NU_RANGE = (-20.0, 20.0)


def _f64(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-agent values, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------
# pure vectorized steps
# --------------------------------------------------------------------------
def dual_step_lambda(
    lam: np.ndarray,
    e_grid: np.ndarray,
    share: float | np.ndarray,
    alpha: float,
    lam_max: float = LAMBDA_RANGE[1],
    lam_min: float = LAMBDA_RANGE[0],
) -> np.ndarray:
    """``clip(lam + alpha (e_grid - share), lam_min, lam_max)`` (new array).

    ``share`` is the agent's part ``c / N`` of the global budget: a scalar or
    an ``(N,)`` array.
    """
    lam = _f64(lam, "lam")
    e_grid = np.asarray(e_grid, dtype=np.float64)
    if e_grid.shape != lam.shape:
        raise ValueError(f"e_grid must have shape {lam.shape}, got {e_grid.shape}")
    return np.clip(lam + alpha * (e_grid - share), lam_min, lam_max)


def consensus(lam: np.ndarray, W_rw: sp.spmatrix, eps: float, rounds: int) -> np.ndarray:
    """``rounds`` rounds of ``lam <- lam - eps (lam - W_rw @ lam)``.

    ``W_rw`` is the consensus matrix: the random-walk matrix ``D^-1 A``
    (:func:`cmarl_env.graphs.random_walk_matrix`, the paper's) or the
    Metropolis-Hastings matrix (:func:`cmarl_env.graphs.metropolis_matrix`);
    the formula is the same (:func:`cmarl_env.graphs.consensus_matrix` selects
    one by name).  Always returns a new array
    (for ``rounds = 0`` a float64 copy of ``lam``); the input is never modified.
    """
    lam = np.array(lam, dtype=np.float64)  # copy
    if lam.ndim != 1:
        raise ValueError(f"lam must be a 1-D array, got shape {lam.shape}")
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
    if rounds and W_rw.shape != (lam.shape[0], lam.shape[0]):
        raise ValueError(f"W_rw has shape {W_rw.shape}, expected ({lam.shape[0]}, {lam.shape[0]})")
    for _ in range(int(rounds)):
        lam = lam - eps * (lam - W_rw @ lam)
    return lam


def dual_step_nu(
    nu: np.ndarray,
    r2: np.ndarray,
    eta: float,
    nu_min: float = NU_RANGE[0],
    nu_max: float = NU_RANGE[1],
) -> np.ndarray:
    """``clip(nu - eta r2, nu_min, nu_max)`` (new array); ``r2 = d - e_grid - e_bat``."""
    nu = _f64(nu, "nu")
    r2 = np.asarray(r2, dtype=np.float64)
    if r2.shape != nu.shape:
        raise ValueError(f"r2 must have shape {nu.shape}, got {r2.shape}")
    return np.clip(nu - eta * r2, nu_min, nu_max)


# --------------------------------------------------------------------------
# config and state
# --------------------------------------------------------------------------
def _is_int(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, np.integer))


@dataclass(frozen=True)
class DualConfig(ConfigBase):
    """Step sizes and ranges of Algorithm 1.

    ``alpha`` (> 0): dual step on ``lam``; ``eps`` (0 < eps <= 1): consensus step;
    ``eta`` (> 0): step on ``nu``; ``rounds`` (int >= 0): consensus rounds ``L``
    per update (0 = no consensus); ``update_period`` (int >= 1): one dual update
    every that many environment steps, on the mean signals since the last one;
    ``lambda_min``/``lambda_max`` (0 <= lambda_min < lambda_max) and ``nu_min``/``nu_max``
    (nu_min < nu_max): projection ranges; ``weights`` (one of
    :data:`cmarl_env.graphs.CONSENSUS_WEIGHTS`): the consensus matrix --
    ``"random_walk"`` (default, the paper's ``D^-1 A``; enforces the
    degree-weighted constraint) or ``"metropolis"`` (Metropolis-Hastings; enforces
    the plain-average, i.e. true, constraint).

    Communication models (:mod:`algorithms.comm`, docs/model.md "Faulty communication"; every one off by
    default, and with all of them off the executor is bit-identical to the fault-free code):
    ``delay`` (int >= 0, hours a message takes; with ``delay_random`` each message's delay is uniform in
    ``{0..delay}``); ``message_loss`` (p in [0, 1]: each message lost with probability p; ``loss_mode``
    ``"hold"`` keeps the last value received, ``"drop"`` uses only this round's arrivals; weights renormalised
    over the contributing neighbours); ``edge_up`` (q in (0, 1]: each link up with probability q each hour);
    ``graph_redraw`` (k >= 0: the graph is redrawn from its random family every k hours; 0 = never);
    ``update_prob`` (r in (0, 1]: each agent performs its dual update with probability r each hour);
    ``agent_period_max`` (M >= 1: agent i updates every T_i ~ U{1..M} hours at a random phase); an agent that
    wakes steps on the mean of its signals since its last update (as ``update_period`` does), or, with
    ``async_catch_up``, applies the dual steps it missed at once (its signals summed);
    ``quantize_bits`` (b: 0 = exact, else 1..52 bits over ``[lambda_min, lambda_max]``); ``comm_seed``
    (int >= 0: seed of the models' random draws, combined with the scenario seed and the start hour).
    """

    alpha: float = 0.01
    eps: float = 0.5
    eta: float = 0.07
    rounds: int = 1
    update_period: int = 1
    lambda_min: float = LAMBDA_RANGE[0]
    lambda_max: float = LAMBDA_RANGE[1]
    nu_min: float = NU_RANGE[0]
    nu_max: float = NU_RANGE[1]
    weights: str = "random_walk"
    delay: int = 0
    delay_random: bool = False
    message_loss: float = 0.0
    loss_mode: str = "hold"
    edge_up: float = 1.0
    graph_redraw: int = 0
    update_prob: float = 1.0
    agent_period_max: int = 1
    async_catch_up: bool = False
    quantize_bits: int = 0
    comm_seed: int = 0

    def __post_init__(self) -> None:
        def num(name: str) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
                raise ValueError(f"DualConfig.{name} must be a finite number, got {v!r}")
            return float(v)

        if not num("alpha") > 0:
            raise ValueError(f"DualConfig.alpha must be > 0 (allowed range: (0, inf)), got {self.alpha!r}")
        if not 0 < num("eps") <= 1:
            raise ValueError(f"DualConfig.eps must satisfy 0 < eps <= 1 (allowed range: (0, 1]), got {self.eps!r}")
        if not num("eta") > 0:
            raise ValueError(f"DualConfig.eta must be > 0 (allowed range: (0, inf)), got {self.eta!r}")
        if not _is_int(self.rounds) or self.rounds < 0:
            raise ValueError(f"DualConfig.rounds must be an integer >= 0 (0 = no consensus), got {self.rounds!r}")
        if not _is_int(self.update_period) or self.update_period < 1:
            raise ValueError(f"DualConfig.update_period must be an integer >= 1, got {self.update_period!r}")
        if not num("lambda_min") >= 0:
            raise ValueError(f"DualConfig.lambda_min must be >= 0 (a multiplier of an inequality), got {self.lambda_min!r}")
        if not num("lambda_max") > self.lambda_min:
            raise ValueError(
                f"DualConfig.lambda_max must be > lambda_min={self.lambda_min} (allowed range: (lambda_min, inf)), "
                f"got {self.lambda_max!r}"
            )
        num("nu_min")
        if not num("nu_max") > self.nu_min:
            raise ValueError(
                f"DualConfig.nu_max must be > nu_min={self.nu_min} (allowed range: (nu_min, inf)), got {self.nu_max!r}"
            )
        if not (isinstance(self.weights, str) and self.weights in _graphs.CONSENSUS_WEIGHTS):
            allowed = ", ".join(repr(w) for w in _graphs.CONSENSUS_WEIGHTS)
            raise ValueError(f"DualConfig.weights must be one of {allowed}, got {self.weights!r}")
        object.__setattr__(self, "weights", str(self.weights))
        self._check_comm(num)
        # normalise numpy scalars to python types (clean asdict / json)
        for name in ("alpha", "eps", "eta", "lambda_min", "lambda_max", "nu_min", "nu_max"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "rounds", int(self.rounds))
        object.__setattr__(self, "update_period", int(self.update_period))

    def _check_comm(self, num) -> None:
        from .comm import LOSS_MODES, MAX_RANDOM_DELAY

        def integer(name: str, lo: int, hi: int, what: str) -> None:
            v = getattr(self, name)
            if not _is_int(v) or not lo <= v <= hi:
                raise ValueError(f"DualConfig.{name} must be an integer in [{lo}, {hi}] ({what}), got {v!r}")
            object.__setattr__(self, name, int(v))

        integer("delay", 0, 10_000, "hours a message takes; 0 = none")
        for flag in ("delay_random", "async_catch_up"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise ValueError(f"DualConfig.{flag} must be True or False, got {getattr(self, flag)!r}")
            object.__setattr__(self, flag, bool(getattr(self, flag)))
        if self.delay_random and self.delay > MAX_RANDOM_DELAY:
            raise ValueError(f"DualConfig.delay must be <= {MAX_RANDOM_DELAY} with delay_random, got {self.delay}")
        if not 0 <= num("message_loss") <= 1:
            raise ValueError(f"DualConfig.message_loss must be a probability in [0, 1], got {self.message_loss!r}")
        if not (isinstance(self.loss_mode, str) and self.loss_mode in LOSS_MODES):
            raise ValueError(f"DualConfig.loss_mode must be one of {LOSS_MODES}, got {self.loss_mode!r}")
        if not 0 < num("edge_up") <= 1:
            raise ValueError(f"DualConfig.edge_up must be a probability in (0, 1] (1 = fixed graph), got {self.edge_up!r}")
        integer("graph_redraw", 0, 10**9, "hours between redraws of the graph; 0 = never")
        if not 0 < num("update_prob") <= 1:
            raise ValueError(f"DualConfig.update_prob must be a probability in (0, 1] (1 = synchronous), "
                             f"got {self.update_prob!r}")
        integer("agent_period_max", 1, 10**6, "largest per-agent update period in hours; 1 = synchronous")
        integer("quantize_bits", 0, 52, "bits per message; 0 = exact")
        integer("comm_seed", 0, 2**63 - 1, "seed of the communication models")
        for name in ("message_loss", "edge_up", "update_prob"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def faulty(self) -> bool:
        """Whether any communication model is on (else Algorithm 1 runs exactly as in the paper)."""
        from .comm import is_faulty

        return is_faulty(self)


@dataclass
class DualState:
    """Multipliers and the signal accumulators between two dual updates.

    ``t``: environment steps seen; ``n_updates``: dual updates applied;
    ``acc_e_grid``/``acc_r2``: sums of the signals since the last update over
    ``acc_count`` steps.
    """

    lam: np.ndarray
    nu: np.ndarray
    acc_e_grid: np.ndarray = field(repr=False)
    acc_r2: np.ndarray = field(repr=False)
    acc_count: int = 0
    t: int = 0
    n_updates: int = 0
    acc_counts: np.ndarray | None = field(default=None, repr=False)  # per agent, under asynchrony

    @classmethod
    def initial(cls, n: int, lam0: Any = 0.0, nu0: Any = 0.0) -> "DualState":
        lam = np.broadcast_to(np.asarray(lam0, dtype=np.float64), (n,)).copy()
        nu = np.broadcast_to(np.asarray(nu0, dtype=np.float64), (n,)).copy()
        return cls(lam, nu, np.zeros(n), np.zeros(n))

    def copy(self) -> "DualState":
        return DualState(self.lam.copy(), self.nu.copy(), self.acc_e_grid.copy(), self.acc_r2.copy(),
                         self.acc_count, self.t, self.n_updates,
                         None if self.acc_counts is None else self.acc_counts.copy())


# --------------------------------------------------------------------------
# the stateful executor
# --------------------------------------------------------------------------
class DualConsensus:
    """Algorithm 1 for N agents on a communication graph.

    Parameters
    ----------
    graph:
        anything :mod:`cmarl_env.graphs` accepts (``networkx.Graph``,
        ``(src, dst)`` edges with ``n``, sparse adjacency -- only the non-zero
        pattern matters, so passing ``W_rw`` itself also works).  Must be
        connected.  May be ``None`` when ``config.rounds == 0`` (no
        communication; ``n`` is then required and the consensus error uses
        uniform weights).  The consensus matrix is built from the graph's
        pattern with ``config.weights``.
    config:
        :class:`DualConfig` (defaults if ``None``).
    share (keyword):
        the per-agent budget ``c / N`` (scalar or ``(N,)`` array).
    n / n_agents, lam0, nu0:
        number of agents (needed for edge arrays; ``n_agents`` is an alias),
        initial multipliers (``None`` = 0, as in Algorithm 1).

    Attributes: ``n`` (= ``n_agents``), ``weighting`` (``config.weights``:
    ``"random_walk"`` or ``"metropolis"``), ``W`` (the csr consensus matrix in use;
    ``W_rw`` and ``walk`` are aliases kept from when it was always ``D^-1 A``),
    ``degrees``, ``weights`` (the stationary weights ``pi`` of ``W``: degree
    weights ``d_i / sum d`` for the random walk, uniform ``1/n`` for Metropolis --
    the consensus value is ``pi . lam`` and the enforced constraint
    ``pi . e_grid = c/N``), ``share``, ``config``, ``state`` (:class:`DualState`);
    ``lam`` / ``nu`` return copies.
    """

    def __init__(
        self,
        graph: Any,
        config: DualConfig | None = None,
        *,
        share: float | np.ndarray,
        n: int | None = None,
        n_agents: int | None = None,
        lam0: Any = None,
        nu0: Any = None,
        comm_seed: Any = None,
        redraw: Any = None,
    ) -> None:
        if n_agents is not None:
            if n is not None and n != n_agents:
                raise ValueError(f"n={n} and n_agents={n_agents} disagree")
            n = n_agents
        self.config = DualConfig() if config is None else config
        if not isinstance(self.config, DualConfig):
            raise ValueError(f"config must be a DualConfig, got {type(self.config).__name__}")
        if graph is None:
            if self.config.rounds != 0:
                raise ValueError("a communication graph is required when config.rounds > 0")
            if n is None:
                raise ValueError("n is required when graph is None")
            self.n = _graphs._check_n(n, 1)
            self.W = sp.identity(self.n, format="csr")
            self.degrees = np.zeros(self.n, dtype=np.int64)
            self.weights = np.full(self.n, 1.0 / self.n)
        else:
            a = _graphs.adjacency(graph, n)
            self.n = a.shape[0]
            msg = _graphs._connectivity_error(a, self.n)
            if msg:
                raise ValueError(msg)
            self.W = _graphs._consensus_from_adjacency(a, self.config.weights)
            self.degrees = np.diff(a.indptr).astype(np.int64)
            self.weights = stationary_weights(self.degrees, self.config.weights)
        share_arr = np.asarray(share, dtype=np.float64)
        if share_arr.ndim not in (0, 1) or (share_arr.ndim == 1 and share_arr.shape != (self.n,)):
            raise ValueError(f"share must be a scalar or an array of shape ({self.n},), got shape {share_arr.shape}")
        if not np.all(np.isfinite(share_arr)):
            raise ValueError("share must be finite")
        self.share = float(share_arr) if share_arr.ndim == 0 else share_arr.copy()
        self._comm_seed = (self.config.comm_seed,) if comm_seed is None else comm_seed
        self._redraw = redraw
        self.reset(lam0, nu0)

    # -- state ---------------------------------------------------------------
    def reset(self, lam0: Any = None, nu0: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Restart from ``(lam0, nu0)`` (scalars or ``(N,)`` arrays inside the ranges; ``None`` = 0)."""
        c = self.config
        lam0 = 0.0 if lam0 is None else lam0
        nu0 = 0.0 if nu0 is None else nu0
        try:
            state = DualState.initial(self.n, lam0, nu0)
        except ValueError as exc:
            raise ValueError(f"lam0/nu0 must be scalars or arrays of shape ({self.n},): {exc}") from None
        if np.any(state.lam < c.lambda_min) or np.any(state.lam > c.lambda_max) or not np.all(np.isfinite(state.lam)):
            raise ValueError(f"lam0 must lie in [{c.lambda_min}, {c.lambda_max}]")
        if np.any(state.nu < c.nu_min) or np.any(state.nu > c.nu_max) or not np.all(np.isfinite(state.nu)):
            raise ValueError(f"nu0 must lie in [{c.nu_min}, {c.nu_max}]")
        self.state = state
        self.comm = None
        self.sigma_eff = 0.0   # sup ||centred increment||_w / alpha under the communication models
        self.spread_eff = 0.0  # sup (max - min of the increment) / alpha
        if self.config.faulty:
            from .comm import CommNetwork

            if self.config.agent_period_max > 1 or self.config.update_prob < 1:
                state.acc_counts = np.zeros(self.n, dtype=np.int64)
            self.comm = CommNetwork(self.W, self.config, self._comm_seed, redraw=self._redraw)
        return self.lam, self.nu

    @property
    def n_agents(self) -> int:
        return self.n

    @property
    def weighting(self) -> str:
        """``"random_walk"`` or ``"metropolis"`` (``config.weights``)."""
        return self.config.weights

    @property
    def W_rw(self) -> sp.csr_matrix:
        """The consensus matrix ``W`` (alias; ``D^-1 A`` only for ``weights="random_walk"``)."""
        return self.W

    @property
    def walk(self) -> sp.csr_matrix:
        """Alias of ``W``."""
        return self.W

    def consensus_value(self) -> float:
        """``pi . lam``: the value pure consensus would converge to (alias of :meth:`weighted_average`)."""
        return self.weighted_average()

    def constraint_excess(self, e_grid: np.ndarray, weights: str | None = None) -> float:
        """``pi . e_grid - pi . share``: the excess over the budget in the constraint that
        ``weights`` enforces (``None`` = this executor's weighting).  ``"metropolis"`` gives
        the true one, ``mean_i (e_grid_i - c/N)``; ``"random_walk"`` the degree-weighted
        one, ``sum_i d_i (e_grid_i - c/N) / sum d``.  At a fixed point of Algorithm 1
        without clipping the excess of the executor's own weighting is 0."""
        w = self.weights if weights is None else stationary_weights(
            self.degrees if self.degrees.sum() > 0 else np.ones(self.n), weights)
        e = np.asarray(e_grid, dtype=np.float64)
        if e.shape != (self.n,):
            raise ValueError(f"e_grid must have shape ({self.n},), got {e.shape}")
        return float(np.dot(w, e - self.share))

    @property
    def lam(self) -> np.ndarray:
        """Copy of the current ``lambda`` multipliers."""
        return self.state.lam.copy()

    @property
    def nu(self) -> np.ndarray:
        """Copy of the current ``nu`` multipliers."""
        return self.state.nu.copy()

    # -- Algorithm 1 -----------------------------------------------------------
    def step(self, e_grid: np.ndarray, r2: np.ndarray, share: float | np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Feed one environment step's signals; returns copies of ``(lam, nu)``.

        The signals are accumulated; every ``update_period``-th call their mean
        drives one update: dual step on ``lam``, ``rounds`` consensus rounds,
        local step on ``nu``.  In between, the multipliers are unchanged.

        ``share``: this step's per-agent budget when it changes from step to step
        (e.g. an hourly limit); ``None`` = the constructor's ``share``. The global
        signal then enters as ``e_grid - share + self.share``, its excess over this
        step's budget on the constructor's budget, so an averaged (or delayed,
        asynchronous) update steps on the mean excess over the steps it covers.
        """
        e = np.asarray(e_grid, dtype=np.float64)
        r = np.asarray(r2, dtype=np.float64)
        if e.shape != (self.n,) or r.shape != (self.n,):
            raise ValueError(f"e_grid and r2 must have shape ({self.n},), got {e.shape} and {r.shape}")
        if share is not None:
            s = np.asarray(share, dtype=np.float64)
            if s.ndim not in (0, 1) or (s.ndim == 1 and s.shape != (self.n,)) or not np.all(np.isfinite(s)):
                raise ValueError(f"share must be a finite scalar or an array of shape ({self.n},), got {share!r}")
            e = e - s + self.share
        st = self.state
        c = self.config
        if self.comm is not None:
            return self._step_comm(e, r)
        st.t += 1
        if c.update_period == 1:
            mean_e, mean_r = e, r
        else:
            st.acc_e_grid += e
            st.acc_r2 += r
            st.acc_count += 1
            if st.acc_count < c.update_period:
                return self.lam, self.nu
            mean_e = st.acc_e_grid / st.acc_count
            mean_r = st.acc_r2 / st.acc_count
            st.acc_e_grid = np.zeros(self.n)
            st.acc_r2 = np.zeros(self.n)
            st.acc_count = 0
        lam = dual_step_lambda(st.lam, mean_e, self.share, c.alpha, c.lambda_max, c.lambda_min)
        st.lam = consensus(lam, self.W, c.eps, c.rounds)
        st.nu = dual_step_nu(st.nu, mean_r, c.eta, c.nu_min, c.nu_max)
        st.n_updates += 1
        return self.lam, self.nu

    def _step_comm(self, e: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`step` under the communication models (:mod:`algorithms.comm`)."""
        st, c, comm = self.state, self.config, self.comm
        st.t += 1
        asynchronous = st.acc_counts is not None
        if c.update_period == 1 and not asynchronous:
            mean_e, mean_r = e, r
        else:
            st.acc_e_grid += e
            st.acc_r2 += r
            st.acc_count += 1
            if asynchronous:
                st.acc_counts += 1
            if st.acc_count < c.update_period:
                return self.lam, self.nu
            st.acc_count = 0
            if not asynchronous:
                mean_e = st.acc_e_grid / c.update_period
                mean_r = st.acc_r2 / c.update_period
                st.acc_e_grid = np.zeros(self.n)
                st.acc_r2 = np.zeros(self.n)
        comm.begin_hour()
        awake = comm.awake()
        if asynchronous:
            # each agent that updates uses the mean of its signals since its own last update
            counts = np.maximum(st.acc_counts, 1)
            mean_e, mean_r = st.acc_e_grid / counts, st.acc_r2 / counts
            if awake is not None:
                st.acc_e_grid[awake] = 0.0
                st.acc_r2[awake] = 0.0
                st.acc_counts[awake] = 0
        share, mean_e_step, mean_r_step = self.share, mean_e, mean_r
        if asynchronous and c.async_catch_up:
            # the dual steps missed while asleep, applied at once: signals and budget times the updates missed
            missed = counts / c.update_period
            share, mean_e_step, mean_r_step = self.share * missed, mean_e * missed, mean_r * missed
        lam = dual_step_lambda(st.lam, mean_e_step, share, c.alpha, c.lambda_max, c.lambda_min)
        if awake is not None:
            lam = np.where(awake, lam, st.lam)
        # the increment that actually entered (clip and asynchrony included), for the fault bounds
        inc = lam - st.lam
        centred = inc - float(np.dot(self.weights, inc))
        self.sigma_eff = max(self.sigma_eff, float(np.sqrt(np.dot(self.weights, centred * centred))) / c.alpha)
        self.spread_eff = max(self.spread_eff, float(inc.max() - inc.min()) / c.alpha)
        if c.rounds:
            lam = comm.mix(lam, c.eps, c.rounds, awake)
        nu = dual_step_nu(st.nu, mean_r_step, c.eta, c.nu_min, c.nu_max)
        st.lam = lam
        st.nu = nu if awake is None else np.where(awake, nu, st.nu)
        st.n_updates += 1
        return self.lam, self.nu

    def comm_facts(self) -> dict[str, Any]:
        """What the communication models did (empty when every fault is off)."""
        return {} if self.comm is None else self.comm.facts()

    # -- diagnostics ------------------------------------------------------------
    def weighted_average(self) -> float:
        """``pi . lam`` (the consensus value, Lemma B.4): the degree-weighted average
        (random walk) or the plain average (Metropolis)."""
        return float(np.dot(self.weights, self.state.lam))

    def consensus_error(self, norm: str = "2") -> float:
        """``||lam - (pi . lam) 1||``: Euclidean (``norm="2"``, default) or the
        ``pi``-weighted norm in which Theorem 5.1 holds without constant (``"w"``;
        for Metropolis that is ``||.||_2 / sqrt(n)``)."""
        return _consensus_error(self.state.lam, self.weights, norm)

    def __repr__(self) -> str:
        return (f"DualConsensus(n={self.n}, config={self.config}, t={self.state.t}, "
                f"n_updates={self.state.n_updates})")
