"""Aggregation with rliable against hand-computable cases: IQM, stratified-bootstrap intervals, probability of
improvement, ranking over the scenarios every ranked method ran."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import trim_mean

from benchmarks.aggregate import (
    RunRecord,
    Stat,
    aggregate,
    interval_estimate,
    load_aggregate,
    load_runs,
    probability_of_improvement,
    rank_methods,
    score_matrix,
)

REPS = 400


# --------------------------------------------------------------------------- score matrices
def test_score_matrix_is_runs_by_tasks_and_drops_missing_values():
    m = score_matrix([[1.0, 2.0, 3.0], [10.0, None, 20.0, float("nan"), 30.0]])
    assert m.shape == (3, 2)                               # runs x tasks
    assert m[:, 0].tolist() == [1.0, 2.0, 3.0] and m[:, 1].tolist() == [10.0, 20.0, 30.0]
    # tasks with different numbers of runs: the first min(n) runs of each
    assert score_matrix([[1.0, 2.0, 3.0], [4.0, 5.0]]).tolist() == [[1.0, 4.0], [2.0, 5.0]]
    assert score_matrix([[1.0], [None]]) is None           # a task without a finite value: no matrix
    assert score_matrix([]) is None


# --------------------------------------------------------------------------- IQM and intervals
@pytest.mark.parametrize("values, expected", [
    ([1, 2, 3, 4, 5, 6, 7, 8], 4.5),                      # mean of 3, 4, 5, 6
    ([1, 2, 3, 100], 2.5),                                 # mean of 2, 3
    ([8, 1, 100, 2, 3, 4, 7, 6, 5, -50], 4.5),             # cuts 2 per end: mean of 2..7
])
def test_iqm_hand_values(values, expected):
    st = interval_estimate(np.array(values, dtype=float)[:, None], reps=REPS)
    assert st.iqm == pytest.approx(expected)
    assert st.n == len(values) and st.values == [float(v) for v in values]


def test_iqm_of_a_matrix_pools_runs_and_tasks_like_trim_mean():
    rng = np.random.default_rng(7)
    m = rng.normal(size=(5, 3)) * np.array([1.0, 10.0, 100.0])
    st = interval_estimate(m, reps=REPS)
    assert st.iqm == pytest.approx(trim_mean(m.ravel(), 0.25))
    assert st.n == 5                                       # runs, not runs x tasks
    # 4 runs x 2 tasks: 8 values, 2 cut per end -> mean of 3, 4, 10, 20
    assert interval_estimate(np.array([[1, 10], [2, 20], [3, 30], [4, 40]], float), reps=REPS).iqm == 9.25


def test_interval_contains_the_point_and_is_reproducible():
    m = np.random.default_rng(3).normal(10.0, 2.0, size=(20, 1))
    a = interval_estimate(m, reps=REPS, seed=3)
    assert a.ci_low < a.iqm < a.ci_high
    b = interval_estimate(m, reps=REPS, seed=3)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)  # the same seed gives the same interval
    c = interval_estimate(m, reps=REPS, seed=4)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    # the caller's global numpy generator is left as it was
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    interval_estimate(m, reps=REPS, seed=3)
    assert np.random.random() == expected


def test_two_point_interval_is_the_whole_range():
    # runs {0, 1}: the resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4,
    # so the 2.5 and 97.5 percentiles are 0 and 1
    st = interval_estimate(np.array([[0.0], [1.0]]), reps=4000, seed=1)
    assert (st.iqm, st.ci_low, st.ci_high) == (0.5, 0.0, 1.0)


def test_bootstrap_is_stratified_by_task():
    # task 0 runs {0, 1}, task 1 runs {10, 11}: every stratified resample keeps two values of each task, so the IQM
    # of the four (the mean of the middle two: max of task 0, min of task 1) lies in [5, 6]
    st = interval_estimate(np.array([[0.0, 10.0], [1.0, 11.0]]), reps=REPS)
    assert st.iqm == 5.5 and 5.0 <= st.ci_low < st.ci_high <= 6.0
    # the same values as one task (4 runs) are resampled across the two groups: a much wider interval
    pooled = interval_estimate(np.array([[0.0], [1.0], [10.0], [11.0]]), reps=REPS)
    assert pooled.iqm == 5.5 and pooled.ci_low < 5.0 and pooled.ci_high > 6.0


def test_degenerate_intervals():
    one_run = interval_estimate(np.array([[7.0, 9.0]]), reps=REPS)
    assert (one_run.iqm, one_run.ci_low, one_run.ci_high, one_run.n) == (8.0, 8.0, 8.0, 1)
    equal_runs = interval_estimate(np.full((4, 2), 3.0), reps=REPS)
    assert (equal_runs.iqm, equal_runs.ci_low, equal_runs.ci_high) == (3.0, 3.0, 3.0)
    no_interval = interval_estimate(np.array([[1.0], [2.0], [3.0]]), interval=False)
    assert no_interval.iqm == 2.0 and math.isnan(no_interval.ci_low) and math.isnan(no_interval.ci_high)
    equal_no_interval = interval_estimate(np.full((3, 1), 4.0), interval=False)   # not bootstrapped: no interval
    assert equal_no_interval.iqm == 4.0 and math.isnan(equal_no_interval.ci_low)
    empty = interval_estimate(None)
    assert empty.n == 0 and math.isnan(empty.iqm)


# --------------------------------------------------------------------------- probability of improvement
def test_probability_of_improvement_clear_cut_cases():
    lo = np.array([[1.0, 5.0], [2.0, 6.0], [3.0, 7.0]])
    hi = lo + 10.0
    better = probability_of_improvement(hi, lo, reps=REPS)
    assert (better.iqm, better.ci_low, better.ci_high) == (1.0, 1.0, 1.0)
    worse = probability_of_improvement(lo, hi, reps=REPS)
    assert (worse.iqm, worse.ci_low, worse.ci_high) == (0.0, 0.0, 0.0)
    assert probability_of_improvement(lo, lo.copy(), reps=REPS).iqm == 0.5
    # better on one task, worse on the other: the mean over tasks
    mixed = np.column_stack([hi[:, 0], lo[:, 1] - 10.0])
    assert probability_of_improvement(mixed, lo, reps=REPS).iqm == 0.5
    # x = {1, 3}, y = {2, 4}: of the four pairs only (3, 2) has x > y
    assert probability_of_improvement(np.array([[1.0], [3.0]]), np.array([[2.0], [4.0]]), reps=REPS).iqm == 0.25


def test_probability_of_improvement_interval():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.3, 1.0, size=(8, 2)), rng.normal(0.0, 1.0, size=(8, 2))
    a = probability_of_improvement(x, y, reps=REPS, seed=5)
    assert 0.0 <= a.ci_low <= a.iqm <= a.ci_high <= 1.0 and a.ci_low < a.ci_high
    b = probability_of_improvement(x, y, reps=REPS, seed=5)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.n == 16
    single = probability_of_improvement(np.array([[2.0]]), np.array([[1.0]]))
    assert (single.iqm, single.ci_low, single.ci_high) == (1.0, 1.0, 1.0)


# --------------------------------------------------------------------------- ranking
def _stats(inf, ratio, cost=1.0):
    return {"infeasible_fraction": Stat(inf, inf, inf, 3), "cost_ratio": Stat(ratio, ratio, ratio, 3),
            "total_cost": Stat(cost, cost, cost, 3)}


def test_rank_ties_share_positions():
    ranks = rank_methods({"a": _stats(0.0, 1.2), "b": _stats(0.0, 1.1), "c": _stats(0.0, 1.2), "d": _stats(0.5, 1.0)})
    assert ranks == {"b": 1.0, "a": 2.5, "c": 2.5, "d": 4.0}


def test_rank_falls_back_to_total_cost_without_an_lp():
    no_lp = Stat(math.nan, math.nan, math.nan, 0)
    a, b = _stats(0.0, 0.0, cost=300.0), _stats(0.0, 0.0, cost=200.0)
    a["cost_ratio"] = b["cost_ratio"] = no_lp
    assert rank_methods({"a": a, "b": b}) == {"b": 1.0, "a": 2.0}


# --------------------------------------------------------------------------- aggregate
def _record(scenario, method, seed, kind="rule_based", reference=False, **metrics):
    m = {"format": "cmarl-bench-run/2", "run_id": f"{scenario}/{method}/seed_{seed}", "scenario": scenario,
         "method": method, "seed": seed, "kind": kind, "reference": reference, "label": method.upper(),
         "budget": "none", "budget_detail": "none", "note": "", "n_rollouts": 2, "grid_limit": 7.0} | metrics
    return RunRecord(m["run_id"], scenario, method, seed, m, Path("/nonexistent"),
                     {"scenario": {"n_agents": 7, "graph": "ring", "constraint": 0.3, "steps": 24, "label": "x"}})


def test_aggregate_hand_computed():
    recs = []
    # scenario s1: a is feasible with cost ratios 1.1, 1.2, 1.3, 5.0 (seeds 0..3) -> IQM 1.25
    for seed, ratio in enumerate([1.1, 1.2, 1.3, 5.0]):
        recs.append(_record("s1", "a", seed, infeasible_fraction=0.0, cost_ratio=ratio, total_cost=100 * ratio,
                            max_agent_backlog_kwh=float(seed)))
    for seed in range(4):
        recs.append(_record("s1", "b", seed, infeasible_fraction=0.5, cost_ratio=1.0, total_cost=100.0))
        recs.append(_record("s1", "lp", seed, kind="lp_oracle", reference=True, infeasible_fraction=0.0,
                            cost_ratio=1.0, total_cost=90.0))
    # scenario s2: only b ran it (a did not), where b is cheaper than anything in s1
    for seed in range(2):
        recs.append(_record("s2", "b", seed, infeasible_fraction=0.0, cost_ratio=0.5 + seed, total_cost=1.0))
    facts = {"s1": {"lp_frontier": 0.18, "serve_all_grid": 0.21, "binding": True}}
    agg = aggregate(recs, reps=REPS, scenario_facts=facts)
    a = agg.per_scenario["s1"]["a"]
    assert a["cost_ratio"].iqm == pytest.approx(1.25) and a["cost_ratio"].n == 4
    assert a["cost_ratio"].ci_low <= 1.25 <= a["cost_ratio"].ci_high
    assert a["total_cost"].iqm == pytest.approx(125.0)
    assert a["infeasible_fraction"].iqm == 0.0
    assert a["max_agent_backlog_kwh"].iqm == 1.5 and math.isnan(a["max_agent_backlog_kwh"].ci_low)  # no interval
    assert "a" not in agg.per_scenario["s2"]
    assert agg.ranks["s1"] == {"a": 1.0, "b": 2.0}           # a is feasible, b is not; lp is a reference
    assert agg.ranks["s2"] == {"b": 1.0}
    # the overall ranking uses s1 only: a did not run s2
    assert agg.common_scenarios == ["s1"]
    assert agg.mean_rank == {"a": 1.0, "b": 2.0}
    assert agg.ranking == ["a", "b"]
    assert agg.overall["b"]["cost_ratio"].iqm == 1.0 and agg.overall["b"]["cost_ratio"].values == [1.0] * 4
    assert agg.overall["lp"]["total_cost"].iqm == 90.0   # references: over the common scenarios they ran
    assert agg.ours is None and agg.improvement == {}    # no dual-consensus run
    assert agg.seeds["s1"]["a"] == [0, 1, 2, 3] and agg.seeds["s2"] == {"b": [0, 1]}
    assert agg.methods["lp"].reference and agg.methods["a"].label == "A"
    # scenario facts: the spec's fields, the runs' grid limit and the runner's facts
    assert agg.scenario_facts["s1"]["lp_frontier"] == 0.18 and agg.scenario_facts["s1"]["binding"] is True
    assert agg.scenario_facts["s1"]["grid_limit"] == 7.0 and agg.scenario_facts["s1"]["rollouts"] == 2
    assert agg.scenario_facts["s2"]["label"] == "x" and "lp_frontier" not in agg.scenario_facts["s2"]
    d = json.loads(json.dumps(agg.to_dict(), allow_nan=False))   # strict JSON: no NaN
    assert d["ranking"] == ["a", "b"] and d["common_scenarios"] == ["s1"]
    assert d["per_scenario"]["s1"]["a"]["cost_ratio"]["iqm"] == pytest.approx(1.25)
    assert d["per_scenario"]["s1"]["a"]["max_agent_backlog_kwh"]["ci_low"] is None


def test_overall_statistics_are_stratified_over_the_common_scenarios():
    recs = []
    for seed in range(4):
        recs.append(_record("s1", "ours", seed, kind="consensus", infeasible_fraction=0.0, cost_ratio=1.0 + seed,
                            total_cost=1.0))
        recs.append(_record("s2", "ours", seed, kind="consensus", infeasible_fraction=0.0, cost_ratio=10.0 * (1 + seed),
                            total_cost=1.0))
        recs.append(_record("s1", "base", seed, kind="mappo", infeasible_fraction=0.0, cost_ratio=100.0 + seed,
                            total_cost=1.0))
        recs.append(_record("s2", "base", seed, kind="mappo", infeasible_fraction=0.0, cost_ratio=100.0 + seed,
                            total_cost=1.0))
    agg = aggregate(recs, reps=REPS)
    assert agg.common_scenarios == ["s1", "s2"]
    ours = agg.overall["ours"]["cost_ratio"]
    # 4 runs x 2 scenarios: the IQM of all eight values (1, 2, 3, 4, 10, 20, 30, 40) cuts two per end
    assert ours.iqm == pytest.approx(np.mean([3, 4, 10, 20])) and ours.n == 4
    assert ours.ci_low <= ours.iqm <= ours.ci_high
    expected = interval_estimate(np.array([[1, 10], [2, 20], [3, 30], [4, 40]], float), reps=REPS)
    assert (ours.ci_low, ours.ci_high) == (expected.ci_low, expected.ci_high)
    assert agg.ranking == ["ours", "base"] and agg.mean_rank == {"ours": 1.0, "base": 2.0}
    # ours is cheaper than base in every run of both scenarios: P(ours better) = 1
    assert agg.ours == "ours" and agg.improvement["base"].iqm == 1.0


def test_improvement_score_penalises_infeasibility_and_ties_are_even():
    recs = []
    for seed in range(3):
        recs.append(_record("s", "ours", seed, kind="consensus", infeasible_fraction=0.0, cost_ratio=1.5))
        recs.append(_record("s", "cheap", seed, infeasible_fraction=0.5, cost_ratio=1.0))     # cheaper, infeasible
        recs.append(_record("s", "same", seed, infeasible_fraction=0.0, cost_ratio=1.5))      # identical scores
        recs.append(_record("s", "better", seed, infeasible_fraction=0.0, cost_ratio=1.2))
    agg = aggregate(recs, reps=REPS)
    assert agg.improvement["cheap"].iqm == 1.0
    assert agg.improvement["same"].iqm == 0.5
    assert agg.improvement["better"].iqm == 0.0
    assert "ours" not in agg.improvement
    assert agg.ranks["s"] == {"better": 1.0, "ours": 2.5, "same": 2.5, "cheap": 4.0}


def test_no_common_scenario_means_no_overall_ranking():
    recs = [_record("s1", "a", 0, infeasible_fraction=0.0, cost_ratio=1.0),
            _record("s2", "b", 0, infeasible_fraction=0.0, cost_ratio=1.0)]
    agg = aggregate(recs, reps=REPS)
    assert agg.common_scenarios == [] and agg.ranking == [] and agg.mean_rank == {}
    assert agg.ranks == {"s1": {"a": 1.0}, "s2": {"b": 1.0}}


def test_load_runs_reads_current_runs_and_failures(tmp_path):
    def write(run_id, metrics=None, error=None):
        folder = tmp_path / "runs" / run_id
        folder.mkdir(parents=True)
        if metrics is not None:
            (folder / "metrics.json").write_text(json.dumps(metrics))
        if error is not None:
            (folder / "error.json").write_text(json.dumps(error))

    good = _record("s", "a", 0, infeasible_fraction=0.0, cost_ratio=1.2).metrics
    write("s/a/seed_0", good)
    write("s/old/seed_0", good | {"format": "cmarl-bench-run/1", "method": "old"})   # an earlier format: ignored
    write("s/b/seed_1", error={"run_id": "s/b/seed_1", "error_type": "RuntimeError", "error": "boom"})
    write("s/c/seed_0", good | {"run_id": "s/c/seed_0", "method": "c"}, error={"error": "stale"})  # fixed since
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "s.json").write_text(json.dumps({"lp_frontier": 0.2, "serve_all_grid": 0.3}))
    records, failures = load_runs(tmp_path)
    assert sorted(r.method for r in records) == ["a", "c"]
    assert [(f.run_id, f.error) for f in failures] == [("s/b/seed_1", "RuntimeError: boom")]
    agg = load_aggregate(tmp_path, reps=REPS)
    assert agg.scenario_facts["s"]["lp_frontier"] == 0.2 and len(agg.failures) == 1
