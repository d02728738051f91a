"""The runner: run folders that summarise their roll-outs, scenario facts, the LP ratio, failures recorded, resume
after an interruption (KeyboardInterrupt and SIGKILL), stale specs, Ray execution."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import registry
from benchmarks.registry import MethodDef, Prepared
from benchmarks.run import MEAN_KEYS, RUN_FORMAT
from benchmarks.runner import plan, run_dir, run_suite, scenario_facts
from benchmarks.suite import load_suite, parse_suite, start_hours
from cmarl_env.core import DemandResponseCore
from cmarl_env.evaluation import (
    BACKLOG_SLOPE_LIMIT,
    GRID_TOLERANCE,
    GridOnly,
    RandomController,
    ServeAll,
    backlog_slope,
    is_binding,
    judge,
    rollout,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "name": "small",
    "defaults": {"scenario": {"steps": 48, "start_jitter": 24, "start_hour": 100, "constraint": 0.6, "seed": 3},
                 "seeds": [0, 1], "rollouts": 2, "oracle": False},
    "methods": {"rule": {"kind": "rule_based"}, "grid": {"kind": "grid_only"}, "rand": {"kind": "random"}},
    "experiments": [{"name": "main", "methods": ["rule", "grid", "rand"]}],
}
VOLATILE = ("wall_time_s", "seconds_per_step")  # timings differ between two identical roll-outs


def _controller(spec):
    from baselines.rule_based import ShareRule

    return {"rule_based": ShareRule, "grid_only": GridOnly, "serve_all": ServeAll,
            "random": lambda: RandomController(spec.seed)}[spec.method.kind]()


def _reference_rollout(spec, k, dataset):
    """Roll-out k of a spec, recomputed here through the one loop on the spec's hours."""
    h = spec.start_hours[k]
    core = DemandResponseCore(spec.scenario.env_config(h, dataset.n_steps), dataset)
    return rollout(_controller(spec), core, h, spec.scenario.steps)


def _same(a, b, key):
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-12)
    return a == b


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp("small")
    suite = parse_suite(SMALL)
    report = run_suite(suite, out, backend="serial", progress=False)
    return suite, out, report


def test_runs_and_seeds(small_run):
    suite, out, report = small_run
    assert report.failed == [] and report.skipped == 0
    # rule and grid do not depend on the seed: one run each; random runs both seeds
    assert sorted(report.completed) == sorted(["two_clusters_n7_c0.6/rule/seed_0", "two_clusters_n7_c0.6/grid/seed_0",
                                               "two_clusters_n7_c0.6/rand/seed_0", "two_clusters_n7_c0.6/rand/seed_1"])
    status = json.loads((out / "status.json").read_text())
    assert sorted(status["done"]) == sorted(report.completed) and status["pending"] == []
    assert json.loads((out / "suite.json").read_text())["suite"] == "small"
    # every run saw the scenario's start hours, whatever its seed
    hours = start_hours(suite.scenarios()[0], 2)
    assert hours[0] == 100 and hours[1] != 100
    for spec in suite.runs():
        assert json.loads((run_dir(out, spec) / "spec.json").read_text())["start_hours"] == list(hours)


def test_rollouts_json_is_the_one_loop_on_the_specs_hours(small_run, dataset):
    suite, out, _ = small_run
    for spec in suite.runs():
        recs = json.loads((run_dir(out, spec) / "rollouts.json").read_text())
        assert [r["start_hour"] for r in recs] == list(spec.start_hours)
        for k, rec in enumerate(recs):
            ref = _reference_rollout(spec, k, dataset)
            expected = ref.metrics()
            for key, value in expected.items():
                if key not in VOLATILE:
                    assert _same(rec[key], value, key), (spec.run_id, k, key, rec[key], value)
            # cost = energy bought + the backlog left at the end at the horizon's highest price
            assert rec["total_cost"] == pytest.approx(ref.energy_cost.sum() + ref.total_backlog[-1] * ref.prices.max())
            # the verdict is the one rule's, on the record's own numbers
            v = judge(rec["avg_grid_consumption"], rec["grid_limit"], rec["backlog_slope_kwh_per_step"], 7)
            assert rec["infeasible"] == (not v.feasible) and rec["grid_use_ratio"] == pytest.approx(v.grid_use_ratio)
    rand = {s.seed: json.loads((run_dir(out, s) / "rollouts.json").read_text())[0]
            for s in suite.runs() if s.method.kind == "random"}
    assert rand[0]["total_cost"] != rand[1]["total_cost"]          # the seed reaches the random controller


