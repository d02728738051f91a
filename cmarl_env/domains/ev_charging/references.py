"""Reference controllers of the EV domain: uncontrolled, least-laxity-first under the limit, clairvoyant LP.

All three implement the controller protocol (``reset(core)``, ``act(obs)``) and
run through the generic :func:`cmarl_env.evaluation.rollout`.

* :class:`Uncontrolled`: every port at full power (a = 1): a car charges at
  min(charger, car) from its arrival until it has its energy. Its peak is the
  ``P`` of the limit ``c * P``.
* :class:`LeastLaxityFirst`: centralised, pooled over all sites, online (it
  knows the hour's cars, not later ones). Each hour it ranks the hour's cars by
  laxity ``(departure - max(arrival, t)) - remaining / power`` and gives each
  what it can take in the hour, in that order, until the hour's limit is used.
  Its load never exceeds the limit; it ignores prices.
* :class:`ClairvoyantLP`: knows every car of the episode in advance
  (``core.episode_sessions()``) and solves one linear program with HiGHS
  (``scipy.optimize.linprog(method="highs")``)::

      min  sum_t p_t sum_s x[s,t] + v sum_s u[s]
      s.t. sum_t x[s,t] + u[s] = requested[s]              every car s
           0 <= x[s,t] <= power[s] * f[s,t]                 f = connected fraction of hour t
           sum_s x[s,t] <= L_t                              every hour (omitted with limit=None)
           u[s] >= 0                                        unmet (or pending at the end) energy

  (``EVConfig.limit="average"``: the one row ``sum_{s,t} x[s,t] <= sum_t L_t =
  T c P`` instead of the per-hour rows.)

  with v the horizon's highest price (at least 0), the value the roll-out puts
  on unmet and pending energy (plus a tie-break of 1e-6 EUR/kWh on the unmet
  energy of cars leaving inside the horizon, see ``UNMET_EPS``). The program has exactly the environment's
  feasible schedules (the environment's per-port actions reach every x in the
  box), so its optimum is a lower bound on the total cost of every controller
  whose load respects the limit in every hour, and with ``limit=None`` on
  every controller at all. Replayed as actions ``x / (power f)`` it attains
  its optimum in the environment (up to the solver's tolerance).

  The cost-minimal schedule need not serve every car leaving inside the
  horizon even where some schedule under the limit does: energy still owed at
  the end costs the same v per kWh, so under a binding limit the LP may spend
  the budget on cars that stay past the end in cheaper hours. ``serve_first=True``
  solves lexicographically instead: first the least unmet energy of the
  leaving cars (zero exactly when c is at or above the frontier of
  :func:`binding_range`), then the least cost among those schedules. Its
  optimum bounds the total cost of the controllers under the limit that leave
  no more unmet energy, not of every controller under the limit. The default
  (``serve_first=None``) is serve-first under ``limit="average"`` and the pure
  cost LP under the per-hour caps. Measured on the calibration episode of 20
  sites x 72 h at c = 1.0001 x the frontier: under the per-hour cap the cost LP
  leaves no leaving car short, under the average limit it leaves 378 kWh (22 %
  of their requests) unmet while it charges cars that stay past the end, and
  the serve-first LP leaves none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from cmarl_env.config import FieldTypeError
from cmarl_env.domains.ev_charging.config import LIMITS
from cmarl_env.evaluation.controller import Controller, RandomController

# Tie-break on unmet energy (EUR/kWh). Unmet energy of a car leaving inside the horizon and energy still pending
# at the end cost the same (v per kWh) in the roll-out's total cost; the LP adds UNMET_EPS per unmet kWh so that
# among equal-cost schedules it leaves energy pending rather than unmet (the local constraint) and delivers when
# indifferent. Its objective is reported without the tie-break; it bounds a controller's total cost up to
# UNMET_EPS x that controller's unmet energy.
UNMET_EPS = 1e-6
# serve_first: the second stage may leave the first stage's least unmet energy plus this fraction of the
# leaving cars' requested energy (room for rounding between the two solves: the first stage's schedule meets the
# added row up to the sum's rounding, so the second stage stays feasible; the second stage uses the slack).
SERVE_FIRST_SLACK = 1e-9


class Uncontrolled(Controller):
    """Full power on arrival (a = 1 at every port)."""

    name = "uncontrolled"

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.ones((self.core.n_agents, self.core.ports))


class RandomRate(RandomController):
    """Uniformly random port actions in [0, 1], seeded (the EV floor): ``RandomController`` with K = ports actions
    per site."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.random((self.core.n_agents, self.core.ports))


