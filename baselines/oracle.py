"""Clairvoyant linear-programming reference: the cost optimum and the feasibility frontier.

The oracle sees a whole episode in advance (demand, solar and prices of every
agent over the horizon) and solves one linear program over the same data,
agents, demand scales, time offsets, start hour and horizon as a
:class:`cmarl_env.core.DemandResponseCore` episode.

Variables, per agent ``i`` and hour ``t`` (all in kWh per step)::

    c[i, t]  energy taken from solar into the battery   0 <= c <= min(g_t, P)
    b[i, t]  battery energy delivered to the load       0 <= b <= P
    e[i, t]  grid energy                                e >= 0
    B[i, t]  backlog (postponed demand) after hour t    0 <= B [<= backlog_cap]
    q[i, t]  stored energy after hour t                 q_min <= q <= Q

Constraints (``s = sqrt(eta)``, ``B[-1] = 0``, ``q[-1]`` = the core's initial
state of charge times the capacity)::

    d_t + B[t-1] = b[t] + e[t] + B[t]                  (demand balance, as in the env)
    q[t] = q[t-1] + s * c[t] - b[t] / s                (linear battery, round trip eta)
    q[t-1] + s * c[t] <= Q, written q[t] + b[t]/s <= Q (solar charges first, then the
                                                        battery discharges: the capacity
                                                        holds after the charge)
    B[T-1] = 0                                          (everything postponed is served by
                                                        the end of the horizon)
    (1/T) sum_t sum_i e[i, t] <= c                      (the global constraint,
                                                        c = constraint_fraction * peak)

Objectives: total cost ``sum p_t e[i, t]`` (:func:`solve_min_cost`) or average
total grid use (:func:`solve_min_grid` / :func:`min_grid_fraction`, the
smallest feasible ``c``, reported as a fraction of the aggregate peak).

A bound, not a replay. CityLearn's battery (which the environment reproduces)
has an efficiency that depends on the power (``power_efficiency_curve``, at
most the nominal 0.9 on the default dataset), a power limit that falls with
the state of charge (``capacity_power_curve``, at most 0.98 of the nominal
power), capacity fade and standby losses. The LP uses the nominal efficiency
in both directions, the full nominal power at every state of charge, and no
fade or standby loss: every schedule the environment can realise is feasible
for the LP (with the same or more stored energy), so the LP's cost and grid
use are lower bounds on what any controller of the environment achieves over
the same horizon with all postponed demand served. They are not exactly
attainable in the environment.

Terminal condition. Without ``B[T-1] = 0`` the oracle would leave demand
unserved at the end; with it, demand may wait arbitrarily long inside the
horizon (the cost optimum moves load to the cheapest hours: on the 2022
dataset the summer off-peak price, 0.21, is one cent below the winter one,
so without a cap the optimum over hours [0, 3000) carries up to ~10 MWh of
winter demand into the summer). ``backlog_cap``
adds ``B[i, t] <= backlog_cap`` for every agent and hour, so the frontier can
be studied when demand may not wait forever; the terminal condition is kept
(pass ``final_backlog_zero=False`` to :func:`build_lp` to drop it).

The constraint matrices are sparse (``scipy.sparse``, about 9 non-zeros per
agent-hour) and solved with HiGHS through ``scipy.optimize.linprog``; 7
agents over 3,000 hours (105,000 variables) solve in seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from cmarl_env.config import EnvConfig
from cmarl_env.core import DemandResponseCore

OBJECTIVES = ("cost", "grid")
VARIABLES = ("charge", "e_bat", "e_grid", "backlog", "stored")
_STATUS = {0: "optimal", 1: "iteration_limit", 2: "infeasible", 3: "unbounded", 4: "numerical_error"}


class OracleError(RuntimeError):
    """The solver did not reach an optimum where one must exist."""


@dataclass(frozen=True)
class LinearBattery:
    """Linear battery model, one value per agent (scalars broadcast).

    ``power`` is the energy limit of one step in each direction (nominal power
    times the step length); ``efficiency`` is the round-trip efficiency eta,
    applied as sqrt(eta) on the way in and on the way out.
    """

    capacity: Any
    power: Any
    efficiency: Any = 0.9
    initial_energy: Any = 0.0
    min_energy: Any = 0.0

    def arrays(self, n: int) -> dict[str, np.ndarray]:
        out = {}
        for name in ("capacity", "power", "efficiency", "initial_energy", "min_energy"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
                raise ValueError(f"battery {name} must be a scalar or have shape ({n},), got {arr.shape}")
            arr = np.broadcast_to(arr, (n,)).astype(np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"battery {name} must be finite, got {arr}")
            out[name] = arr
        if np.any(out["efficiency"] <= 0) or np.any(out["efficiency"] > 1):
            raise ValueError(f"battery efficiency must lie in (0, 1], got {out['efficiency']}")
        for name in ("capacity", "power", "min_energy"):
            if np.any(out[name] < 0):
                raise ValueError(f"battery {name} must be >= 0, got {out[name]}")
        if np.any(out["min_energy"] > out["capacity"]):
            raise ValueError("battery min_energy must not exceed capacity")
        out["initial_energy"] = np.clip(out["initial_energy"], out["min_energy"], out["capacity"])
        return out


@dataclass
class LinearProgram:
    """``min cost @ x  s.t.  A_ub x <= b_ub, A_eq x = b_eq, bounds`` with the layout of :data:`VARIABLES`.

    Variable ``k`` (index into :data:`VARIABLES`) of agent ``i`` at hour ``t``
    is column ``k * N * T + i * T + t``.
    """

    c: np.ndarray
    A_ub: sp.csr_matrix
    b_ub: np.ndarray
    A_eq: sp.csr_matrix
    b_eq: np.ndarray
    bounds: np.ndarray
    n_agents: int
    horizon: int
    objective: str
    price: np.ndarray
    demand: np.ndarray
    limit: float | None
    backlog_cap: float | None = None

    def column(self, name: str, agent: int, hour: int) -> int:
        return VARIABLES.index(name) * self.n_agents * self.horizon + agent * self.horizon + hour

    def split(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Solution vector -> dict of (N, T) arrays, one per variable."""
        blocks = np.asarray(x).reshape(len(VARIABLES), self.n_agents, self.horizon)
        return dict(zip(VARIABLES, blocks))