def test_metrics_json_summarises_the_rollouts(small_run):
    suite, out, _ = small_run
    for spec in suite.runs():
        folder = run_dir(out, spec)
        m = json.loads((folder / "metrics.json").read_text())
        recs = json.loads((folder / "rollouts.json").read_text())
        assert m["format"] == RUN_FORMAT and m["spec_hash"] == spec.spec_hash() and m["seed"] == spec.seed
        assert m["kind"] == spec.method.kind and m["seeded"] == registry.get(spec.method.kind).seeded
        assert m["n_rollouts"] == len(recs) == 2
        for key in MEAN_KEYS:
            vals = [r[key] for r in recs if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            if vals:
                assert m[key] == pytest.approx(np.mean(vals)), key
            else:
                assert m[key] is None, key
        n_inf = sum(r["infeasible"] for r in recs)
        assert m["n_infeasible"] == n_inf and m["infeasible_fraction"] == n_inf / len(recs)
        assert m["exec_wall_time_s"] == pytest.approx(sum(r["wall_time_s"] for r in recs))
        assert m["thresholds"] == {"grid_tolerance": GRID_TOLERANCE,
                                   "backlog_slope_limit_kwh_per_step_per_agent": BACKLOG_SLOPE_LIMIT}
        assert json.loads((folder / "versions.json").read_text())["numpy"] == np.__version__
        # metrics.json is written last
        mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        assert mtimes["metrics.json"] == max(mtimes.values())


def test_trajectories_are_rollout_zero(small_run, dataset):
    suite, out, _ = small_run
    for spec in suite.runs():
        folder = run_dir(out, spec)
        ref = _reference_rollout(spec, 0, dataset)
        with np.load(folder / "trajectories.npz") as z:
            stored = {k: z[k] for k in z.files}
        expected = ref.trajectories()
        assert set(stored) == set(expected)
        for key, arr in expected.items():
            np.testing.assert_allclose(stored[key], arr, rtol=1e-12, err_msg=key)
        rec0 = json.loads((folder / "rollouts.json").read_text())[0]
        assert rec0["backlog_slope_kwh_per_step"] == pytest.approx(backlog_slope(stored["total_backlog"]), abs=1e-12)
        assert rec0["avg_grid_consumption"] == pytest.approx(stored["total_grid"].mean())
        csv = np.genfromtxt(folder / "trajectories.csv", delimiter=",", names=True)
        np.testing.assert_allclose(csv["total_grid"], stored["total_grid"], rtol=1e-5)
        np.testing.assert_array_equal(csv["step"], np.arange(spec.scenario.steps))
        facts = json.loads((folder / "facts.json").read_text())
        assert facts["grid_limit_kwh"] == pytest.approx(rec0["grid_limit"])
        assert facts["window"] == [spec.start_hours[0], spec.start_hours[0] + spec.scenario.steps]


def test_scenario_facts_are_recorded(small_run, dataset):
    from baselines.oracle import frontier_fraction

    suite, out, _ = small_run
    (sc,) = suite.scenarios()
    recorded = json.loads((out / "scenarios" / f"{sc.name}.json").read_text())
    core = DemandResponseCore(sc.env_config(sc.start_hour, dataset.n_steps), dataset)
    frontier, se = frontier_fraction(core, sc.steps, sc.start_hour, seed=sc.seed)
    serve_all = rollout(ServeAll(), core, sc.start_hour, sc.steps).avg_grid / core.peak_demand
    assert recorded["lp_frontier"] == pytest.approx(frontier) and recorded["lp_frontier_stderr"] == se == 0.0
    assert recorded["serve_all_grid"] == pytest.approx(serve_all)
    assert recorded["constraint"] == 0.6 and not recorded["calibrated"]
    assert recorded["grid_limit"] == pytest.approx(0.6 * core.peak_demand)
    assert recorded["hours"] == [100, 148]
    assert recorded["binding"] == is_binding(0.6, frontier, serve_all)
    # the grid limit every roll-out-0 record used
    for spec in suite.runs():
        rec0 = json.loads((run_dir(out, spec) / "rollouts.json").read_text())[0]
        assert rec0["grid_limit"] == pytest.approx(recorded["grid_limit"])


def test_calibrated_scenario_is_resolved_recorded_and_planned(tmp_path, dataset, capsys):
    raw = {"name": "cal", "defaults": {"scenario": {"steps": 48, "start_jitter": 0, "constraint": "calibrated",
                                                    "calibrate": 0.25}, "seeds": [0], "rollouts": 1, "oracle": False},
           "methods": {"serve_all": {"kind": "serve_all"}, "grid": {"kind": "grid_only"}},
           "experiments": [{"name": "x", "methods": ["serve_all", "grid"]}]}
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(raw))
    suite = load_suite(p)
    (sc,) = suite.scenarios()
    facts = scenario_facts(sc, data=dataset)
    level = facts["lp_frontier"] + 0.25 * (facts["serve_all_grid"] - facts["lp_frontier"])
    assert facts["constraint"] == pytest.approx(level) and facts["calibrated"] and facts["binding"]
    out = tmp_path / "out"
    report = run_suite(suite, out, backend="serial", progress=False)
    assert report.failed == []
    recorded = json.loads((out / "scenarios" / f"{sc.name}.json").read_text())
    assert recorded["constraint"] == pytest.approx(level)
    for spec in suite.runs({sc.name: recorded["constraint"]}):
        m = json.loads((run_dir(out, spec) / "metrics.json").read_text())
        assert m["constraint"] == pytest.approx(level) and m["spec_hash"] == spec.spec_hash()
        assert m["grid_limit"] == pytest.approx(recorded["grid_limit"])
    serve = json.loads((out / "runs" / sc.name / "serve_all" / "seed_0" / "metrics.json").read_text())
    # the serve-all controller uses (serve_all_grid / level) of the limit: over it, so infeasible
    assert serve["grid_use_ratio"] == pytest.approx(recorded["serve_all_grid"] / level)
    assert serve["infeasible_fraction"] == 1.0
    # planning again (as `cmarl bench --dry-run` does, without recomputing the facts) finds every run done
    todo, done, states = plan(suite, out)
    assert todo == [] and set(states.values()) == {"done"}
    from benchmarks.cli import main

    assert main(["bench", str(p), "--dry-run", "--out", str(out)]) == 0
    assert "2 runs, 2 finished" in capsys.readouterr().out