class LeastLaxityFirst(Controller):
    """Pooled least-laxity-first under the hour's limit (see the module docstring).

    Under ``limit="average"`` it still holds every hour to ``c x P``, stricter than that rule (which lets quiet
    hours' headroom pay for busy ones), so at the low levels where "average" binds it leaves cars short (259 kWh
    at c = 0.18 on 10 sites): there it is a safe reference, not a strong one."""

    name = "llf"

    def reset(self, core) -> None:
        super().reset(core)
        self.t = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        core, s, t = self.core, self.core.state, self.t
        limit = core.limit_at(t)
        a = np.zeros(core.n_ports)
        start = np.maximum(s.arr, float(t))
        frac = np.clip(np.minimum(s.dep, t + 1.0) - start, 0.0, 1.0)
        here = np.flatnonzero((frac > 0) & (s.rem > 0))  # the hour's cars, those arriving during it included
        if here.size:
            cap = s.pmax[here] * frac[here]
            need = np.minimum(s.rem[here], cap)
            laxity = (s.dep[here] - start[here]) - s.rem[here] / s.pmax[here]
            order = np.argsort(laxity, kind="stable")
            need_sorted = need[order]
            before = np.cumsum(need_sorted) - need_sorted
            give = np.clip(limit - before, 0.0, need_sorted)
            a[here[order]] = give / cap[order]
        self.t += 1
        return np.clip(a, 0.0, 1.0).reshape(core.n_agents, core.ports)


@dataclass
class LPSolution:
    objective: float          # the LP optimum (energy cost + v * unmet) [EUR]
    energy_cost: float
    unmet_kwh: float
    schedule: np.ndarray      # (T, n_ports) energy per port and hour [kWh]
    n_sessions: int
    n_variables: int
    solve_time_s: float
    status: str


