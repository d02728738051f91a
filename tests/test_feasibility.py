"""The one feasibility rule (cmarl_env.evaluation.feasibility): its edge cases, the per-agent backlog slope, when a
constraint level binds, and the value of the demand still waiting at the end of a roll-out."""

import re
from pathlib import Path

import numpy as np
import pytest

from cmarl_env.evaluation import (
    BACKLOG_SLOPE_LIMIT,
    GRID_TOLERANCE,
    Controller,
    Rollout,
    ServeAll,
    Verdict,
    backlog_slope,
    evaluation_config,
    is_binding,
    judge,
    rollout,
    terminal_backlog_value,
)

ROOT = Path(__file__).resolve().parents[1]


def up(x: float) -> float:
    """The next float above x: 'just above' a threshold."""
    return float(np.nextafter(x, np.inf))


# ----------------------------------------------------------------------------- grid use
@pytest.mark.parametrize("limit", [1.0, 8.0, 0.25])  # powers of two: avg / limit is exact
def test_grid_use_exactly_at_the_tolerance_is_feasible_and_just_above_is_not(limit):
    at = judge((1 + GRID_TOLERANCE) * limit, limit, 0.0, 7)
    assert at.grid_use_ratio == 1 + GRID_TOLERANCE
    assert at.grid_ok and at.feasible and at.reason == ""
    above = judge(up((1 + GRID_TOLERANCE) * limit), limit, 0.0, 7)
    assert above.grid_use_ratio > 1 + GRID_TOLERANCE
    assert not above.grid_ok and not above.feasible and above.backlog_ok
    assert above.reason.startswith("grid use 1.010 x limit > 1.01")
    assert judge(limit, limit, 0.0, 7).feasible and judge(0.0, limit, 0.0, 7).feasible  # at the limit, none at all


# ------------------------------------------------------------------------- backlog slope
def test_backlog_slope_exactly_at_the_threshold_is_feasible_and_just_above_is_not():
    at = judge(0.0, 1.0, BACKLOG_SLOPE_LIMIT, 1)
    assert at.backlog_slope_per_agent == BACKLOG_SLOPE_LIMIT and at.backlog_ok and at.feasible
    above = judge(0.0, 1.0, up(BACKLOG_SLOPE_LIMIT), 1)
    assert not above.backlog_ok and not above.feasible and above.grid_ok
    assert "backlog slope" in above.reason and "kWh/step/agent" in above.reason
    # a shrinking backlog is fine however fast it shrinks
    assert judge(0.0, 1.0, -100.0, 1).feasible


def test_the_slope_is_per_agent_same_total_slope_at_n_1_and_n_1000():
    total = 1.0  # kWh/step of total backlog growth
    one, thousand = judge(0.0, 1.0, total, 1), judge(0.0, 1.0, total, 1000)
    assert one.backlog_slope_per_agent == 1.0 and not one.feasible
    assert thousand.backlog_slope_per_agent == pytest.approx(0.001) and thousand.feasible
    # the threshold scales with N: N x the limit is the edge at every N
    for n in (1, 7, 1000, 1_000_000):
        assert judge(0.0, 1.0, BACKLOG_SLOPE_LIMIT * n, n).backlog_slope_per_agent == pytest.approx(BACKLOG_SLOPE_LIMIT)
        assert not judge(0.0, 1.0, BACKLOG_SLOPE_LIMIT * n * (1 + 1e-9), n).feasible


def _record(n_agents: int, total_backlog, grid=1.0, limit=1.0, prices=None) -> Rollout:
    b = np.asarray(total_backlog, dtype=np.float64)
    t = b.size
    return Rollout(controller="synthetic", start_hour=0, n_agents=n_agents, grid_limit=limit, peak_demand=4.0 * limit,
                   total_grid=np.full(t, grid), total_demand=np.full(t, grid), total_backlog=b,
                   energy_cost=np.full(t, 0.1 * grid), prices=np.full(t, 0.3) if prices is None else prices,
                   max_agent_backlog=float(b.max()))


def test_rollout_verdict_per_agent_at_n_1_and_n_1000():
    growing = np.arange(300.0)  # the total backlog grows 1 kWh/step
    assert backlog_slope(growing) == pytest.approx(1.0)
    small, large = _record(1, growing), _record(1000, growing)
    assert small.slope == large.slope == pytest.approx(1.0)
    assert not small.verdict.feasible and large.verdict.feasible
    m = small.metrics()
    assert m["feasible"] is False and m["infeasible"] is True and "backlog slope" in m["infeasible_reason"]
    assert m["backlog_slope_per_agent"] == pytest.approx(1.0) and large.metrics()["backlog_slope_per_agent"] == 0.001