def test_cost_ratio_against_the_lp(tmp_path, dataset):
    raw = json.loads(json.dumps(SMALL))
    raw["defaults"]["oracle"] = True
    raw["methods"] = {"lp": {"kind": "lp_oracle"}, "grid": {"kind": "grid_only"}, "rule": {"kind": "rule_based"}}
    raw["experiments"][0]["methods"] = ["grid", "rule", "lp"]
    suite = parse_suite(raw)
    todo, _, _ = plan(suite, tmp_path)
    assert todo[0].method.kind == "lp_oracle"                     # the LP first: it fills the cache
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert report.failed == []
    recs = {s.method.name: json.loads((run_dir(tmp_path, s) / "rollouts.json").read_text()) for s in suite.runs()}
    for k in range(2):
        lp = recs["lp"][k]
        assert lp["lp_cost"] == pytest.approx(lp["total_cost"]) and lp["cost_ratio"] == pytest.approx(1.0)
        assert not lp["infeasible"] and lp["final_backlog_kwh"] == pytest.approx(0.0, abs=1e-6)
        for name in ("grid", "rule"):
            r = recs[name][k]
            assert r["lp_cost"] == pytest.approx(lp["total_cost"])
            assert r["cost_ratio"] == pytest.approx(r["total_cost"] / lp["total_cost"])
            assert r["cost_ratio"] >= 1.0 - 1e-9                    # the LP is a lower bound
    cached = [json.loads(p.read_text()) for p in (tmp_path / "_cache" / "lp").glob("*.json")]
    assert sorted(c["start_hour"] for c in cached) == sorted(set(suite.runs()[0].start_hours))
    assert all(c["status"] == "optimal" for c in cached)