def solve_lp(core, limit: bool = True, serve_first: bool | None = None) -> LPSolution:
    """The clairvoyant LP on the current episode of ``core`` (its cars, prices and limits).

    ``limit``: cap the load (per hour, or its total with ``EVConfig.limit="average"``); ``serve_first``: least
    unmet energy of the leaving cars first, then least cost; None: True under "average" (module docstring)."""
    kind = _limit_kind(core)
    if serve_first is None:
        serve_first = kind == "average"
    steps = core.steps
    sess = core.episode_sessions()
    prices = core.prices(steps)
    value = max(float(prices.max()), 0.0)
    first = np.floor(sess.arrival).astype(np.int64)
    last = np.minimum(np.ceil(sess.departure).astype(np.int64), steps)  # exclusive
    count = np.maximum(last - first, 0)
    sid = np.repeat(np.arange(sess.size), count)
    offsets = np.arange(sid.size) - np.repeat(np.cumsum(count) - count, count)
    hour = first[sid] + offsets
    frac = np.clip(np.minimum(sess.departure[sid], hour + 1.0) - np.maximum(sess.arrival[sid], hour), 0.0, 1.0)
    upper = sess.power[sid] * frac
    nx, ns = sid.size, sess.size
    leaving = sess.departure <= steps
    cost = np.concatenate([prices[hour], value + np.where(leaving, UNMET_EPS, 0.0)])
    a_eq = sp.hstack([sp.csr_matrix((np.ones(nx), (sid, np.arange(nx))), shape=(ns, nx)),
                      sp.identity(ns, format="csr")]).tocsr()
    bounds = np.concatenate([np.stack([np.zeros(nx), upper], 1), np.stack([np.zeros(ns), np.full(ns, np.inf)], 1)])
    kwargs = {}
    if limit and kind == "average":  # one row: the episode's total load at most sum_t L_t = T c P
        kwargs = {"A_ub": sp.hstack([sp.csr_matrix(np.ones((1, nx))), sp.csr_matrix((1, ns))]).tocsr(),
                  "b_ub": np.array([float(core.limits(steps).sum())])}
    elif limit:
        a_ub = sp.hstack([sp.csr_matrix((np.ones(nx), (hour, np.arange(nx))), shape=(steps, nx)),
                          sp.csr_matrix((steps, ns))]).tocsr()
        kwargs = {"A_ub": a_ub, "b_ub": core.limits(steps)}
    t0 = time.perf_counter()
    if serve_first:  # stage 1: the least unmet energy of the leaving cars under the same constraints
        unmet_row = np.concatenate([np.zeros(nx), leaving.astype(np.float64)])
        res = linprog(unmet_row, A_eq=a_eq, b_eq=sess.requested, bounds=bounds, method="highs", **kwargs)
        if res.status != 0:
            raise RuntimeError(f"clairvoyant LP (serve first, stage 1): {res.message}")
        least = max(float(res.fun), 0.0) + SERVE_FIRST_SLACK * max(1.0, float(sess.requested[leaving].sum()))
        row = sp.csr_matrix(unmet_row[None, :])
        if "A_ub" in kwargs:
            kwargs = {"A_ub": sp.vstack([kwargs["A_ub"], row]).tocsr(), "b_ub": np.append(kwargs["b_ub"], least)}
        else:
            kwargs = {"A_ub": row, "b_ub": np.array([least])}
    res = linprog(cost, A_eq=a_eq, b_eq=sess.requested, bounds=bounds, method="highs", **kwargs)
    wall = time.perf_counter() - t0
    if res.status != 0:
        raise RuntimeError(f"clairvoyant LP: {res.message}")
    x, u = res.x[:nx], res.x[nx:]
    x = np.clip(x, 0.0, upper)
    schedule = np.zeros((steps, core.n_ports))
    np.add.at(schedule, (hour, sess.port[sid]), x)
    return LPSolution(float(prices[hour] @ x + value * u.sum()), float(prices[hour] @ x), float(u.sum()),
                      schedule, ns, nx + ns, wall, "optimal")


class ClairvoyantLP(Controller):
    """Replays the clairvoyant LP's schedule as port actions (``limit=False``: the LP without the cap;
    ``serve_first``: the leaving cars' energy first, then cost; None: under ``limit="average"`` only; module
    docstring)."""

    def __init__(self, limit: bool = True, serve_first: bool | None = None):
        if serve_first is not None and not isinstance(serve_first, bool):
            raise FieldTypeError(f"serve_first={serve_first!r} must be None (by the limit), True or False")
        self.limit, self.serve_first = bool(limit), serve_first
        suffix = {None: "", True: "_serve_first", False: "_cost"}[serve_first]
        self.name = ("lp" if self.limit else "lp_unlimited") + suffix

    def reset(self, core) -> None:
        super().reset(core)
        self.solution = solve_lp(core, self.limit, self.serve_first)
        self.t = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        core, s, t = self.core, self.core.state, self.t
        cap = s.pmax * np.clip(np.minimum(s.dep, t + 1.0) - np.maximum(s.arr, float(t)), 0.0, 1.0)
        want = self.solution.schedule[t]
        a = np.divide(want, cap, out=np.zeros_like(want), where=cap > 1e-12)
        self.t += 1
        return np.clip(a, 0.0, 1.0).reshape(core.n_agents, core.ports)

    def summary(self) -> dict:
        sol = self.solution
        return {"lp_objective": sol.objective, "lp_solve_time_s": sol.solve_time_s, "lp_variables": sol.n_variables}