def test_backlog_slope_is_fitted_on_the_last_third():
    assert backlog_slope(np.arange(30.0) * 0.5) == pytest.approx(0.5)
    assert backlog_slope(np.r_[np.zeros(20), np.full(10, 3.0)]) == pytest.approx(0.0)  # an early rise is forgiven
    assert backlog_slope(np.r_[np.zeros(20), np.arange(10.0)]) == pytest.approx(1.0)   # a late one is not
    assert backlog_slope([4.0]) == 0.0 and backlog_slope([]) == 0.0


def test_bad_inputs_and_non_finite_figures():
    with pytest.raises(ValueError, match="n_agents=0"):
        judge(1.0, 1.0, 0.0, 0)
    with pytest.raises(ValueError, match="n_agents=1.5"):
        judge(1.0, 1.0, 0.0, 1.5)
    for limit in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="grid_limit"):
            judge(1.0, limit, 0.0, 1)
    assert not judge(float("nan"), 1.0, 0.0, 1).feasible  # a diverged roll-out is never feasible
    assert not judge(1.0, 1.0, float("inf"), 1).feasible
    assert isinstance(judge(1.0, 1.0, 0.0, 1), Verdict)


# ------------------------------------------------------------------------------ binding
def test_is_binding():
    # the paper's data over hours [0, 3000): frontier 0.187, serve-all 0.208 of the peak
    assert not is_binding(0.27, 0.187, 0.208)   # serve-all meets 0.27: not binding
    assert is_binding(0.20, 0.187, 0.208)       # between the frontier and serve-all: binding
    assert not is_binding(0.18, 0.187, 0.208)   # below the frontier: no controller can meet it
    assert is_binding(0.187, 0.187, 0.208)      # at the frontier: still achievable
    # serve-all within the tolerance of the level meets it, so the level does not bind
    c = 0.2
    assert not is_binding(c, 0.187, c * (1 + GRID_TOLERANCE))
    assert is_binding(c, 0.187, up(c * (1 + GRID_TOLERANCE)))


# ---------------------------------------------------------------------- terminal backlog
def test_terminal_backlog_is_valued_at_the_horizons_highest_price():
    assert terminal_backlog_value(10.0, [0.2, 0.5, 0.3]) == pytest.approx(5.0)
    assert terminal_backlog_value(0.0, [0.2, 0.5]) == 0.0 and terminal_backlog_value(3.0, []) == 0.0
    r = _record(7, np.r_[np.zeros(10), np.full(5, 12.0)], prices=np.r_[np.full(14, 0.2), 0.6])
    assert r.backlog_value == pytest.approx(12.0 * 0.6)
    assert r.total_cost == pytest.approx(r.energy_cost_total + 12.0 * 0.6)
    m = r.metrics()
    assert m["terminal_backlog_value"] == pytest.approx(7.2) and m["total_cost"] == pytest.approx(m["energy_cost"] + 7.2)


class PostponeAll(Controller):
    name = "postpone_all"

    def act(self, obs):
        return np.zeros((obs.shape[0], 2))


def test_postponing_past_the_horizon_earns_nothing(dataset):
    """Waiting for ever buys nothing, but the waiting demand is charged at the highest price: never cheaper."""
    from cmarl_env.core import DemandResponseCore

    core = DemandResponseCore(evaluation_config(n_agents=7, constraint=0.27, start_hour=100, steps=48,
                                                n_hours=dataset.n_steps), dataset)
    wait = rollout(PostponeAll(), core, 100, 48)
    serve = rollout(ServeAll(), core, 100, 48)
    assert wait.energy_cost_total == 0.0 and wait.final_backlog == pytest.approx(wait.total_demand.sum())
    b = core.layout.building
    assert wait.backlog_value == pytest.approx(wait.final_backlog * dataset.price[b, 100:148].max())
    assert wait.total_cost >= serve.total_cost > 0
    assert not wait.verdict.feasible and "backlog slope" in wait.verdict.reason


# ------------------------------------------------------------------------------ one rule
def test_the_thresholds_are_defined_once():
    """No other module of the package defines its own tolerance or slope limit (the rule exists once)."""
    pattern = re.compile(r"^\s*(GRID_TOLERANCE|BACKLOG_SLOPE_LIMIT|BACKLOG_RATE_LIMIT)\s*[:=]", re.M)
    owners = []
    for folder in ("algorithms", "baselines", "benchmarks", "cmarl_env"):
        for path in (ROOT / folder).rglob("*.py"):
            if pattern.search(path.read_text()):
                owners.append(path.relative_to(ROOT).as_posix())
    assert owners == ["cmarl_env/evaluation/feasibility.py"]
