"""The reference controllers (serve-all, share rule, price rule) follow their documented rules through the one
roll-out loop; the price rule's tuning picks a feasible candidate when there is one and records every candidate."""

import numpy as np
import pytest

from baselines.rule_based import PriceRule, PriceRuleParams, ShareRule, tune_price_rule, unserved_after_battery
from cmarl_env.core import DemandResponseCore
from cmarl_env.evaluation import GridOnly, ServeAll, evaluation_config, judge, rollout


def scenario(dataset, n_agents=7, constraint=0.27, start=0, steps=300):
    return DemandResponseCore(evaluation_config(n_agents=n_agents, constraint=constraint, start_hour=start,
                                                steps=steps, n_hours=dataset.n_steps), dataset)


def recording(cls):
    """The controller ``cls`` plus a log, per hour, of the state it acted on, its actions and the signals."""

    class Recording(cls):
        def reset(self, core):
            super().reset(core)
            self.log = []

        def act(self, obs):
            core = self.core
            before = {"t": core.t, "unserved": unserved_after_battery(core), "backlog": core.backlog.copy(),
                      "price": core.price.copy()}
            actions = super().act(obs)
            self.log.append(before | {"actions": actions.copy()})
            return actions

        def observe(self, step):
            super().observe(step)
            self.log[-1] |= {"e_grid": step.signals.e_grid.copy(), "backlog_after": step.signals.backlog.copy()}

    return Recording


@pytest.mark.parametrize("n_agents, fraction", [(7, 0.27), (7, 0.15), (40, 0.27)])
def test_share_rule_keeps_every_running_average_within_the_share(dataset, n_agents, fraction):
    core = scenario(dataset, n_agents, fraction, start=500, steps=200)
    ctl = recording(ShareRule)()
    result = rollout(ctl, core, 500, 200)
    used = np.zeros(n_agents)
    capped = 0
    for k, rec in enumerate(ctl.log):
        assert rec["t"] == k
        budget = core.share * (k + 1) - used
        a, unserved, e = rec["actions"], rec["unserved"], rec["e_grid"]
        np.testing.assert_array_equal(a[:, 0], 1.0)                   # battery first
        np.testing.assert_array_equal(a[:, 1][unserved <= budget], 1.0)  # then all from the grid when it fits
        np.testing.assert_allclose(e, np.minimum(unserved, budget), rtol=1e-12, atol=1e-12)  # else what fits
        np.testing.assert_allclose(rec["backlog_after"], unserved - e, atol=1e-12)          # the rest waits
        used += e
        # every agent's running average grid use stays at or under its share c / N: exactly, up to the rounding
        # of float sums (measured overshoot: at most one ulp, 2e-16 kWh), not within the grid tolerance
        assert np.all(used / (k + 1) <= core.share * (1 + 1e-12)), (k, (used / (k + 1) - core.share).max())
        capped += int(np.any(unserved > budget))
    assert capped > 0  # the share binds for the double-demand agents: the check is not vacuous
    assert result.avg_grid <= core.grid_limit * (1 + 1e-12) and result.verdict.grid_ok
    assert result.total_grid.sum() == pytest.approx(used.sum())
    if fraction == 0.15:  # with an equal split the double-demand agents postpone without end
        assert not result.verdict.backlog_ok and "backlog slope" in result.verdict.reason


def test_price_rule_never_buys_at_peak_price_below_the_cap(dataset):
    params = PriceRuleParams(peak_price=0.4, backlog_cap=6.0)
    ctl = recording(PriceRule)(params)
    core = scenario(dataset, steps=600)
    result = rollout(ctl, core, 0, 600)
    waited = served_at_cap = 0
    for rec in ctl.log:
        peak, below_cap = rec["price"] >= params.peak_price, rec["backlog"] < params.backlog_cap
        np.testing.assert_array_equal(rec["actions"][:, 0], 1.0)   # battery always on
        np.testing.assert_array_equal(rec["e_grid"][peak & below_cap], 0.0)  # never buys at the peak price ...
        np.testing.assert_array_equal(rec["actions"][:, 1][~peak | ~below_cap], 1.0)  # ... else serves all
        np.testing.assert_allclose(rec["backlog_after"][~peak | ~below_cap], 0.0, atol=1e-9)
        waited += int((peak & below_cap & (rec["unserved"] > 0)).sum())
        served_at_cap += int((peak & ~below_cap).sum())
    assert waited > 0 and served_at_cap > 0  # both branches happen on these hours
    assert result.max_agent_backlog < params.backlog_cap + dataset.demand_kwh.max() * 2  # the cap bounds the backlog
    assert result.info["price_rule_params"] == params.to_dict()