def test_plan_priority_from_the_registry(tmp_path):
    raw = json.loads(json.dumps(SMALL))
    raw["methods"] = {"grid": {"kind": "grid_only"}, "ippo": {"kind": "ippo", "params": {"total_steps": 10}},
                      "lp": {"kind": "lp_oracle"}}
    raw["experiments"][0]["methods"] = ["grid", "ippo", "lp"]
    todo, done, states = plan(parse_suite(raw), tmp_path)
    assert [s.method.name for s in todo] == ["lp", "ippo", "ippo", "grid"]   # reference, trains (2 seeds), rest
    assert done == [] and set(states.values()) == {"missing"}


# --------------------------------------------------------------------------- failures and resume
@pytest.fixture
def counting():
    """A registered kind 'counted' (a serve-all controller) that records its runs and fails or is interrupted on
    demand."""
    calls = []
    behaviour = {"fail_seed": None, "interrupt_at": None}

    def prepare(spec, ctx):
        calls.append(spec.run_id)
        if behaviour["interrupt_at"] is not None and len(calls) == behaviour["interrupt_at"]:
            raise KeyboardInterrupt
        if spec.seed == behaviour["fail_seed"]:
            raise RuntimeError(f"deliberate failure of {spec.run_id}")
        return Prepared(controller=ServeAll)

    registry.register(MethodDef(kind="counted", label="Counted", prepare=prepare, seeded=True))
    try:
        yield calls, behaviour
    finally:
        registry._REGISTRY.pop("counted", None)


def counted_suite(seeds=(0, 1, 2), steps=24):
    return parse_suite({"name": "count", "defaults": {"scenario": {"steps": steps, "constraint": 0.6},
                                                      "seeds": list(seeds), "rollouts": 2, "oracle": False},
                        "methods": {"a": {"kind": "counted"}, "b": {"kind": "counted"}},
                        "experiments": [{"name": "e", "methods": ["a", "b"]}]})


def test_failed_run_is_recorded_and_others_finish(tmp_path, counting):
    calls, behaviour = counting
    behaviour["fail_seed"] = 1
    suite = counted_suite()
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert sorted(report.failed) == ["two_clusters_n7_c0.6/a/seed_1", "two_clusters_n7_c0.6/b/seed_1"]
    assert len(report.completed) == 4
    failed = run_dir(tmp_path, next(s for s in suite.runs() if s.run_id == report.failed[0]))
    err = json.loads((failed / "error.json").read_text())
    assert err["error_type"] == "RuntimeError" and "deliberate failure" in err["error"]
    assert "Traceback" in err["traceback"]
    assert not (failed / "metrics.json").exists()
    assert plan(suite, tmp_path)[2][report.failed[0]] == "failed"
    # a failed run is retried on the next invocation; success removes error.json
    behaviour["fail_seed"] = None
    calls.clear()
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert sorted(calls) == sorted(report.completed) == ["two_clusters_n7_c0.6/a/seed_1",
                                                         "two_clusters_n7_c0.6/b/seed_1"]
    assert report.skipped == 4 and not (failed / "error.json").exists() and (failed / "metrics.json").exists()


def test_resume_after_interruption_and_stale_specs(tmp_path, counting):
    calls, behaviour = counting
    suite = counted_suite()
    behaviour["interrupt_at"] = 3
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert report.interrupted and len(report.completed) == 2 and len(report.pending) == 4
    first = list(calls[:2])
    todo, done, states = plan(suite, tmp_path)
    assert sorted(s.run_id for s in done) == sorted(first)
    assert json.loads((tmp_path / "status.json").read_text())["pending"] == report.pending
    # a run folder left half-written (no metrics.json) counts as not done
    half = run_dir(tmp_path, todo[0])
    half.mkdir(parents=True, exist_ok=True)
    (half / "rollouts.json").write_text("[]")
    assert plan(suite, tmp_path)[2][todo[0].run_id] == "partial"
    # so does an unreadable metrics.json
    (half / "metrics.json").write_text("{truncated")
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
    # changed settings make the old folders stale: they are run again, and their metrics carry the new hash
    changed = counted_suite(steps=12)
    assert set(plan(changed, tmp_path)[2].values()) == {"stale"}
    run_suite(changed, tmp_path, backend="serial", progress=False)
    assert len(calls) == 6
    for spec in changed.runs():
        m = json.loads((run_dir(tmp_path, spec) / "metrics.json").read_text())
        assert m["spec_hash"] == spec.spec_hash() and m["steps"] == 12


