"""The EV roll-out loop, its record and its feasibility verdict (same controller protocol as demand response).

A controller implements ``reset(core)``, ``act(obs) -> (N, K)`` port actions in
[0, 1], and optionally ``observe(step)``, ``trace()``, ``summary()`` (see
``cmarl_env.evaluation.controller``). :func:`ev_rollout` drives it through one
episode of an :class:`EVChargingCore`.

Costs. ``energy_cost`` is what the charged energy costs at the day-ahead
price. Energy a car did not get (unmet at its departure) and energy still owed
to the cars present at the end (pending) is valued at the horizon's highest
price (at least 0), as demand response values the backlog left at the end
(``cmarl_env.evaluation.terminal_backlog_value``); ``total_cost`` is the sum,
so no controller gains by leaving cars uncharged or by pushing charging past
the end.

Feasibility. Global: the average hourly overload ``mean_t max(0, load_t -
L_t)`` at most ``GRID_TOLERANCE`` (1 %) of the average limit (the per-hour cap
met on average, as the paper's dual methods meet constraints; the largest
hourly ratio load/limit is reported too). Local: the unmet energy at most
``UNMET_TOLERANCE`` (1 %) of the energy the departed cars requested.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmarl_env.evaluation.feasibility import GRID_TOLERANCE

UNMET_TOLERANCE = 0.01


@dataclass
class EVRollout:
    controller: str
    start_day: int
    n_agents: int
    load: np.ndarray          # (T,) total load [kWh]
    limit: np.ndarray         # (T,) the hour's cap [kWh]
    price: np.ndarray         # (T,) EUR/kWh
    unmet: np.ndarray         # (T,) unmet energy of the cars that left in the hour [kWh]
    requested_departed: float  # energy requested by the cars that left [kWh]
    pending: float             # energy still owed to the cars present at the end [kWh]
    peak_uncontrolled: float
    wall_time_s: float = 0.0
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.load.size)

    @property
    def energy_cost(self) -> float:
        return float(self.price @ self.load)

    @property
    def value_price(self) -> float:
        return max(float(self.price.max()), 0.0)

    @property
    def total_cost(self) -> float:
        return self.energy_cost + self.value_price * (float(self.unmet.sum()) + self.pending)

    @property
    def overload_ratio(self) -> float:
        """Average hourly overload over the average limit."""
        return float(np.maximum(self.load - self.limit, 0.0).mean() / self.limit.mean())

    @property
    def peak_ratio(self) -> float:
        return float((self.load / self.limit).max())

    @property
    def unmet_fraction(self) -> float:
        return float(self.unmet.sum() / self.requested_departed) if self.requested_departed > 0 else 0.0

    @property
    def feasible(self) -> bool:
        return self.overload_ratio <= GRID_TOLERANCE and self.unmet_fraction <= UNMET_TOLERANCE

    def metrics(self) -> dict[str, Any]:
        return {
            "controller": self.controller, "start_day": self.start_day, "steps": self.steps,
            "n_agents": self.n_agents, "energy_kwh": float(self.load.sum()), "energy_cost": self.energy_cost,
            "unmet_kwh": float(self.unmet.sum()), "pending_kwh": self.pending, "value_price": self.value_price,
            "total_cost": self.total_cost, "peak_kwh": float(self.load.max()),
            "peak_fraction_of_uncontrolled": float(self.load.max() / self.peak_uncontrolled),
            "peak_ratio": self.peak_ratio, "overload_ratio": self.overload_ratio,
            "unmet_fraction": self.unmet_fraction, "feasible": self.feasible,
            "wall_time_s": self.wall_time_s,
        } | dict(self.info)


def ev_rollout(controller, core, *, seed: int | None = None, start_day: int | None = None,
               steps: int | None = None) -> EVRollout:
    """Run ``controller`` through one episode of ``core`` (reset with ``seed``/``start_day``/``steps``)."""
    core.reset(seed=seed, start_day=start_day, steps=steps)
    controller.reset(core)
    obs = core.observe()
    n = core.steps
    load, unmet, price, limit = (np.empty(n) for _ in range(4))
    requested = 0.0
    augment = bool(getattr(controller, "augment", False))
    t0 = time.perf_counter()
    for t in range(n):
        state = core.state
        leaving = state.dep <= t + 1.0
        requested += float(state.req[leaving].sum())
        out = core.step(controller.act(obs))
        controller.observe(out)
        obs = core.observe() if augment else out.obs
        s = out.signals
        load[t], unmet[t], price[t], limit[t] = s.load.sum(), s.unmet.sum(), s.price, s.share * core.n_agents
    wall = time.perf_counter() - t0
    st = core.state
    present = st.arr < n
    pending = float(st.rem[present].sum())
    return EVRollout(getattr(controller, "name", type(controller).__name__), core.start_day, core.n_agents,
                     load, limit, price, unmet, requested, pending, core.peak_uncontrolled, wall,
                     dict(controller.trace()), dict(controller.summary()))