@dataclass
class OracleResult:
    """Outcome of one LP solve; arrays are None unless the status is "optimal"."""

    status: str
    message: str
    objective: str
    n_agents: int
    horizon: int
    start_hour: int | None = None
    min_cost: float | None = None
    cost: float | None = None
    avg_grid: float | None = None
    grid_limit: float | None = None
    peak_demand: float | None = None
    grid_fraction: float | None = None
    backlog_cap: float | None = None
    solve_seconds: float = 0.0
    build_seconds: float = 0.0
    total_grid: np.ndarray | None = field(default=None, repr=False)
    total_backlog: np.ndarray | None = field(default=None, repr=False)
    e_grid: np.ndarray | None = field(default=None, repr=False)
    e_bat: np.ndarray | None = field(default=None, repr=False)
    charge: np.ndarray | None = field(default=None, repr=False)
    stored: np.ndarray | None = field(default=None, repr=False)
    backlog: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "optimal"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly scalars (per-step arrays are left out)."""
        keys = ("status", "message", "objective", "n_agents", "horizon", "start_hour", "min_cost", "cost", "avg_grid",
                "grid_limit", "peak_demand", "grid_fraction", "backlog_cap", "solve_seconds", "build_seconds")
        return {k: getattr(self, k) for k in keys}


# --------------------------------------------------------------------- the LP
def build_lp(
    demand,
    solar,
    price,
    battery: LinearBattery,
    limit: float | None = None,
    *,
    backlog_cap: float | None = None,
    objective: str = "cost",
    final_backlog_zero: bool = True,
) -> LinearProgram:
    """Build the oracle LP from plain arrays (no dataset needed).

    ``demand`` and ``solar`` are (N, T) kWh per step; ``price`` is (N, T) or
    (T,); ``limit`` bounds the average total grid use ``mean_t sum_i e_grid``
    (None: no global constraint); ``backlog_cap`` bounds every agent's backlog
    in kWh (None: unbounded); ``objective`` is "cost" (total ``sum p e_grid``)
    or "grid" (average total grid use).
    """
    d = np.atleast_2d(np.asarray(demand, dtype=np.float64))
    g = np.atleast_2d(np.asarray(solar, dtype=np.float64))
    n, t_len = d.shape
    if g.shape != d.shape:
        raise ValueError(f"solar must have the demand's shape {d.shape}, got {g.shape}")
    p = np.asarray(price, dtype=np.float64)
    if p.ndim == 1:
        p = np.broadcast_to(p, d.shape)
    if p.shape != d.shape:
        raise ValueError(f"price must have shape {d.shape} or ({t_len},), got {p.shape}")
    for name, arr in (("demand", d), ("solar", g), ("price", p)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    if d.min() < 0 or g.min() < 0:
        raise ValueError("demand and solar must be >= 0")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not allowed; choose one of {OBJECTIVES}")
    if limit is not None and not (np.isfinite(limit) and limit >= 0):
        raise ValueError(f"limit={limit!r} must be a finite number >= 0 (kWh per step) or None")
    if backlog_cap is not None and not (np.isfinite(backlog_cap) and backlog_cap >= 0):
        raise ValueError(f"backlog_cap={backlog_cap!r} must be a finite number >= 0 (kWh) or None")
    bat = battery.arrays(n)
    s = np.sqrt(bat["efficiency"])

    nt = n * t_len
    block = lambda k: k * nt + np.arange(nt)  # noqa: E731  columns of variable k, agent-major
    C, BAT, GRID, BACK, Q = (block(k) for k in range(len(VARIABLES)))
    rows = np.arange(nt)
    t_idx = np.tile(np.arange(t_len), n)
    not_first = t_idx > 0
    s_row = np.repeat(s, t_len)

    # Equalities: nt balance rows, then nt storage rows.
    #   b[t] + e[t] + B[t] - B[t-1] = d[t]
    #   q[t] - q[t-1] - s c[t] + b[t] / s = q0 at t = 0, else 0
    eq_r = [rows, rows, rows, rows[not_first],
            nt + rows, nt + rows[not_first], nt + rows, nt + rows]
    eq_c = [BAT, GRID, BACK, BACK[not_first] - 1,
            Q, Q[not_first] - 1, C, BAT]
    eq_v = [np.ones(nt), np.ones(nt), np.ones(nt), -np.ones(not_first.sum()),
            np.ones(nt), -np.ones(not_first.sum()), -s_row, 1.0 / s_row]
    A_eq = sp.csr_matrix(
        (np.concatenate(eq_v), (np.concatenate(eq_r), np.concatenate(eq_c))), shape=(2 * nt, len(VARIABLES) * nt)
    )
    b_eq = np.concatenate([d.ravel(), np.where(~not_first, np.repeat(bat["initial_energy"], t_len), 0.0)])

    # Inequalities: capacity after the solar charge, q[t] + b[t]/s <= Q; the global constraint.
    ub_r = [rows, rows]
    ub_c = [Q, BAT]
    ub_v = [np.ones(nt), 1.0 / s_row]
    b_ub = [np.repeat(bat["capacity"], t_len)]
    if limit is not None:
        ub_r.append(np.full(nt, nt))
        ub_c.append(GRID)
        ub_v.append(np.full(nt, 1.0 / t_len))
        b_ub.append(np.array([float(limit)]))
    n_ub = nt + (limit is not None)
    A_ub = sp.csr_matrix(
        (np.concatenate(ub_v), (np.concatenate(ub_r), np.concatenate(ub_c))), shape=(n_ub, len(VARIABLES) * nt)
    )

    power = np.repeat(bat["power"], t_len)
    bounds = np.zeros((len(VARIABLES) * nt, 2))
    bounds[C, 1] = np.minimum(g.ravel(), power)
    bounds[BAT, 1] = power
    bounds[GRID, 1] = np.inf
    bounds[BACK, 1] = np.inf if backlog_cap is None else float(backlog_cap)
    if final_backlog_zero:
        bounds[BACK[t_idx == t_len - 1], 1] = 0.0
    bounds[Q, 0] = np.repeat(bat["min_energy"], t_len)
    bounds[Q, 1] = np.repeat(bat["capacity"], t_len)

    cost = np.zeros(len(VARIABLES) * nt)
    cost[GRID] = p.ravel() if objective == "cost" else 1.0 / t_len
    return LinearProgram(cost, A_ub, np.concatenate(b_ub), A_eq, b_eq, bounds, n, t_len, objective, p, d,
                         None if limit is None else float(limit), None if backlog_cap is None else float(backlog_cap))


def solve_lp(lp: LinearProgram, *, peak: float | None = None, time_limit: float | None = None) -> OracleResult:
    """Solve with HiGHS; never raises on infeasibility (see ``status`` and ``message``)."""
    options: dict[str, Any] = {"presolve": True}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    t0 = time.perf_counter()
    res = linprog(lp.c, A_ub=lp.A_ub, b_ub=lp.b_ub, A_eq=lp.A_eq, b_eq=lp.b_eq, bounds=lp.bounds,
                  method="highs", options=options)
    seconds = time.perf_counter() - t0
    status = _STATUS.get(res.status, f"failed({res.status})")
    out = OracleResult(status=status, message=str(res.message), objective=lp.objective, n_agents=lp.n_agents,
                       horizon=lp.horizon, grid_limit=lp.limit, peak_demand=peak, solve_seconds=seconds)
    if status == "infeasible":
        need = [] if lp.limit is None else [f"average total grid use <= {lp.limit:.6g} kWh per step"]
        if lp.backlog_cap is not None:
            need.append(f"backlog <= {lp.backlog_cap:.6g} kWh per agent")
        out.message = (f"no schedule serves all demand by the end of the {lp.horizon}-step horizon with "
                       f"{' and '.join(need) or 'these data'} (HiGHS: {res.message})")
    if status != "optimal":
        return out
    parts = lp.split(res.x)
    e_grid = np.maximum(parts["e_grid"], 0.0)
    out.e_grid = e_grid
    out.e_bat = parts["e_bat"]
    out.charge = parts["charge"]
    out.stored = parts["stored"]
    out.backlog = np.maximum(parts["backlog"], 0.0)
    out.total_grid = e_grid.sum(axis=0)
    out.total_backlog = out.backlog.sum(axis=0)
    out.cost = float((lp.price * e_grid).sum())
    out.avg_grid = float(out.total_grid.mean())
    if lp.objective == "cost":
        out.min_cost = out.cost
    if peak:
        out.grid_fraction = out.avg_grid / peak
    return out


def solve_arrays(demand, solar, price, battery: LinearBattery, limit: float | None = None, *,
                 objective: str = "cost", backlog_cap: float | None = None, peak: float | None = None,
                 final_backlog_zero: bool = True) -> OracleResult:
    """:func:`build_lp` + :func:`solve_lp` on plain arrays."""
    t0 = time.perf_counter()
    lp = build_lp(demand, solar, price, battery, limit, backlog_cap=backlog_cap, objective=objective,
                  final_backlog_zero=final_backlog_zero)
    build = time.perf_counter() - t0
    out = solve_lp(lp, peak=peak)
    out.build_seconds = build
    out.backlog_cap = backlog_cap
    return out


# ------------------------------------------------------------- core episodes
def as_core(core_or_config: DemandResponseCore | EnvConfig | None) -> DemandResponseCore:
    """A core as given, or one built from a config (None: the paper scenario)."""
    if isinstance(core_or_config, DemandResponseCore):
        return core_or_config
    if core_or_config is None or isinstance(core_or_config, EnvConfig):
        return DemandResponseCore(core_or_config)
    raise TypeError(f"expected a DemandResponseCore or an EnvConfig, got {type(core_or_config).__name__}")


def check_horizon(core: DemandResponseCore, horizon: int, start_hour: int) -> None:
    """The episode [start_hour, start_hour + horizon) must lie in the core's data window."""
    lo, hi = core.window
    if isinstance(start_hour, bool) or not isinstance(start_hour, (int, np.integer)) or not lo <= start_hour < hi:
        raise ValueError(f"start_hour={start_hour!r} is outside the data window; allowed: integers in [{lo}, {hi - 1}]")
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or not 1 <= horizon <= hi - start_hour:
        raise ValueError(
            f"horizon={horizon!r} steps from start_hour={start_hour} leaves the data window [{lo}, {hi}); "
            f"allowed: 1..{hi - start_hour}"
        )


