"""The rule-based reference controller follows its documented rule; rollout metrics."""

import numpy as np
import pytest

from baselines.rule_based import GridOnly, RuleBasedController, _least_squares_slope, rollout
from cmarl_env import EnvConfig
from cmarl_env.core import DemandResponseCore


@pytest.mark.parametrize("n_agents, fraction", [(7, 0.27), (7, 0.15), (40, 0.27)])
def test_rule_is_battery_first_then_grid_within_the_running_share(dataset, n_agents, fraction):
    core = DemandResponseCore(EnvConfig(n_agents=n_agents, constraint_fraction=fraction), dataset)
    core.reset(seed=0, start_hour=500)
    ctl = RuleBasedController()
    used = np.zeros(n_agents)
    capped_steps = 0
    for k in range(150):
        unserved = ctl.unserved_after_battery(core)
        budget = core.share * (k + 1) - used
        a = ctl.act(core)
        assert a.shape == (n_agents, 2)
        np.testing.assert_array_equal(a[:, 0], 1.0)  # battery first
        np.testing.assert_array_equal(a[:, 1][unserved <= budget], 1.0)  # then all from the grid if it fits
        np.testing.assert_array_equal(ctl.act(core), a)  # asking twice in a step changes nothing
        out = core.step(a)
        s = out.signals
        assert np.all(s.backlog >= 0.0)
        np.testing.assert_allclose(s.backlog, unserved - s.e_grid, atol=1e-12)
        # grid use is whatever fits in the share budget; the rest waits
        np.testing.assert_allclose(s.e_grid, np.minimum(unserved, budget), rtol=1e-12, atol=1e-12)
        used += s.e_grid
        assert np.all(used <= core.share * (k + 1) * (1 + 1e-12))
        capped_steps += int(np.any(unserved > budget))
    assert capped_steps > 0  # the share binds for the double-demand agents


def test_act_must_follow_the_steps(dataset):
    core = DemandResponseCore(EnvConfig(), dataset)
    core.reset(seed=0, start_hour=0)
    ctl = RuleBasedController()
    core.step(ctl.act(core))
    core.step(np.ones((7, 2)))
    with pytest.raises(RuntimeError, match="before every step"):
        ctl.act(core)
    fresh = RuleBasedController()
    with pytest.raises(RuntimeError, match="step 0"):
        fresh.act(core)
    core.reset(seed=0, start_hour=0)  # a new episode restarts the running totals
    assert ctl.act(core).shape == (7, 2)


def test_rollout_metrics(dataset):
    core = DemandResponseCore(EnvConfig(), dataset)
    m = rollout(RuleBasedController(), core, 300, 0, trace=True)
    assert m["avg_grid_consumption"] <= m["grid_limit"] + 1e-9 and m["constraint_satisfied"]
    assert m["min_backlog_kwh"] >= 0.0
    assert m["final_backlog_kwh"] == pytest.approx(m["total_backlog"][-1])
    assert m["total_cost"] == pytest.approx(float((m["cost"]).sum())) and m["total_cost"] > 0
    assert np.all(np.asarray(m["per_agent_avg_grid"]) <= core.share + 1e-9)
    # the equal share starves the double-demand agents: their backlog keeps growing
    assert m["backlog_slope_kwh_per_step"] > 0
    tail = m["total_backlog"][-100:]
    assert m["backlog_slope_kwh_per_step"] == pytest.approx(np.polyfit(np.arange(100), tail, 1)[0])

    g = rollout(GridOnly(), core, 100, 0, trace=True)
    assert g["final_backlog_kwh"] == 0.0 and g["backlog_slope_kwh_per_step"] == 0.0
    np.testing.assert_array_equal(g["e_bat"], 0.0)
    assert g["avg_grid_consumption"] > m["avg_grid_consumption"]
    with pytest.raises(ValueError, match="allowed: 1..3000"):
        rollout(GridOnly(), core, 3001, 0)


def test_least_squares_slope():
    assert _least_squares_slope(np.array([1.0, 3.0, 5.0, 7.0])) == pytest.approx(2.0)
    assert _least_squares_slope(np.array([4.0])) == 0.0
