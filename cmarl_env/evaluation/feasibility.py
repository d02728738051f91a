"""The one feasibility rule of this package, and the valuation of postponed demand.

A roll-out (or a run, or a grid-search point) is **feasible** when

1. its average total grid use is at most ``(1 + GRID_TOLERANCE)`` times the
   grid limit, and
2. its total backlog grows by at most ``BACKLOG_SLOPE_LIMIT`` kWh per step
   *per agent* (least-squares slope over the last third of the roll-out).

Why these values (docs/evaluation.md has the longer story):

* ``GRID_TOLERANCE = 0.01``: the global constraint is a long-run average that
  dual methods meet asymptotically; over a few thousand hours their running
  average sits within about 1 % of the limit. The binding band of the paper's
  data is narrow (the LP frontier is 0.187 and the serve-all controller uses
  0.208 of the peak over hours 0-3000, an 11 % wide band), so a wider
  tolerance would let a controller that ignores the constraint pass.
* ``BACKLOG_SLOPE_LIMIT = 0.005`` kWh/step/agent: an agent's mean demand on
  the default dataset is 1.12 kWh/h, so this is about 0.5 % of its demand
  postponed for good every hour. The threshold is per agent so that the same
  rule holds at N = 1 and at N = 1,000,000.

Postponed demand that is still waiting at the end of a roll-out must be
served later; ``terminal_backlog_value`` charges it at the horizon's highest
price, so a controller cannot lower its cost by pushing demand past the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GRID_TOLERANCE = 0.01
BACKLOG_SLOPE_LIMIT = 0.005  # kWh per step per agent
SLOPE_WINDOW = 1.0 / 3.0     # the slope is fitted over this last fraction of the roll-out


def backlog_slope(total_backlog) -> float:
    """Least-squares slope [kWh/step] of the total backlog over the last third of a roll-out.

    Near zero: postponed demand is bounded; positive: demand is postponed without end.
    """
    y = np.asarray(total_backlog, dtype=np.float64)
    tail = y[len(y) - max(int(len(y) * SLOPE_WINDOW), 2):]
    if len(tail) < 2:
        return 0.0
    x = np.arange(len(tail), dtype=np.float64)
    x -= x.mean()
    return float((x * (tail - tail.mean())).sum() / (x * x).sum())


@dataclass(frozen=True)
class Verdict:
    """Both parts of the rule for one roll-out, with the numbers they were judged on."""

    grid_use_ratio: float          # average grid use / limit
    backlog_slope_per_agent: float  # kWh per step per agent

    @property
    def grid_ok(self) -> bool:
        return bool(self.grid_use_ratio <= 1.0 + GRID_TOLERANCE)

    @property
    def backlog_ok(self) -> bool:
        return bool(self.backlog_slope_per_agent <= BACKLOG_SLOPE_LIMIT)

    @property
    def feasible(self) -> bool:
        return self.grid_ok and self.backlog_ok

    @property
    def reason(self) -> str:
        """Why a roll-out is infeasible ('' when it is feasible)."""
        parts = []
        if not self.grid_ok:
            parts.append(f"grid use {self.grid_use_ratio:.3f} x limit > {1 + GRID_TOLERANCE:g}")
        if not self.backlog_ok:
            parts.append(f"backlog slope {self.backlog_slope_per_agent:.4g} kWh/step/agent > {BACKLOG_SLOPE_LIMIT:g}")
        return "; ".join(parts)


def judge(avg_grid: float, grid_limit: float, total_backlog_slope: float, n_agents: int) -> Verdict:
    """The verdict for an average total grid use, its limit, and the slope of the *total* backlog of N agents."""
    if not (isinstance(n_agents, (int, np.integer)) and n_agents >= 1):
        raise ValueError(f"n_agents={n_agents!r} must be an integer >= 1")
    if not (math.isfinite(grid_limit) and grid_limit > 0):
        raise ValueError(f"grid_limit={grid_limit!r} must be a finite number > 0")
    ratio = float(avg_grid) / float(grid_limit) if math.isfinite(avg_grid) else math.inf
    slope = float(total_backlog_slope) / int(n_agents) if math.isfinite(total_backlog_slope) else math.inf
    return Verdict(ratio, slope)


def is_binding(constraint: float, frontier: float, serve_all: float) -> bool:
    """A constraint level (fraction of the peak) is informative when some controller can meet it (at or above
    the LP frontier) and the controller that never postpones does not (its grid use is over the tolerance)."""
    return bool(frontier <= constraint and serve_all > constraint * (1.0 + GRID_TOLERANCE))


def terminal_backlog_value(final_backlog_kwh: float, prices) -> float:
    """What the demand still postponed at the end costs: every kWh at the horizon's highest price."""
    p = np.asarray(prices, dtype=np.float64)
    return float(final_backlog_kwh) * (float(p.max()) if p.size else 0.0)