def episode_arrays(core: DemandResponseCore, horizon: int, start_hour: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(demand, solar, price), each (N, T), exactly as the core serves them in an episode from ``start_hour``."""
    check_horizon(core, horizon, start_hour)
    lo, _ = core.window
    lay = core.layout
    col = (start_hour - lo + np.arange(horizon)[None, :] + lay.offset[:, None]) % core.width
    b = lay.building[:, None]
    d = core.data
    demand = d.demand_kwh[b, lo + col] * lay.scale[:, None]
    return demand, d.solar_kwh[b, lo + col].astype(np.float64), d.price[b, lo + col].astype(np.float64)


def core_battery(core: DemandResponseCore) -> LinearBattery:
    """The core's batteries as linear models: nominal efficiency, nominal power, initial SOC as at reset."""
    b = core.layout.building
    params = core.params
    cap = params.capacity[b]
    soc0 = np.asarray(core._initial_soc, dtype=np.float64)  # what reset() restores
    min_energy = params.minimum_soc[b] * cap
    return LinearBattery(
        capacity=cap,
        power=params.nominal_power[b] * params.step_hours,
        efficiency=np.asarray(core.data.battery_efficiency, dtype=np.float64)[b],
        initial_energy=np.maximum(soc0 * cap, min_energy),
        min_energy=min_energy,
    )


def _solve_core(core_or_config, horizon, start_hour, *, objective, constraint_fraction=None, backlog_cap=None):
    t0 = time.perf_counter()
    core = as_core(core_or_config)
    demand, solar, price = episode_arrays(core, horizon, start_hour)
    limit = None
    if objective == "cost":
        frac = core.config.constraint_fraction if constraint_fraction is None else float(constraint_fraction)
        if not (np.isfinite(frac) and 0.0 < frac <= 1.0):
            raise ValueError(f"constraint_fraction={constraint_fraction!r} is out of range; allowed: (0, 1]")
        limit = frac * core.peak_demand
    lp = build_lp(demand, solar, price, core_battery(core), limit, backlog_cap=backlog_cap, objective=objective)
    build = time.perf_counter() - t0
    out = solve_lp(lp, peak=core.peak_demand)
    out.build_seconds = build
    out.start_hour = int(start_hour)
    out.backlog_cap = backlog_cap
    return out


def solve_min_cost(core_or_config=None, horizon: int = 3000, start_hour: int = 0,
                   constraint_fraction: float | None = None, backlog_cap: float | None = None) -> OracleResult:
    """Minimum total cost ``sum p e_grid`` of a core episode under ``mean_t sum_i e_grid <= c``.

    ``c = constraint_fraction * core.peak_demand`` (the core's own ``grid_limit``
    when ``constraint_fraction`` is None). Status "infeasible" (with a message,
    ``min_cost`` None) when ``c`` is below the feasibility frontier.
    """
    return _solve_core(core_or_config, horizon, start_hour, objective="cost",
                       constraint_fraction=constraint_fraction, backlog_cap=backlog_cap)


def solve_min_grid(core_or_config=None, horizon: int = 3000, start_hour: int = 0,
                   backlog_cap: float | None = None) -> OracleResult:
    """Smallest average total grid use of a core episode (all demand served by the end); see ``grid_fraction``."""
    return _solve_core(core_or_config, horizon, start_hour, objective="grid", backlog_cap=backlog_cap)


def min_grid_fraction(core_or_config=None, horizon: int = 3000, start_hour: int = 0,
                      backlog_cap: float | None = None) -> float:
    """The feasibility frontier: smallest achievable ``mean_t sum_i e_grid`` as a fraction of the aggregate peak.

    Any ``constraint_fraction`` below this value is infeasible for every
    controller of the environment (the LP is a relaxation, see the module
    docstring). The problem is always feasible (the grid can serve all demand
    at once), so a non-optimal status means a solver failure and raises
    :class:`OracleError`.
    """
    out = solve_min_grid(core_or_config, horizon, start_hour, backlog_cap=backlog_cap)
    if not out.ok:
        raise OracleError(f"minimum-grid LP did not solve: {out.status}: {out.message}")
    return float(out.grid_fraction)


# ------------------------------------------------------------- evaluation adapters
FRONTIER_SAMPLE = 1000  # above this many agents the frontier is estimated from a uniform sample of agents


def lp_rollout(core: DemandResponseCore, horizon: int, start_hour: int, backlog_cap: float | None = None):
    """The clairvoyant min-cost schedule as a :class:`cmarl_env.evaluation.Rollout` (same metrics as a controller).

    Returns ``(Rollout or None, OracleResult)``: None when the LP is infeasible
    (no schedule meets the limit and serves all demand by the end).
    """
    from cmarl_env.evaluation import Rollout

    res = solve_min_cost(core, horizon, start_hour, backlog_cap=backlog_cap)
    if not res.ok:
        return None, res
    demand, _solar, price = episode_arrays(core, horizon, start_hour)
    name = "lp" if backlog_cap is None else f"lp_cap{backlog_cap:g}"
    ro = Rollout(controller=name, start_hour=int(start_hour), n_agents=core.n_agents, grid_limit=float(core.grid_limit),
                 peak_demand=float(core.peak_demand), total_grid=res.total_grid, total_demand=demand.sum(axis=0),
                 total_backlog=res.total_backlog, energy_cost=(price * res.e_grid).sum(axis=0),
                 prices=price.max(axis=0), max_agent_backlog=float(res.backlog.max()),
                 wall_time_s=res.solve_seconds + res.build_seconds,
                 info={"lp_status": res.status, "lp_solve_seconds": res.solve_seconds, "backlog_cap": backlog_cap})
    return ro, res


def frontier_fraction(core: DemandResponseCore, horizon: int, start_hour: int, *, sample: int = FRONTIER_SAMPLE,
                      seed: int = 0) -> tuple[float, float]:
    """The LP feasibility frontier as a fraction of the peak, solved agent by agent: ``(estimate, standard error)``.

    Without the coupling constraint the minimum-grid LP separates over agents,
    so the frontier is the sum of N one-agent LPs (exact, standard error 0).
    Above ``sample`` agents it is N times the mean over a uniform sample of
    ``sample`` agents drawn with ``seed``, with the sampling standard error.
    """
    demand, solar, price = episode_arrays(core, horizon, start_hour)
    bat = core_battery(core)
    n = core.n_agents
    agents = np.arange(n) if n <= sample else np.sort(np.random.default_rng([seed, 0xF00]).choice(n, sample, replace=False))
    per_agent = np.empty(agents.size)
    for j, i in enumerate(agents):
        one = LinearBattery(**{k: np.asarray(getattr(bat, k))[i:i + 1] for k in
                               ("capacity", "power", "efficiency", "initial_energy", "min_energy")})
        res = solve_arrays(demand[i:i + 1], solar[i:i + 1], price[i:i + 1], one, None, objective="grid")
        if not res.ok:
            raise OracleError(f"minimum-grid LP of agent {i} did not solve: {res.status}: {res.message}")
        per_agent[j] = res.avg_grid
    if agents.size == n:
        return float(per_agent.sum() / core.peak_demand), 0.0
    se = float(n * per_agent.std(ddof=1) / np.sqrt(agents.size) * np.sqrt(1 - agents.size / n))
    return float(n * per_agent.mean() / core.peak_demand), se / core.peak_demand
