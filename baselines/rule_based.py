"""Rule-based reference controllers and a rollout that measures them.

The rule (:class:`RuleBasedController`), applied to every agent ``i`` at step
``k`` of an episode, with ``share = c / N`` (the core's ``share``) and
``G_i`` the agent's grid energy over steps ``0..k-1`` of the episode:

1. Battery first: ``a_bat = 1`` (the battery delivers all it can, up to the
   demand plus backlog ``D``). Let ``U_i`` be what is left unserved.
2. Then the grid, within a running budget ``budget_i = share * (k + 1) - G_i``:
   ``a_grid = 1`` if ``U_i <= budget_i`` (the running total stays under the
   share), else ``a_grid = budget_i / U_i`` so that the agent's grid use is
   exactly at its share, ``G_i = share * (k + 1)``; the rest is postponed.

So every agent's running average grid use never exceeds ``c / N`` and the
global constraint holds at every step; demand that does not fit waits in the
backlog (with an equal split of ``c``, the double-demand agents' backlog
grows without bound at the paper's 0.27, which is the point of the
reference). ``U_i`` is computed with the environment's own dynamics
(:func:`cmarl_env.dynamics.step` with ``a = (1, 0)`` on the current state), so
the budget is met exactly, with array operations over all agents.

:class:`GridOnly` always draws everything from the grid, ``a = (0, 1)``.
"""

from __future__ import annotations

import numpy as np

from cmarl_env import dynamics
from cmarl_env.core import DemandResponseCore


class GridOnly:
    """Reference: no battery, no postponement, ``a = (0, 1)`` for every agent."""

    name = "grid_only"

    def act(self, core: DemandResponseCore) -> np.ndarray:
        a = np.zeros((core.n_agents, 2))
        a[:, 1] = 1.0
        return a


class RuleBasedController:
    """Battery first, then the grid within each agent's running share ``c / N`` (see the module docstring).

    The controller keeps each agent's grid use over the current episode; it
    must be asked for actions once before every ``core.step`` (a call at
    ``core.t == 0`` starts a new episode; asking twice at the same step is
    allowed and gives the same actions).
    """

    name = "rule_based"

    def __init__(self) -> None:
        self._t: int | None = None
        self._used: np.ndarray | None = None     # grid energy over steps 0..t-1
        self._planned: np.ndarray | None = None  # grid energy the last actions draw at step t

    def reset(self) -> None:
        self._t = self._used = self._planned = None

    def unserved_after_battery(self, core: DemandResponseCore) -> np.ndarray:
        """Energy left to serve this hour after solar charging and a full battery discharge (a_bat = 1)."""
        n = core.n_agents
        battery_only = np.zeros((n, 2))
        battery_only[:, 0] = 1.0
        res = dynamics.step(
            soc=core.soc, degraded=core.degraded, backlog=core.backlog, demand=core.demand, solar=core.solar,
            price=core.price, actions=battery_only, lam=np.zeros(n), nu=np.zeros(n), share=core.share,
            model=core.layout.building, params=core.params,
        )
        return res.signals.backlog

    def act(self, core: DemandResponseCore) -> np.ndarray:
        n, t = core.n_agents, core.t
        if t == 0 or self._used is None or self._used.shape != (n,):
            if t != 0:
                raise RuntimeError(f"RuleBasedController.act first called at step {t}; start it at the episode's step 0")
            used = np.zeros(n)
        elif t == self._t + 1:
            used = self._used + self._planned
        elif t == self._t:
            used = self._used
        else:
            raise RuntimeError(
                f"RuleBasedController.act must be called before every step: last call at step {self._t}, now {t}"
            )
        unserved = self.unserved_after_battery(core)
        budget = np.maximum(core.share * (t + 1) - used, 0.0)
        fits = unserved <= budget
        a_grid = np.where(fits, 1.0, budget / np.where(fits, 1.0, unserved))
        self._t, self._used, self._planned = t, used, a_grid * unserved
        actions = np.empty((n, 2))
        actions[:, 0] = 1.0
        actions[:, 1] = a_grid
        return actions


def _least_squares_slope(y: np.ndarray) -> float:
    if y.size < 2:
        return 0.0
    x = np.arange(y.size, dtype=np.float64)
    x -= x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def rollout(controller, core: DemandResponseCore, steps: int, start_hour: int = 0, *, seed: int | None = None,
            trace: bool = False) -> dict:
    """Run ``controller`` for ``steps`` hours from ``start_hour`` and return metrics.

    ``avg_grid_consumption`` is ``mean_t sum_i e_grid`` (compare with
    ``grid_limit``), ``total_cost`` is ``sum_t sum_i p_t e_grid``,
    ``final_backlog_kwh`` the total backlog after the last step and
    ``backlog_slope_kwh_per_step`` the least-squares slope of the total backlog
    over the last third of the run (about 0 when postponement is not
    indefinite). With ``trace=True`` the per-step arrays are included.
    """
    from baselines.oracle import check_horizon

    check_horizon(core, steps, start_hour)
    core.reset(seed=seed, start_hour=start_hour)
    if hasattr(controller, "reset"):
        controller.reset()
    n = core.n_agents
    e_grid = np.empty((steps, n))
    e_bat = np.empty((steps, n))
    backlog = np.empty((steps, n))
    cost = np.empty(steps)
    for k in range(steps):
        out = core.step(controller.act(core))
        s = out.signals
        e_grid[k], e_bat[k], backlog[k] = s.e_grid, s.e_bat, s.backlog
        cost[k] = float(np.dot(s.price, s.e_grid))
    total_grid = e_grid.sum(axis=1)
    total_backlog = backlog.sum(axis=1)
    avg = float(total_grid.mean())
    metrics = {
        "controller": getattr(controller, "name", type(controller).__name__),
        "n_agents": n,
        "steps": steps,
        "start_hour": int(start_hour),
        "avg_grid_consumption": avg,
        "grid_limit": float(core.grid_limit),
        "grid_fraction": avg / core.peak_demand,
        "constraint_satisfied": bool(avg <= core.grid_limit * (1 + 1e-9)),
        "total_cost": float(cost.sum()),
        "final_backlog_kwh": float(total_backlog[-1]),
        "backlog_slope_kwh_per_step": _least_squares_slope(total_backlog[-max(steps // 3, min(steps, 2)):]),
        "min_backlog_kwh": float(backlog.min()),
        "per_agent_avg_grid": e_grid.mean(axis=0).tolist(),
    }
    if trace:
        metrics.update(e_grid=e_grid, e_bat=e_bat, backlog=backlog, total_grid=total_grid,
                       total_backlog=total_backlog, cost=cost)
    return metrics
