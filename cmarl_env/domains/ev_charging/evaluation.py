"""The EV roll-out record and its feasibility verdict (the EV domain's rule; the loop is the generic one).

Roll-outs run through :func:`cmarl_env.evaluation.rollout` like every domain's
(``rollout(controller, core, start_day, steps, seed=...)``); this module holds
what that loop builds for an :class:`EVChargingCore`: :class:`EVRecorder`
collects the hourly totals and :class:`EVRollout` derives the metrics.

Costs. ``energy_cost`` is what the charged energy costs at the day-ahead
price. Energy a car did not get (unmet at its departure) and energy still owed
to the cars present at the end (pending) is valued at the horizon's highest
price (at least 0), as demand response values the backlog left at the end
(``cmarl_env.evaluation.terminal_backlog_value``); ``total_cost`` is the sum,
so no controller gains by leaving cars uncharged or by pushing charging past
the end.

Feasibility (:class:`EVVerdict`), one rule for every variant of the global
constraint (``EVConfig.limit``). Global, ``overload_ratio`` at most
``GRID_TOLERANCE`` (1 %): with a cap per hour (``"peak"``, ``"hourly"``) the
average hourly overload ``mean_t max(0, load_t - L_t)`` over the average limit
(the per-hour cap met on average, as the paper's dual methods meet
constraints); with ``"average"`` the overload of the average, ``max(0,
mean_t load_t - mean_t L_t) / mean_t L_t`` (the episode's average load at most
``c P``, demand response's rule). The largest hourly ratio load/limit is
reported too. Local: the unmet energy at most ``UNMET_TOLERANCE`` (1 %) of the
energy the departed cars requested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmarl_env.evaluation.feasibility import GRID_TOLERANCE

UNMET_TOLERANCE = 0.01


@dataclass(frozen=True)
class EVVerdict:
    """Both parts of the EV rule for one roll-out, with the numbers they were judged on."""

    overload_ratio: float  # average hourly overload / average limit (limit "average": overload of the average)
    unmet_fraction: float  # unmet energy / energy requested by the departed cars
    limit_kind: str = "peak"

    @property
    def grid_ok(self) -> bool:
        return bool(self.overload_ratio <= GRID_TOLERANCE)

    @property
    def unmet_ok(self) -> bool:
        return bool(self.unmet_fraction <= UNMET_TOLERANCE)

    @property
    def feasible(self) -> bool:
        return self.grid_ok and self.unmet_ok

    @property
    def reason(self) -> str:
        """Why a roll-out is infeasible ('' when it is feasible)."""
        parts = []
        if not self.grid_ok:
            what = "overload of the average load" if self.limit_kind == "average" else "average overload"
            parts.append(f"{what} {self.overload_ratio:.4f} x limit > {GRID_TOLERANCE:g}")
        if not self.unmet_ok:
            parts.append(f"unmet energy {self.unmet_fraction:.4f} of requested > {UNMET_TOLERANCE:g}")
        return "; ".join(parts)


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
    limit_kind: str = "peak"   # EVConfig.limit: which overload the verdict reads (module docstring)

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
        """Average hourly overload over the average limit; ``limit_kind="average"``: overload of the average."""
        if self.limit_kind == "average":
            return float(max(self.load.mean() - self.limit.mean(), 0.0) / self.limit.mean())
        return float(np.maximum(self.load - self.limit, 0.0).mean() / self.limit.mean())

    @property
    def peak_ratio(self) -> float:
        return float((self.load / self.limit).max())

    @property
    def unmet_fraction(self) -> float:
        return float(self.unmet.sum() / self.requested_departed) if self.requested_departed > 0 else 0.0

    @property
    def verdict(self) -> EVVerdict:
        return EVVerdict(self.overload_ratio, self.unmet_fraction, self.limit_kind)

    @property
    def feasible(self) -> bool:
        return self.verdict.feasible

    def metrics(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "controller": self.controller, "start_day": self.start_day, "steps": self.steps,
            "n_agents": self.n_agents, "limit": self.limit_kind, "energy_kwh": float(self.load.sum()),
            "energy_cost": self.energy_cost,
            "unmet_kwh": float(self.unmet.sum()), "pending_kwh": self.pending, "value_price": self.value_price,
            "total_cost": self.total_cost, "peak_kwh": float(self.load.max()),
            "peak_fraction_of_uncontrolled": float(self.load.max() / self.peak_uncontrolled),
            "peak_ratio": self.peak_ratio, "overload_ratio": self.overload_ratio,
            "unmet_fraction": self.unmet_fraction, "feasible": v.feasible, "infeasible": not v.feasible,
            "infeasible_reason": v.reason, "wall_time_s": self.wall_time_s,
            "seconds_per_step": self.wall_time_s / self.steps if self.steps else math.nan,
        } | dict(self.info)

    def trajectories(self) -> dict[str, np.ndarray]:
        """Per-hour arrays for a run folder: the totals, the hour's limit and the controller's traces."""
        return {"load": self.load, "limit": self.limit, "price": self.price, "unmet": self.unmet,
                "cost": self.price * self.load} | dict(self.traces)


class EVRecorder:
    """The hourly totals of an :class:`EVRollout`."""

    def __init__(self, core, steps: int):
        self.core = core
        self.load, self.unmet, self.price, self.limit = (np.empty(steps) for _ in range(4))
        self.requested = 0.0

    def record(self, t: int, s) -> None:
        self.load[t], self.unmet[t], self.price[t] = s.load.sum(), s.unmet.sum(), s.price
        self.limit[t] = s.share * self.core.n_agents
        self.requested += float(s.requested.sum())

    def finish(self, *, controller: str, wall_time_s: float, traces: dict, info: dict) -> EVRollout:
        core = self.core
        st = core.state
        pending = float(st.rem[st.arr < core.steps].sum())
        return EVRollout(controller, core.start_day, core.n_agents, self.load, self.limit, self.price, self.unmet,
                         self.requested, pending, core.peak_uncontrolled, wall_time_s, traces, info,
                         core.config.limit)