def test_price_rule_wait_hours_wrap_midnight(dataset):
    params = PriceRuleParams(wait_from=22, wait_to=6, backlog_cap=1e6)  # no price test: only the hours of day
    ctl = recording(PriceRule)(params)
    core = scenario(dataset, steps=72)
    rollout(ctl, core, 0, 72)
    hours = np.asarray(dataset.hour[0:72]) % 24
    for rec, h in zip(ctl.log, hours):
        waiting = h >= 22 or h < 6
        np.testing.assert_array_equal(rec["actions"][:, 1], 0.0 if waiting else 1.0)
    with pytest.raises(ValueError, match="wait_to=24"):
        PriceRuleParams(wait_from=0, wait_to=24)
    assert PriceRuleParams.from_dict(PriceRuleParams().to_dict()) == PriceRuleParams()  # inf <-> null round trip


def test_serve_all_and_grid_only(dataset):
    core = scenario(dataset, steps=200)
    serve = rollout(ServeAll(), core, 0, 200)
    grid = rollout(GridOnly(), core, 0, 200)
    np.testing.assert_array_equal(serve.total_backlog, 0.0)  # never postpones
    np.testing.assert_array_equal(grid.total_backlog, 0.0)
    np.testing.assert_allclose(grid.total_grid, grid.total_demand)  # no battery: the grid serves every kWh
    assert np.all(serve.total_grid <= grid.total_grid + 1e-9) and serve.avg_grid < grid.avg_grid  # the battery helps
    assert serve.total_cost == serve.energy_cost_total < grid.total_cost


def test_tune_price_rule_picks_the_cheapest_feasible_candidate_and_records_the_table(dataset):
    """At c = 0.32 over hours [0, 600) serving everything is feasible, waiting for ever is not."""
    candidates = [PriceRuleParams(peak_price=0.0, backlog_cap=1e6),   # always waits: the backlog grows
                  PriceRuleParams(),                                   # never waits: serve-all
                  PriceRuleParams(peak_price=0.4, wait_from=17, wait_to=10, backlog_cap=64.0)]

    def make_core():
        return scenario(dataset, constraint=0.32, steps=600)

    best, table = tune_price_rule(make_core, 600, 0, candidates)
    assert len(table) == len(candidates)
    for params, row in zip(candidates, table):  # every candidate's own roll-out, judged by the one rule
        r = rollout(PriceRule(params), make_core(), 0, 600)
        v = judge(r.avg_grid, r.grid_limit, r.slope, 7)
        assert row["params"] == params.to_dict() and row["total_cost"] == pytest.approx(r.total_cost)
        assert row["feasible"] == v.feasible and row["grid_use_ratio"] == pytest.approx(v.grid_use_ratio)
    assert [row["feasible"] for row in table] == [False, True, True]
    assert best == candidates[2] and table[2]["total_cost"] < table[1]["total_cost"]
    # the demand left waiting at the end is charged: waiting for ever is not cheap
    assert table[0]["total_cost"] > table[1]["total_cost"]

    # none feasible (c = 0.2): the closest has a bounded backlog and the least grid use, not the one that never buys
    best, table = tune_price_rule(lambda: scenario(dataset, constraint=0.2, steps=600), 600, 0, candidates)
    assert not any(row["feasible"] for row in table)
    assert table[0]["grid_use_ratio"] == pytest.approx(0.0, abs=1e-9) and not table[0]["backlog_ok"]
    assert best == candidates[2]


def test_default_tuning_grid_runs_on_the_training_hours(dataset):
    best, table = tune_price_rule(lambda: scenario(dataset, constraint=0.27, steps=3000), 3000, 0)
    assert len(table) > 10 and best.to_dict() in [row["params"] for row in table]
    chosen = next(row for row in table if row["params"] == best.to_dict())
    assert chosen["feasible"] and chosen["total_cost"] == min(r["total_cost"] for r in table if r["feasible"])
