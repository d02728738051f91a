"""The one roll-out loop, for every domain, and demand response's typed record.

Every method, learned or not, in every domain (:mod:`cmarl_env.domains`), is
evaluated by :func:`rollout`: the domain of the core (``domain_of(core)``)
resets it for the roll-out, and its recorder collects the per-step totals of
the domain's signals and builds the domain's record, whose ``verdict`` is the
domain's feasibility rule and ``metrics()`` its JSON-friendly metrics.

Demand response's record is :class:`Rollout` (grid use over the limit,
backlog slope, feasibility, cost with the terminal backlog, derived here
once); the clairvoyant LP, which is not a controller, builds the same
:class:`Rollout` from its solution (``baselines.oracle.lp_rollout``). EV
charging's is :class:`cmarl_env.domains.ev_charging.evaluation.EVRollout`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmarl_env.domains import domain_of
from cmarl_env.evaluation.feasibility import Verdict, backlog_slope, judge, terminal_backlog_value


@dataclass
class Rollout:
    """One roll-out of N agents over ``steps`` hours: per-step totals plus what the controller recorded."""

    controller: str
    start_hour: int
    n_agents: int
    grid_limit: float
    peak_demand: float
    total_grid: np.ndarray       # (T,) sum_i e_grid [kWh]
    total_demand: np.ndarray     # (T,) sum_i d [kWh]
    total_backlog: np.ndarray    # (T,) sum_i B after the hour [kWh]
    energy_cost: np.ndarray      # (T,) sum_i p e_grid [price units]
    prices: np.ndarray           # (T,) the hour's highest price over the agents
    max_agent_backlog: float     # max over agents and hours of B [kWh]
    wall_time_s: float = 0.0
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.total_grid.shape[0])

    @property
    def avg_grid(self) -> float:
        return float(self.total_grid.mean())

    @property
    def slope(self) -> float:
        return backlog_slope(self.total_backlog)

    @property
    def verdict(self) -> Verdict:
        return judge(self.avg_grid, self.grid_limit, self.slope, self.n_agents)

    @property
    def final_backlog(self) -> float:
        return float(self.total_backlog[-1])

    @property
    def energy_cost_total(self) -> float:
        return float(self.energy_cost.sum())

    @property
    def backlog_value(self) -> float:
        return terminal_backlog_value(self.final_backlog, self.prices)

    @property
    def total_cost(self) -> float:
        """Energy bought plus the demand left waiting at the end, valued at the horizon's highest price."""
        return self.energy_cost_total + self.backlog_value

    def metrics(self) -> dict[str, Any]:
        """JSON-friendly metrics of the roll-out (the same keys for every method)."""
        v = self.verdict
        return {
            "controller": self.controller,
            "start_hour": int(self.start_hour),
            "steps": self.steps,
            "n_agents": self.n_agents,
            "avg_grid_consumption": self.avg_grid,
            "grid_limit": float(self.grid_limit),
            "peak_demand": float(self.peak_demand),
            "grid_use_ratio": v.grid_use_ratio,
            "grid_fraction_of_peak": self.avg_grid / self.peak_demand,
            "grid_violation_pct": 100.0 * max(v.grid_use_ratio - 1.0, 0.0),
            "energy_cost": self.energy_cost_total,
            "terminal_backlog_value": self.backlog_value,
            "total_cost": self.total_cost,
            "final_backlog_kwh": self.final_backlog,
            "max_agent_backlog_kwh": float(self.max_agent_backlog),
            "backlog_slope_kwh_per_step": self.slope,
            "backlog_slope_per_agent": v.backlog_slope_per_agent,
            "feasible": v.feasible,
            "infeasible": not v.feasible,
            "infeasible_reason": v.reason,
            "wall_time_s": self.wall_time_s,
            "seconds_per_step": self.wall_time_s / self.steps if self.steps else math.nan,
        } | dict(self.info)

    def trajectories(self) -> dict[str, np.ndarray]:
        """Per-step arrays for the run folder: the totals, the limit and the controller's traces."""
        return {"total_grid": self.total_grid, "total_demand": self.total_demand,
                "total_backlog": self.total_backlog, "cost": self.energy_cost,
                "grid_limit": np.full(self.steps, self.grid_limit)} | dict(self.traces)


def rollout(controller, core, start=None, steps: int | None = None, *, seed: int | None = None,
            progress: bool = False):
    """Run ``controller`` on ``core`` for ``steps`` steps from ``start`` (see ``controller.py``).

    ``start`` is in the domain's unit (``domain_of(core).start_unit``): the data hour for demand
    response, the day for EV charging; ``None`` and ``steps=None`` take the core's defaults. ``seed``
    reseeds the core's episode (the EV cars; demand response's episodes are not random once the start
    is given). Returns the domain's record (:class:`Rollout` for demand response).
    ``progress=True`` shows a tqdm bar (when tqdm is installed).
    """
    domain = domain_of(core)
    steps = domain.begin(core, start, steps, seed)
    controller.reset(core)
    obs = core.observe()
    rec = domain.recorder(core, steps)
    augment = bool(getattr(controller, "augment", False))
    bar = _bar(steps) if progress else None
    t0 = time.perf_counter()
    for t in range(steps):
        out = core.step(controller.act(obs))
        controller.observe(out)
        obs = core.observe() if augment else out.obs
        rec.record(t, out.signals)
        if bar is not None:
            bar.update(1)
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return rec.finish(controller=getattr(controller, "name", type(controller).__name__), wall_time_s=wall,
                      traces=dict(controller.trace()), info=dict(controller.summary()))


def _bar(total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional for the environment package
        return None
    return tqdm(total=total, unit="step", desc="roll-out", leave=False)
