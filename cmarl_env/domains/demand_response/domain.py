"""Demand response behind the domain seam: an adapter around :class:`cmarl_env.core.DemandResponseCore`.

* actions (N, 2): battery fraction, grid fraction; agent types: the demand scales;
* objective: ``p e_grid`` (``-r0``); global signal: grid energy ``e_grid`` against one
  fixed limit ``c x`` the aggregate demand peak of the evaluated hours, share ``limit / N``;
* local signal ``r2``: demand not served this hour (postponed into the backlog);
* verdict: :mod:`cmarl_env.evaluation.feasibility` (average grid use over the limit,
  backlog slope), the one place for its numbers; record: :class:`cmarl_env.evaluation.Rollout`.
"""

from __future__ import annotations

import numpy as np

from cmarl_env.domains.base import Domain


class DemandResponseRecorder:
    """The per-hour totals of :class:`cmarl_env.evaluation.Rollout` (the loop's arithmetic, unchanged)."""

    def __init__(self, core, start, steps: int):
        self.core, self.start = core, start
        self.grid, self.demand, self.backlog, self.cost, self.price = (np.empty(steps) for _ in range(5))
        self.max_backlog = 0.0

    def record(self, t: int, s) -> None:
        self.grid[t] = s.e_grid.sum()
        self.demand[t] = s.demand.sum()
        self.backlog[t] = s.backlog.sum()
        self.cost[t] = -s.r0.sum()
        self.price[t] = s.price.max()
        self.max_backlog = max(self.max_backlog, float(s.backlog.max()))

    def finish(self, *, controller: str, wall_time_s: float, traces: dict, info: dict):
        from cmarl_env.evaluation.rollout import Rollout

        core = self.core
        return Rollout(controller=controller, start_hour=int(self.start), n_agents=core.n_agents,
                       grid_limit=float(core.grid_limit), peak_demand=float(core.peak_demand),
                       total_grid=self.grid, total_demand=self.demand, total_backlog=self.backlog,
                       energy_cost=self.cost, prices=self.price, max_agent_backlog=self.max_backlog,
                       wall_time_s=wall_time_s, traces=traces, info=info)


class DemandResponseDomain(Domain):
    name = "demand_response"
    share_varies = False
    ships_policies = True  # algorithms/pretrained, one per demand scale
    dual_defaults = {}  # DualConfig's defaults were chosen on this domain (algorithms/dual.py)
    start_unit = "hour"

    @property
    def config_type(self):
        from cmarl_env.config import EnvConfig

        return EnvConfig

    @property
    def core_type(self):
        from cmarl_env.core import DemandResponseCore

        return DemandResponseCore

    def build(self, config=None, data=None):
        from cmarl_env.core import DemandResponseCore

        return DemandResponseCore(config, data)

    def action_width(self, core) -> int:
        return 2

    def type_keys(self, core) -> list:
        return core.type_scales.tolist()

    def type_mask(self, core, key) -> np.ndarray:
        return core.layout.scale == key

    def global_signal(self, signals) -> np.ndarray:
        return signals.e_grid

    def limit(self, core, t: int) -> float:
        return float(core.grid_limit)

    def share(self, core, signals) -> float:
        return core.share

    def begin(self, core, start, steps, seed=None) -> int:
        if steps is None:
            steps = core.config.episode_length
        if start is None:
            start = core.window[0]
        lo, hi = core.window
        if not (lo <= start and start + steps <= hi):
            raise ValueError(f"start_hour={start} + steps={steps} leaves the core's data window [{lo}, {hi})")
        core.reset(seed=seed, start_hour=start, steps=steps)
        return int(steps)

    def episode_start(self, core) -> int:
        return int(np.min(core.start_hour))

    def episode_steps(self, core) -> int:
        return int(core.config.episode_length)

    def recorder(self, core, steps: int) -> DemandResponseRecorder:
        return DemandResponseRecorder(core, core.start_hour, steps)
