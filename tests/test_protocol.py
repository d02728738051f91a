"""The evaluation protocol end to end: every registered method through the one roll-out loop, the ranking over
common scenarios, binding scenarios, and a user's own controller in a suite file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import registry
from benchmarks.aggregate import RunRecord, aggregate
from benchmarks.runner import run_suite, scenario_facts
from benchmarks.suite import ScenarioSpec, load_suite, parse_suite
from cmarl_env.evaluation import GRID_TOLERANCE

pytest.importorskip("torch")

TINY = {"n_agents": 7, "graph": "two_clusters", "constraint": 0.6, "steps": 24, "start_jitter": 0,
        "record_agents": 7}
MARL_TINY = {"total_steps": 160, "episode_length": 16, "eval_episodes": 1}


def _method(kind: str) -> dict:
    if kind == "ippo":
        return {"kind": kind, "budget": "short", "params": {"total_steps": 640}}
    if registry.get(kind).trains:
        return {"kind": kind, "budget": "short", "params": dict(MARL_TINY)}
    if kind == "controller":
        return {"kind": kind, "params": {"path": str(Path(__file__).parent / "data" / "user_controller.py"),
                                         "class": "HalfGrid"}}
    return {"kind": kind}


def test_every_registered_method_runs_through_the_one_rollout_loop(tmp_path, monkeypatch):
    import benchmarks.run as run_module

    calls: list[str] = []
    real = run_module.rollout

    def counting_rollout(controller, core, start_hour, steps, **kw):
        calls.append(type(controller).__name__)
        return real(controller, core, start_hour, steps, **kw)

    monkeypatch.setattr(run_module, "rollout", counting_rollout)
    kinds = registry.kinds()
    suite = parse_suite({"name": "every", "defaults": {"scenario": TINY, "seeds": [0], "rollouts": 1, "oracle": True},
                         "methods": {k: _method(k) for k in kinds},
                         "experiments": [{"name": "all", "methods": list(kinds)}]})
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert report.failed == [], [json.loads((tmp_path / "runs" / r.replace("/", "/", 2) / "error.json").read_text())
                                 ["error"] for r in report.failed]
    controllers = [k for k in kinds if not registry.get(k).reference]
    assert len(calls) == len(controllers)  # one roll-out each, all through the one loop; the LP is no controller
    for kind in kinds:
        m = json.loads((tmp_path / "runs" / "two_clusters_n7_c0.6" / kind / "seed_0" / "metrics.json").read_text())
        rollouts = json.loads((tmp_path / "runs" / "two_clusters_n7_c0.6" / kind / "seed_0" / "rollouts.json")
                              .read_text())
        assert m["infeasible_fraction"] == float(rollouts[0]["infeasible"])
        assert m["total_cost"] == pytest.approx(rollouts[0]["total_cost"])
        assert m["grid_limit"] == pytest.approx(rollouts[0]["grid_limit"])
        assert m["cost_ratio"] == pytest.approx(rollouts[0]["total_cost"] / rollouts[0]["lp_cost"])


def _record(scenario: str, method: str, kind: str, seed: int, cost: float, infeasible: float = 0.0) -> RunRecord:
    metrics = {"kind": kind, "label": method, "reference": False, "cost_ratio": cost, "total_cost": cost,
               "infeasible_fraction": infeasible, "grid_use_ratio": 0.9}
    return RunRecord(f"{scenario}/{method}/seed_{seed}", scenario, method, seed, metrics, Path("."), {})


def test_ranking_ignores_scenarios_a_ranked_method_did_not_run():
    recs = []
    for seed in (0, 1, 2):
        recs += [_record("a", "ours", "consensus", seed, 1.5 + 0.01 * seed),
                 _record("a", "base", "mappo", seed, 1.2 + 0.01 * seed)]
        # only ours ran scenario b, where it is much better than anything: b must not count in the overall ranking
        recs.append(_record("b", "ours", "consensus", seed, 0.5))
    agg = aggregate(recs, reps=200)
    assert agg.common_scenarios == ["a"]
    assert agg.ranking == ["base", "ours"]
    assert agg.mean_rank == {"base": 1.0, "ours": 2.0}
    assert agg.improvement["base"].iqm == pytest.approx(0.0)  # ours is never better on a
    assert agg.overall["ours"]["cost_ratio"].n == 3 and max(agg.overall["ours"]["cost_ratio"].values) < 1.6


def test_infeasible_runs_rank_below_feasible_ones_whatever_their_cost():
    recs = [_record("a", "cheap", "random", 0, 0.5, infeasible=1.0), _record("a", "ours", "consensus", 0, 1.4)]
    agg = aggregate(recs, reps=200)
    assert agg.ranking == ["ours", "cheap"]
    assert agg.improvement["cheap"].iqm == 1.0


def test_binding_scenario_has_its_frontier_below_and_serve_all_above_the_level():
    sc = ScenarioSpec(name="binding", n_agents=7, constraint=0.20, steps=3000, start_hour=0)
    facts = scenario_facts(sc)
    assert facts["lp_frontier"] < 0.20 < facts["serve_all_grid"] / (1 + GRID_TOLERANCE)
    assert facts["binding"] is True
    paper = scenario_facts(ScenarioSpec(name="paper", n_agents=7, constraint=0.27, steps=3000, start_hour=0))
    assert paper["binding"] is False and paper["serve_all_grid"] < 0.27
    assert paper["lp_frontier"] == pytest.approx(facts["lp_frontier"])


def test_calibrated_level_lies_between_the_frontier_and_serve_all_and_is_recorded(tmp_path):
    suite = parse_suite({"name": "cal", "defaults": {"scenario": dict(TINY, n_agents=40, graph="ring", steps=200,
                                                                         constraint="calibrated", calibrate=0.5),
                                                     "seeds": [0], "rollouts": 1, "oracle": False},
                         "methods": {"serve_all": {"kind": "serve_all"}},
                         "experiments": [{"name": "x", "methods": ["serve_all"]}]})
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert report.failed == []
    facts = json.loads(next((tmp_path / "scenarios").glob("*.json")).read_text())
    assert facts["lp_frontier"] < facts["constraint"] < facts["serve_all_grid"]
    assert facts["constraint"] == pytest.approx((facts["lp_frontier"] + facts["serve_all_grid"]) / 2)
    assert facts["binding"] is True
    metrics = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert metrics["constraint"] == pytest.approx(facts["constraint"])
    assert metrics["grid_use_ratio"] > 1.0 + GRID_TOLERANCE and metrics["infeasible_fraction"] == 1.0


def test_a_users_controller_in_a_suite_file(tmp_path):
    (tmp_path / "mine.py").write_text((Path(__file__).parent / "data" / "user_controller.py").read_text())
    (tmp_path / "suite.json").write_text(json.dumps({
        "name": "mine", "defaults": {"scenario": TINY, "seeds": [0], "rollouts": 2, "oracle": False},
        "methods": {"half": {"kind": "controller", "params": {"path": "mine.py", "class": "HalfGrid",
                                                               "kwargs": {"fraction": 0.5}}},
                    "serve_all": {"kind": "serve_all"}},
        "experiments": [{"name": "x", "methods": ["half", "serve_all"]}]}))
    suite = load_suite(tmp_path / "suite.json")
    report = run_suite(suite, tmp_path / "out", backend="serial", progress=False)
    assert report.failed == []
    half = json.loads((tmp_path / "out/runs/two_clusters_n7_c0.6/half/seed_0/metrics.json").read_text())
    full = json.loads((tmp_path / "out/runs/two_clusters_n7_c0.6/serve_all/seed_0/metrics.json").read_text())
    assert half["avg_grid_consumption"] < full["avg_grid_consumption"]
    assert half["final_backlog_kwh"] > 0.0


def test_registry_rejects_unknown_and_duplicate_kinds():
    with pytest.raises(ValueError, match="not registered"):
        registry.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.MethodDef(kind="serve_all", label="x", prepare=lambda s, c: None))
