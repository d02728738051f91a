"""Rule-based reference controllers: what every learned method must beat.

* :class:`ShareRule` (``rule_based``): battery first, then the grid within each
  agent's running share ``c / N``; what does not fit is postponed. With
  ``G_i`` the agent's grid energy so far in the roll-out and ``U_i`` what is
  left after a full battery discharge, ``a_grid = min(1, (share (k + 1) - G_i) / U_i)``,
  so every agent's running average stays at or under its share. It ignores
  the price, and with an equal split the double-demand agents postpone
  without end: the price-blind constraint-first reference.
* :class:`PriceRule` (``price_rule``): battery always on; the grid is off while
  the price is at or above ``peak_price`` or the hour of day lies in
  ``wait_hours`` (demand waits for the cheaper or sunnier hours), until the
  agent's backlog reaches ``backlog_cap`` kWh; otherwise the grid serves all
  that is left. :func:`tune_price_rule` picks its parameters on the training
  hours only: the cheapest candidate that is feasible under the scenario's
  constraint (``cmarl_env.evaluation.judge``), or the one closest to
  feasible when none is (bounded backlog first, then the least grid use).

``U_i`` is computed with the environment's own dynamics
(:func:`cmarl_env.dynamics.step` with ``a = (1, 0)`` on the current state),
with array operations over all agents.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from cmarl_env import dynamics
from cmarl_env.evaluation import Controller, rollout

HOURS_PER_DAY = 24


def unserved_after_battery(core) -> np.ndarray:
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


class ShareRule(Controller):
    """Battery first, then the grid within each agent's running share ``c / N`` (module docstring)."""

    name = "rule_based"

    def reset(self, core) -> None:
        super().reset(core)
        self.used = np.zeros(core.n_agents)

    def act(self, obs: np.ndarray) -> np.ndarray:
        core = self.core
        unserved = unserved_after_battery(core)
        budget = np.maximum(core.share * (core.t + 1) - self.used, 0.0)
        fits = unserved <= budget
        actions = np.ones((core.n_agents, 2))
        actions[:, 1] = np.where(fits, 1.0, budget / np.where(fits, 1.0, unserved))
        return actions

    def observe(self, step) -> None:
        self.used += step.signals.e_grid


@dataclass(frozen=True)
class PriceRuleParams:
    """Grid off at ``price >= peak_price`` or in the hours of day ``[wait_from, wait_to)`` (wrapping midnight),
    until the agent's backlog reaches ``backlog_cap`` kWh. ``peak_price = inf`` disables the price test and
    ``wait_from == wait_to`` the hour test."""

    peak_price: float = float("inf")
    wait_from: int = 0
    wait_to: int = 0
    backlog_cap: float = 2.0

    def __post_init__(self) -> None:
        for name in ("wait_from", "wait_to"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < HOURS_PER_DAY:
                raise ValueError(f"{name}={v!r} must be an hour of day, an integer in [0, 23]")
        if not (isinstance(self.backlog_cap, (int, float)) and self.backlog_cap >= 0):
            raise ValueError(f"backlog_cap={self.backlog_cap!r} must be a number >= 0 (kWh)")
        if not isinstance(self.peak_price, (int, float)) or self.peak_price != self.peak_price:
            raise ValueError(f"peak_price={self.peak_price!r} must be a number (inf: no price test)")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["peak_price"] = None if out["peak_price"] == float("inf") else out["peak_price"]
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PriceRuleParams":
        values = dict(values)
        if values.get("peak_price") is None:
            values["peak_price"] = float("inf")
        return cls(**values)


class PriceRule(Controller):
    """Shift demand out of peak-price (and, optionally, sunless) hours up to a backlog cap (module docstring)."""

    name = "price_rule"

    def __init__(self, params: PriceRuleParams | None = None):
        self.params = params or PriceRuleParams()

    def reset(self, core) -> None:
        super().reset(core)
        lo = core.window[0]
        self._hour_of_day = np.asarray(core.data.hour[lo:core.window[1]], dtype=np.int64) % HOURS_PER_DAY

    def _waiting_hour(self) -> np.ndarray:
        """Per agent: is the current hour of day inside the wait window (agents may replay at offsets)?"""
        p, core = self.params, self.core
        if p.wait_from == p.wait_to:
            return np.zeros(core.n_agents, dtype=bool)
        h = self._hour_of_day[(core._phase + core.t) % core.width]
        if p.wait_from < p.wait_to:
            return (h >= p.wait_from) & (h < p.wait_to)
        return (h >= p.wait_from) | (h < p.wait_to)

    def act(self, obs: np.ndarray) -> np.ndarray:
        core, p = self.core, self.params
        wait = ((core.price >= p.peak_price) | self._waiting_hour()) & (core.backlog < p.backlog_cap)
        actions = np.ones((core.n_agents, 2))
        actions[:, 1] = np.where(wait, 0.0, 1.0)
        return actions

    def summary(self) -> dict[str, Any]:
        return {"price_rule_params": self.params.to_dict()}


def price_rule_candidates(price_levels: Sequence[float]) -> list[PriceRuleParams]:
    """The tuning grid: price thresholds at the dataset's upper price levels (or none) x wait windows x caps."""
    levels = sorted(set(float(p) for p in price_levels))
    thresholds = [float("inf")] + [p for p in levels[1:] if p > levels[0] * 1.5][:2]
    windows = [(0, 0), (0, 8), (20, 9), (17, 10)]
    caps = [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    return [PriceRuleParams(t, w0, w1, cap) for t, (w0, w1), cap in itertools.product(thresholds, windows, caps)]


def tune_price_rule(make_core, steps: int, start_hour: int, candidates: Sequence[PriceRuleParams] | None = None):
    """Pick the price rule's parameters on ``[start_hour, start_hour + steps)`` (the training hours).

    ``make_core()`` builds the scenario's core on those hours. Returns
    ``(best params, table)``: the cheapest feasible candidate by total cost
    (terminal backlog included), else the one closest to feasible (among the
    candidates whose backlog stays bounded, if any, the smallest grid use over
    the limit); the table lists every candidate's metrics for the run folder.
    """
    core = make_core()
    if candidates is None:
        candidates = price_rule_candidates(np.unique(np.round(core.data.price[:, :start_hour + steps], 6)))
    table = []
    for params in candidates:
        r = rollout(PriceRule(params), core, start_hour, steps)
        v = r.verdict
        table.append({"params": params.to_dict(), "total_cost": r.total_cost, "grid_use_ratio": v.grid_use_ratio,
                      "backlog_slope_per_agent": v.backlog_slope_per_agent, "backlog_ok": v.backlog_ok,
                      "feasible": v.feasible})
    feasible = [(row["total_cost"], i) for i, row in enumerate(table) if row["feasible"]]
    if feasible:
        best = min(feasible)[1]
    else:  # closest to feasible: a bounded backlog first (waiting for ever has no grid use), then the least grid use
        best = min(range(len(table)), key=lambda i: (not table[i]["backlog_ok"], table[i]["grid_use_ratio"],
                                                     table[i]["total_cost"]))
    return candidates[best], table
