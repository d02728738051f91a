"""Aggregation maths against hand-computed values: IQM, stratified bootstrap CIs, ranking."""

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.aggregate import (
    RunRecord,
    aggregate,
    iqm,
    rank_methods,
    stratified_bootstrap_ci,
    summarize_values,
)


def test_iqm_hand_values():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)      # mean of 3, 4, 5, 6
    assert iqm([1, 2, 3, 100]) == pytest.approx(2.5)                 # mean of 2, 3
    assert iqm([8, 1, 100, 2, 3, 4, 7, 6, 5, -50]) == pytest.approx((3 + 4 + 5 + 6 + 7 + 2) / 6)  # cuts 2 per end
    assert iqm([4.0, 6.0, 11.0]) == pytest.approx(7.0)               # n < 4: nothing cut
    assert iqm([5.0]) == 5.0
    assert math.isnan(iqm([]))
    rows = np.array([[1, 2, 3, 100], [1, 2, 3, 4]], dtype=float)
    assert np.allclose(iqm(rows, axis=1), [2.5, 2.5])


def test_bootstrap_degenerate_and_two_point():
    assert stratified_bootstrap_ci([[3.0, 3.0, 3.0]]) == (3.0, 3.0)
    assert stratified_bootstrap_ci([[7.0]]) == (7.0, 7.0)
    # two values {0, 1}: the resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4,
    # so the 2.5 and 97.5 percentiles are 0 and 1
    lo, hi = stratified_bootstrap_ci([[0.0, 1.0]], reps=4000, seed=1)
    assert (lo, hi) == (0.0, 1.0)


def test_bootstrap_percentiles_of_the_max():
    # max of 3 draws from {1, 2, 3}: P(max = 1) = 1/27 = 3.7 % > 2.5 %  -> lower bound 1;
    # P(max = 3) = 19/27 -> upper bound 3
    lo, hi = stratified_bootstrap_ci([[1.0, 2.0, 3.0]], statistic=lambda a, axis: np.max(a, axis=axis), reps=20000)
    assert (lo, hi) == (1.0, 3.0)


def test_stratification_keeps_strata_sizes():
    # strata {0, 0} and {10, 10}: every stratified resample keeps two of each -> the mean is always 5
    assert stratified_bootstrap_ci([[0.0, 0.0], [10.0, 10.0]], statistic=lambda a, axis: a.mean(axis=axis)) == (5.0, 5.0)
    # pooled into one stratum the same values vary
    lo, hi = stratified_bootstrap_ci([[0.0, 0.0, 10.0, 10.0]], statistic=lambda a, axis: a.mean(axis=axis))
    assert lo < 5.0 < hi
    # empty strata are ignored; nothing at all gives NaN
    assert stratified_bootstrap_ci([[], [2.0, 2.0]]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in stratified_bootstrap_ci([[], []]))


def test_bootstrap_reproducible_and_contains_iqm():
    rng = np.random.default_rng(0)
    x = rng.normal(10, 2, size=20)
    a = stratified_bootstrap_ci([x], seed=3)
    assert a == stratified_bootstrap_ci([x], seed=3)
    assert a[0] < iqm(x) < a[1]
    with pytest.raises(ValueError, match="confidence"):
        stratified_bootstrap_ci([x], confidence=1.5)


def test_summarize_drops_missing_values():
    st = summarize_values([[1.0, None, float("nan"), 3.0]])
    assert st.n == 2 and st.iqm == pytest.approx(2.0) and st.values == [1.0, 3.0]
    assert summarize_values([[None]]).n == 0


def test_rank_ties_share_positions():
    from benchmarks.aggregate import Stat

    def s(inf, ratio):
        return {"infeasible_fraction": Stat(inf, inf, inf, 3), "cost_ratio": Stat(ratio, ratio, ratio, 3),
                "mean_cost": Stat(1.0, 1.0, 1.0, 3)}

    ranks = rank_methods({"a": s(0.0, 1.2), "b": s(0.0, 1.1), "c": s(0.0, 1.2), "d": s(0.5, 1.0)})
    assert ranks == {"b": 1.0, "a": 2.5, "c": 2.5, "d": 4.0}


def _record(scenario, method, seed, kind="rule_based", reference=False, **metrics):
    m = {"run_id": f"{scenario}/{method}/seed_{seed}", "scenario": scenario, "method": method, "seed": seed,
         "kind": kind, "reference": reference, "label": method, "budget": "none", "budget_detail": "none",
         "note": "", "n_rollouts": 10, "grid_limit": 7.0} | metrics
    return RunRecord(m["run_id"], scenario, method, seed, m, Path("/nonexistent"),
                     {"scenario": {"n_agents": 7, "graph": "ring", "constraint": 0.3, "steps": 24}})


def test_aggregate_hand_computed():
    recs = []
    # scenario s1: method a has infeasible 0 and cost ratios 1.1, 1.2, 1.3, 5.0 (seeds 0..3) -> IQM 1.25
    for seed, ratio in enumerate([1.1, 1.2, 1.3, 5.0]):
        recs.append(_record("s1", "a", seed, infeasible_fraction=0.0, cost_ratio=ratio, mean_cost=100 * ratio))
    for seed, ratio in enumerate([1.0, 1.0, 1.0, 1.0]):
        recs.append(_record("s1", "b", seed, infeasible_fraction=0.5, cost_ratio=ratio, mean_cost=100.0))
        recs.append(_record("s1", "lp", seed, kind="lp_oracle", reference=True, infeasible_fraction=0.0,
                            cost_ratio=1.0, mean_cost=90.0))
    # scenario s2: only b, always feasible; a absent
    for seed in range(2):
        recs.append(_record("s2", "b", seed, infeasible_fraction=0.0, cost_ratio=2.0 + seed, mean_cost=1.0))
    agg = aggregate(recs, reps=500)
    a = agg.per_scenario["s1"]["a"]
    assert a["cost_ratio"].iqm == pytest.approx(1.25)
    assert a["cost_ratio"].n == 4
    assert a["infeasible_fraction"].iqm == 0.0
    assert agg.per_scenario["s1"]["a"]["mean_cost"].iqm == pytest.approx(125.0)
    assert "a" not in agg.per_scenario["s2"]
    assert agg.ranks["s1"] == {"a": 1.0, "b": 2.0}           # a is feasible, b is not; lp is a reference
    assert agg.ranks["s2"] == {"b": 1.0}
    assert agg.mean_rank == {"a": 1.0, "b": 1.5}
    assert agg.ranking == ["a", "b"]
    # pooled over scenarios (strata): b's ratios 1, 1, 1, 1 and 2, 3 -> IQM of 6 values cuts 1 per end
    assert agg.overall["b"]["cost_ratio"].iqm == pytest.approx(np.mean([1, 1, 1, 2]))
    assert agg.overall["b"]["cost_ratio"].n == 6
    assert agg.seeds["s1"]["a"] == [0, 1, 2, 3]
    assert agg.methods["lp"].reference
    d = agg.to_dict()
    assert d["ranking"] == ["a", "b"] and d["per_scenario"]["s1"]["a"]["cost_ratio"]["iqm"] == pytest.approx(1.25)
