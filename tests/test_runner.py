"""The runner: run folders, failures recorded, resume after an interruption, Ray execution, method metrics."""

import json

import numpy as np
import pytest

from benchmarks import methods as M
from benchmarks.runner import plan, run_dir, run_suite
from benchmarks.suite import parse_suite

SMALL = {
    "name": "small",
    "defaults": {"scenario": {"steps": 48, "start_jitter": 24, "start_hour": 100}, "seeds": [0, 1], "rollouts": 2,
                 "oracle": False},
    "methods": {"rule": {"kind": "rule_based"}, "grid": {"kind": "grid_only"}},
    "experiments": [{"name": "main", "methods": ["rule", "grid"]}],
}


def fake_output(spec, steps=None):
    steps = steps or spec.scenario.steps
    recs = [M.rollout_record(k, h, np.full(steps, 5.0), np.zeros(steps), np.full(steps, 0.5), 6.0)
            for k, h in enumerate(spec.start_hours)]
    traj = {"total_grid": np.full(steps, 5.0), "total_demand": np.full(steps, 6.0), "total_backlog": np.zeros(steps),
            "cost": np.full(steps, 0.5), "grid_limit": np.full(steps, 6.0)}
    return M.MethodOutput(recs, traj, config={"fake": True}, train={"train_wall_time_s": 0.0})


@pytest.fixture
def counting(monkeypatch):
    """A registered fake kind 'counted' that records its calls and can fail or be interrupted on demand."""
    calls = []
    behaviour = {"fail_seed": None, "interrupt_at": None}

    def adapter(spec, ctx):
        calls.append(spec.run_id)
        if behaviour["interrupt_at"] is not None and len(calls) == behaviour["interrupt_at"]:
            raise KeyboardInterrupt
        if spec.seed == behaviour["fail_seed"]:
            raise RuntimeError(f"deliberate failure of {spec.run_id}")
        return fake_output(spec)

    M.register("counted")(adapter)
    yield calls, behaviour
    M.METHODS.pop("counted", None)


def counted_suite(seeds=(0, 1, 2), steps=24):
    return parse_suite({"name": "count", "defaults": {"scenario": {"steps": steps}, "seeds": list(seeds),
                                                      "rollouts": 2, "oracle": False},
                        "methods": {"a": {"kind": "counted"}, "b": {"kind": "counted"}},
                        "experiments": [{"name": "e", "methods": ["a", "b"]}]})


def test_serial_run_folders(tmp_path, dataset):
    suite = parse_suite(SMALL)
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert report.failed == [] and len(report.completed) == 4 and report.skipped == 0
    for spec in suite.runs():
        folder = run_dir(tmp_path, spec)
        names = {p.name for p in folder.iterdir()}
        assert {"spec.json", "config.json", "versions.json", "facts.json", "rollouts.json", "trajectories.npz",
                "trajectories.csv", "metrics.json"} <= names
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["spec_hash"] == spec.spec_hash() and metrics["seed"] == spec.seed
        assert metrics["n_rollouts"] == 2 and 0.0 <= metrics["infeasible_fraction"] <= 1.0
        versions = json.loads((folder / "versions.json").read_text())
        assert versions["numpy"] == np.__version__
        assert json.loads((folder / "spec.json").read_text())["start_hours"] == list(spec.start_hours)
        with np.load(folder / "trajectories.npz") as z:
            assert z["total_grid"].shape == (48,)
    status = json.loads((tmp_path / "status.json").read_text())
    assert len(status["done"]) == 4 and status["pending"] == []
    assert json.loads((tmp_path / "suite.json").read_text())["suite"] == "small"