# SIGKILL in the middle of `cmarl bench` and the resume: tests/test_faults.py (the fault suite).


def test_ray_backend_gives_the_serial_results(tmp_path, dataset):
    pytest.importorskip("ray")
    raw = json.loads(json.dumps(SMALL))
    raw["defaults"]["seeds"] = [0]
    raw["experiments"][0]["methods"] = ["grid", "rand"]
    suite = parse_suite(raw)
    report = run_suite(suite, tmp_path / "ray", backend="ray", num_cpus=1, progress=False)
    assert report.failed == [] and sorted(report.completed) == sorted(s.run_id for s in suite.runs())
    for spec in suite.runs():
        got = json.loads((run_dir(tmp_path / "ray", spec) / "rollouts.json").read_text())
        for k, rec in enumerate(got):
            expected = _reference_rollout(spec, k, dataset).metrics()
            for key, value in expected.items():
                if key not in VOLATILE:
                    assert _same(rec[key], value, key), (spec.run_id, k, key)
        m = json.loads((run_dir(tmp_path / "ray", spec) / "metrics.json").read_text())
        assert m["spec_hash"] == spec.spec_hash()
        assert m["total_cost"] == pytest.approx(np.mean([r["total_cost"] for r in got]))


def test_lp_below_the_frontier_is_an_infeasible_bound(tmp_path, dataset):
    raw = json.loads(json.dumps(SMALL))
    raw["defaults"]["scenario"]["constraint"] = 0.05              # below the LP frontier: no schedule exists
    raw["defaults"]["oracle"] = True
    raw["defaults"]["seeds"] = [0]
    raw["methods"] = {"lp": {"kind": "lp_oracle"}, "grid": {"kind": "grid_only"}}
    raw["experiments"][0]["methods"] = ["lp", "grid"]
    suite = parse_suite(raw)
    report = run_suite(suite, tmp_path, backend="serial", progress=False)
    assert report.failed == []
    (sc,) = suite.scenarios()
    facts = json.loads((tmp_path / "scenarios" / f"{sc.name}.json").read_text())
    assert facts["lp_frontier"] > 0.05 and not facts["binding"]
    for spec in suite.runs():
        m = json.loads((run_dir(tmp_path, spec) / "metrics.json").read_text())
        recs = json.loads((run_dir(tmp_path, spec) / "rollouts.json").read_text())
        assert m["infeasible_fraction"] == 1.0 and all(r["infeasible"] for r in recs)
        assert m["cost_ratio"] is None and all(r["cost_ratio"] is None for r in recs)   # no LP cost to divide by
        if spec.method.kind == "lp_oracle":
            assert m["total_cost"] is None and {r["lp_status"] for r in recs} == {"infeasible"}
        else:
            assert m["total_cost"] == pytest.approx(np.mean([r["total_cost"] for r in recs]))


@pytest.mark.slow
def test_learned_methods_end_to_end(tmp_path, dataset):
    """The dual methods with the shipped policies and a tiny MAPPO budget, through the serial runner."""
    pytest.importorskip("torch")
    pytest.importorskip("tianshou")
    raw = {"name": "learned", "defaults": {"scenario": {"steps": 48, "start_jitter": 24, "constraint": 0.6,
                                                        "record_agents": 7},
                                           "seeds": [0], "rollouts": 2, "oracle": True},
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
        recs = json.loads((folder / "rollouts.json").read_text())
        assert m["n_rollouts"] == 2 and m["exec_seconds_per_step"] > 0
        assert m["cost_ratio"] == pytest.approx(np.mean([r["total_cost"] / r["lp_cost"] for r in recs]))
        with np.load(folder / "trajectories.npz") as z:
            np.testing.assert_allclose(z["total_grid"].mean(), recs[0]["avg_grid_consumption"])
            if spec.method.kind != "mappo":
                assert z["lambda"].shape == (48, 7)
                assert m["consensus_error_final"] is not None
                assert m["budget_detail"] == "shipped pretrained policies" and m["train_wall_time_s"] > 0
            else:
                assert (folder / "training" / "policy.pt").is_file()
                assert m["budget_detail"].startswith("short budget: ") and m["train"]["env_steps"] > 0