def min_peak_fraction(core) -> float:
    """The LP feasibility frontier: the smallest c for which every car leaving inside the episode can get all its
    energy under the cap ``c * P * profile`` (energy still owed at the end may wait). Solved as one LP (HiGHS)."""
    steps = core.steps
    sess = core.episode_sessions()
    first = np.floor(sess.arrival).astype(np.int64)
    last = np.minimum(np.ceil(sess.departure).astype(np.int64), steps)
    count = np.maximum(last - first, 0)
    sid = np.repeat(np.arange(sess.size), count)
    hour = first[sid] + np.arange(sid.size) - np.repeat(np.cumsum(count) - count, count)
    frac = np.clip(np.minimum(sess.departure[sid], hour + 1.0) - np.maximum(sess.arrival[sid], hour), 0.0, 1.0)
    upper = sess.power[sid] * frac
    nx, ns = sid.size, sess.size
    profile = core.profile[np.arange(steps) % 24] * core.peak_uncontrolled
    cost = np.concatenate([np.zeros(nx + ns), [1.0]])
    a_eq = sp.hstack([sp.csr_matrix((np.ones(nx), (sid, np.arange(nx))), shape=(ns, nx)),
                      sp.identity(ns, format="csr"), sp.csr_matrix((ns, 1))]).tocsr()
    a_ub = sp.hstack([sp.csr_matrix((np.ones(nx), (hour, np.arange(nx))), shape=(steps, nx)),
                      sp.csr_matrix((steps, ns)), sp.csr_matrix(-profile[:, None])]).tocsr()
    stays = sess.departure > steps  # may leave energy pending at the end
    u_hi = np.where(stays, np.inf, 0.0)
    bounds = np.concatenate([np.stack([np.zeros(nx), upper], 1), np.stack([np.zeros(ns), u_hi], 1), [[0.0, np.inf]]])
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(steps), A_eq=a_eq, b_eq=sess.requested, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"frontier LP: {res.message}")
    return float(res.x[-1])


def uncontrolled_threshold(core, tolerance: float | None = None) -> float:
    """The largest c at which uncontrolled charging of the current episode breaks the global rule
    (average hourly overload above ``tolerance`` of the average limit); bisection on its load profile."""
    from cmarl_env.domains.ev_charging.evaluation import GRID_TOLERANCE

    tol = GRID_TOLERANCE if tolerance is None else tolerance
    load = core.uncontrolled_load(core.episode_key, core.start_day, core.steps)
    shape = core.profile[np.arange(core.steps) % 24] * core.peak_uncontrolled

    def ratio(c: float) -> float:
        return float(np.maximum(load - c * shape, 0.0).mean() / (c * shape).mean())

    lo, hi = 1e-6, 1.0 / float(core.profile.min())
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(mid) > tol else (lo, mid)
    return hi


def _limit_kind(core) -> str:
    kind = getattr(core.config, "limit", None)
    if kind not in LIMITS:
        raise ValueError(f"limit={kind!r} is not allowed; choose one of {LIMITS}")
    return kind


def min_average_fraction(core) -> float:
    """The frontier of ``limit="average"``: the energy requested by the cars leaving inside the episode over
    ``T x P``, the least average load (as a fraction of ``P``) that can still serve all of them (energy still
    owed at the end may wait). Every such car can get its energy on its own (its request is capped at its power
    times its stay, ``sessions.py``), and one budget on the total load does not make cars compete hour by hour,
    so any ``T c P`` at least their total request serves them all (checked against :class:`ClairvoyantLP` in
    tests/test_ev_charging.py)."""
    steps = core.steps
    sess = core.episode_sessions()
    leaving = sess.departure <= steps
    reach = sess.power * (np.minimum(sess.departure, steps) - np.maximum(sess.arrival, 0.0))
    short = np.flatnonzero(leaving & (sess.requested > reach + 1e-9 * np.maximum(reach, 1.0)))
    if short.size:
        raise RuntimeError(f"average frontier: {short.size} leaving car(s) cannot get their energy at any limit "
                           f"(first at port {int(sess.port[short[0]])})")
    return float(sess.requested[leaving].sum() / (steps * core.peak_uncontrolled))