def test_rule_based_matches_reference_rollout(tmp_path, dataset):
    """Roll-out 0 of the adapter equals baselines.rule_based.rollout on the same hours."""
    from baselines.rule_based import RuleBasedController, rollout
    from cmarl_env.core import DemandResponseCore

    suite = parse_suite(SMALL)
    spec = next(r for r in suite.runs() if r.method.name == "rule")
    M.execute_run(spec, tmp_path)
    rec = json.loads((tmp_path / "rollouts.json").read_text())[0]
    core = DemandResponseCore(M.env_config(spec.scenario, spec.start_hours[0], spec.seed), dataset)
    ref = rollout(RuleBasedController(), core, spec.scenario.steps, spec.start_hours[0])
    assert rec["avg_grid_consumption"] == pytest.approx(ref["avg_grid_consumption"])
    assert rec["total_cost"] == pytest.approx(ref["total_cost"])
    assert rec["backlog_slope_kwh_per_step"] == pytest.approx(ref["backlog_slope_kwh_per_step"], abs=1e-9)
    assert rec["grid_limit"] == pytest.approx(ref["grid_limit"])


def test_cost_ratio_against_the_lp(tmp_path, dataset):
    raw = json.loads(json.dumps(SMALL))
    raw["defaults"]["oracle"] = True
    raw["defaults"]["seeds"] = [0]
    raw["defaults"]["scenario"]["constraint"] = 0.6
    raw["methods"]["lp"] = {"kind": "lp_oracle"}
    raw["experiments"][0]["methods"] = ["lp", "grid"]
    suite = parse_suite(raw)
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert report.failed == []
    lp = {s.method.name: json.loads((run_dir(tmp_path, s) / "rollouts.json").read_text()) for s in suite.runs()}
    for k in range(2):
        assert lp["lp"][k]["lp_status"] == "optimal" and lp["lp"][k]["cost_ratio"] == 1.0
        assert lp["grid"][k]["lp_min_cost"] == pytest.approx(lp["lp"][k]["total_cost"])
        assert lp["grid"][k]["cost_ratio"] == pytest.approx(lp["grid"][k]["total_cost"] / lp["lp"][k]["total_cost"])
        assert lp["grid"][k]["cost_ratio"] >= 1.0 - 1e-9            # the LP is a lower bound
    assert list((tmp_path / "_cache" / "lp").glob("*.json"))


def test_failed_run_is_recorded_and_others_finish(tmp_path, counting):
    calls, behaviour = counting
    behaviour["fail_seed"] = 1
    suite = counted_suite()
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert sorted(report.failed) == ["two_clusters_n7_c0.27/a/seed_1", "two_clusters_n7_c0.27/b/seed_1"]
    assert len(report.completed) == 4
    failed = run_dir(tmp_path, next(s for s in suite.runs() if s.run_id == report.failed[0]))
    err = json.loads((failed / "error.json").read_text())
    assert err["error_type"] == "RuntimeError" and "deliberate failure" in err["error"] and "Traceback" in err["traceback"]
    assert not (failed / "metrics.json").exists()
    # a failed run is retried on the next invocation; success removes error.json
    behaviour["fail_seed"] = None
    calls.clear()
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert sorted(calls) == sorted(report.completed) == sorted(["two_clusters_n7_c0.27/a/seed_1",
                                                                "two_clusters_n7_c0.27/b/seed_1"])
    assert report.skipped == 4 and not (failed / "error.json").exists() and (failed / "metrics.json").exists()


def test_resume_after_interruption(tmp_path, counting):
    calls, behaviour = counting
    suite = counted_suite()
    behaviour["interrupt_at"] = 3
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert report.interrupted and len(report.completed) == 2 and len(report.pending) == 4
    first = list(calls[:2])
    todo, done, states = plan(suite, tmp_path)
    assert sorted(s.run_id for s in done) == sorted(first)
    # a run folder left half-written (no metrics.json) counts as not done
    half = run_dir(tmp_path, todo[0])
    half.mkdir(parents=True, exist_ok=True)
    (half / "rollouts.json").write_text("[]")
    assert plan(suite, tmp_path)[2][todo[0].run_id] == "partial"
    behaviour["interrupt_at"] = None
    calls.clear()
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert not report.interrupted and report.skipped == 2 and report.failed == []
    assert sorted(calls) == sorted(s.run_id for s in todo)          # finished runs were not repeated
    assert all(state == "done" for state in plan(suite, tmp_path)[2].values())
    # a third invocation has nothing to do
    calls.clear()
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert calls == [] and report.skipped == 6
    # changed settings make the old folders stale: they are run again
    changed = counted_suite(steps=12)
    assert set(plan(changed, tmp_path)[2].values()) == {"stale"}
    run_suite(changed, tmp_path, backend="serial", progress=False)
    assert len(calls) == 6


def test_metrics_json_is_written_last(tmp_path, counting):
    spec = counted_suite(seeds=(0,)).runs()[0]
    M.execute_run(spec, tmp_path)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert mtimes["metrics.json"] == max(mtimes.values())


def test_ray_backend(tmp_path, dataset):
    pytest.importorskip("ray")
    raw = json.loads(json.dumps(SMALL))
    raw["defaults"]["seeds"] = [0]
    raw["experiments"][0]["methods"] = ["grid"]
    suite = parse_suite(raw)
    report = run_suite(suite, tmp_path, backend="ray", num_cpus=1, progress=False)
    assert report.failed == [] and report.completed == [suite.runs()[0].run_id]
    metrics = json.loads((run_dir(tmp_path, suite.runs()[0]) / "metrics.json").read_text())
    assert metrics["kind"] == "grid_only" and metrics["grid_violation_pct"] >= 0.0


def test_thresholds_match_the_baselines():
    marl = pytest.importorskip("baselines.marl.common")
    assert M.GRID_TOLERANCE == marl.GRID_TOLERANCE
    assert M.BACKLOG_SLOPE_LIMIT == marl.BACKLOG_SLOPE_LIMIT


def test_rollout_record_flags():
    ok = M.rollout_record(0, 0, np.full(10, 1.0), np.zeros(10), np.ones(10), 1.0)
    assert not ok["infeasible"] and ok["grid_violation_pct"] == 0.0 and ok["total_cost"] == 10.0
    over = M.rollout_record(0, 0, np.full(10, 1.03), np.zeros(10), np.ones(10), 1.0)
    assert over["infeasible"] and over["grid_violation_pct"] == pytest.approx(3.0)
    growing = M.rollout_record(0, 0, np.full(30, 0.5), np.arange(30) * 0.1, np.ones(30), 1.0)
    assert growing["backlog_slope_kwh_per_step"] == pytest.approx(0.1) and growing["infeasible"]


@pytest.mark.slow
def test_learned_methods_end_to_end(tmp_path, dataset):
    """The dual methods with the shipped policies and a tiny MAPPO budget, through the serial runner."""
    pytest.importorskip("tianshou")
    raw = {"name": "learned", "defaults": {"scenario": {"steps": 48, "start_jitter": 24, "constraint": 0.6}, "seeds": [0], "rollouts": 2,
                                           "oracle": True},
           "methods": {"consensus": {"kind": "consensus"}, "no_consensus": {"kind": "no_consensus"},
                       "mappo": {"kind": "mappo", "budget": "short",
                                 "params": {"total_steps": 160, "epochs": 1, "num_envs": 2, "eval_episodes": 1}}},
           "experiments": [{"methods": ["consensus", "no_consensus", "mappo"]}]}
    suite = parse_suite(raw)
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert report.failed == [], [json.loads((run_dir(tmp_path, s) / "error.json").read_text())["error"]
                                 for s in suite.runs() if s.run_id in report.failed]
    for spec in suite.runs():
        folder = run_dir(tmp_path, spec)
        m = json.loads((folder / "metrics.json").read_text())
        assert m["n_rollouts"] == 2 and m["exec_seconds_per_step"] > 0 and m["cost_ratio"] is not None
        with np.load(folder / "trajectories.npz") as z:
            if spec.method.kind != "mappo":
                assert z["lambda"].shape == (48, 7) and m["consensus_error_final"] is not None
                assert m["budget_detail"] == "shipped pretrained policies" and m["train_wall_time_s"] > 0
            else:
                assert (folder / "training" / "policy.pt").is_file()
                assert m["budget_detail"].startswith("short budget: ") and m["train"]["env_steps"] > 0