def uncontrolled_average_threshold(core, tolerance: float | None = None) -> float:
    """The threshold of ``limit="average"``: uncontrolled charging's average load over ``P (1 + tolerance)``,
    below which its overload of the average exceeds ``tolerance`` (the verdict's ``GRID_TOLERANCE``)."""
    from cmarl_env.domains.ev_charging.evaluation import GRID_TOLERANCE

    tol = GRID_TOLERANCE if tolerance is None else tolerance
    load = core.uncontrolled_load(core.episode_key, core.start_day, core.steps)
    return float(load.mean() / (core.peak_uncontrolled * (1.0 + tol)))


def binding_range(core) -> tuple[float, float]:
    """(frontier, uncontrolled threshold) of the current episode under the core's ``EVConfig.limit``: c binds
    strictly between them (some controller can meet it, uncontrolled charging does not). Per-hour caps
    ("peak", "hourly"): :func:`min_peak_fraction` and :func:`uncontrolled_threshold`; "average":
    :func:`min_average_fraction` and :func:`uncontrolled_average_threshold`."""
    if _limit_kind(core) == "average":
        return min_average_fraction(core), uncontrolled_average_threshold(core)
    return min_peak_fraction(core), uncontrolled_threshold(core)


class MultiplierRate:
    """A hand-written state-augmented EV policy (``obs -> (N, K)`` actions), standing in for trained ones.

    It reads the augmented observation (``augment=True``): each plugged port's minimum rate ``u = remaining /
    (power x connected hours left)`` (the fraction of full power that delivers the car's energy exactly at its
    departure) is scaled by the value of energy over its price in the Lagrangian of the site::

        a = clip(u x (v - nu) / (price + lambda), 0, 1)      (a = 1 at ports with energy when price + lambda <= 0)

    with ``v`` the window's largest absolute price (``core.price_norm``): without multipliers it charges faster in
    cheap hours; a higher lambda (the shared limit is exceeded) slows every port below its minimum rate, and a more
    negative nu (unmet energy) speeds it up again. Built from the core it acts on (its observation scales).
    """

    def __init__(self, core):
        from cmarl_env.domains.ev_charging.core import TIME_NORM_H

        if not core.config.augment:
            raise ValueError("MultiplierRate reads lambda and nu from the observation: build the core with augment=True")
        self.ports, self.value = core.ports, core.price_norm
        self.price_norm, self.energy_norm = core.price_norm, core.energy_norm
        self.time_norm, self.charger_kw = TIME_NORM_H, core.config.charger_kw
        self.lambda_range, self.nu_range = core.lambda_range, core.nu_range

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        n, k = obs.shape[0], self.ports
        ports = obs[:, 4:4 + 4 * k].reshape(n, k, 4)
        rem = ports[:, :, 1] * self.energy_norm
        hours = ports[:, :, 2] * self.time_norm
        power = ports[:, :, 3] * self.charger_kw
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where((hours > 0) & (power > 0), rem / (power * hours), 0.0)
        price = obs[:, 0] * self.price_norm
        lam = self.lambda_range[0] + obs[:, -2] * (self.lambda_range[1] - self.lambda_range[0])
        nu = self.nu_range[0] + obs[:, -1] * (self.nu_range[1] - self.nu_range[0])
        cost = price + lam
        free = (cost <= 1e-9)[:, None]  # energy costs nothing (or pays): full power
        scale = ((self.value - nu) / np.maximum(cost, 1e-9))[:, None]
        a = np.where(rem > 0, np.where(free, 1.0, np.minimum(u * scale, 1.0)), 0.0)
        return np.clip(a, 0.0, 1.0)
