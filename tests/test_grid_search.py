"""Grid search on Ray Tune: a reduced grid, resume after interruption, trial failure."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from baselines.grid_search import GridSearchConfig, evaluate_point, finished_results, run_grid_search, trial_id
from cmarl_env.core import DemandResponseCore
from cmarl_env.evaluation import evaluation_config, judge

SMALL = dict(method="augmented", lambda_min=0.0, lambda_max=10.0, lambda_step=10.0, nu_min=-10.0, nu_max=0.0,
             nu_step=10.0, eval_steps=96, constraint=0.4, rollouts=1)  # at 0.4 x the 96-hour peak some are feasible


def test_points_and_validation():
    assert GridSearchConfig().points()[:2] == [(0.0, -20.0), (0.0, -19.0)]
    assert len(GridSearchConfig().points()) == 16 * 29
    with pytest.raises(ValueError, match="method='sgd' is not allowed"):
        GridSearchConfig(method="sgd")
    with pytest.raises(ValueError, match="nu range"):
        GridSearchConfig(nu_min=-30.0)


def test_reduced_grid_with_a_failing_trial(tmp_path, dataset):
    config = GridSearchConfig(**SMALL, fail_points=((10.0, 0.0),))
    summary = run_grid_search(config, tmp_path / "grid", max_concurrent=2, progress=False)
    results = finished_results(tmp_path / "grid")
    assert sorted(results) == sorted(trial_id(*p) for p in config.points() if p != (10.0, 0.0))
    assert summary["failed"] == [trial_id(10.0, 0.0)]
    error = json.loads((tmp_path / "grid" / "errors" / f"{trial_id(10.0, 0.0)}.json").read_text())
    assert "injected failure" in error["error"]
    # the grid limit of every trial is c x the peak over exactly the evaluated hours [0, 96)
    core = DemandResponseCore(evaluation_config(n_agents=7, constraint=0.4, start_hour=0, steps=96,
                                                n_hours=dataset.n_steps), dataset)
    assert summary["grid_limit"] == pytest.approx(core.grid_limit)
    for r in results.values():
        assert r["grid_limit"] == pytest.approx(core.grid_limit) and r["steps"] == 96 and r["n_agents"] == 7
        v = judge(r["avg_grid_consumption"], r["grid_limit"], r["backlog_slope_kwh_per_step"], 7)
        assert r["feasible"] == v.feasible and r["infeasible_reason"] == v.reason  # the one rule
    verdicts = {r["feasible"] for r in results.values()}
    assert verdicts == {True, False}  # the reduced grid has both kinds of points: the check is not vacuous
    # a trial is the FixedMultipliers roll-out at its point (deterministic: the same numbers again)
    ref = results[trial_id(0.0, -10.0)]
    again = evaluate_point(config, 0.0, -10.0, data=dataset).metrics()
    for key in ("avg_grid_consumption", "grid_limit", "total_cost", "backlog_slope_kwh_per_step", "feasible"):
        assert again[key] == ref[key], key
    feasible = sorted((r["lambda"], r["nu"]) for r in results.values() if r["feasible"])
    assert sorted(map(tuple, summary["feasible_pairs"])) == feasible
    table = (tmp_path / "grid" / "table1.md").read_text()
    assert table.startswith("Fixed multipliers") and "cmarl_env.evaluation.judge" in table
    assert sum(line.startswith("| ") and not line.startswith("| lambda") for line in table.splitlines()) == len(feasible)
    rows = (tmp_path / "grid" / "grid.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["constraint", "lambda", "nu", "avg_grid_consumption", "grid_limit"] and len(rows) == 4
    assert "feasible" in rows[0] and "infeasible_reason" in rows[0]
    assert (tmp_path / "grid" / "figure_A1_augmented.png").stat().st_size > 0
    # Figure A.1 (benchmarks.figures) marks exactly the trials the rule found feasible
    from benchmarks.figures import load_grid_search

    loaded = {(t["lambda"], t["nu"]): t["feasible"] for t in load_grid_search([tmp_path / "grid"])}
    assert loaded == {(r["lambda"], r["nu"]): r["feasible"] for r in results.values()}
    # resuming without the injected failure runs only the failed point
    summary = run_grid_search(GridSearchConfig(**SMALL), tmp_path / "grid", max_concurrent=2, progress=False)
    assert summary["ran_this_call"] == 1 and summary["finished"] == 4 and not summary["failed"]


def test_figure_A1_markers_follow_the_one_rule(tmp_path):
    """Without a stored verdict, load_grid_search judges a trial with cmarl_env.evaluation.judge (per-agent slope)."""
    from benchmarks.figures import figure_A1, load_grid_search
    from cmarl_env.evaluation import BACKLOG_SLOPE_LIMIT, GRID_TOLERANCE

    base = {"avg_grid_consumption": 10.0 * (1 + GRID_TOLERANCE), "grid_limit": 10.0, "n_agents": 7}
    trials = {
        (0.0, 0.0): base | {"backlog_slope_kwh_per_step": 7 * BACKLOG_SLOPE_LIMIT},    # at both tolerances: feasible
        (0.0, 1.0): base | {"backlog_slope_kwh_per_step": 7 * BACKLOG_SLOPE_LIMIT * 1.01},  # slope just above
        (1.0, 0.0): base | {"avg_grid_consumption": 10.0 * (1 + GRID_TOLERANCE) * 1.001,
                            "backlog_slope_kwh_per_step": 0.0},                      # grid just above
        (1.0, 1.0): base | {"backlog_slope_kwh_per_step": 0.0, "feasible": False},  # a stored verdict wins
        (2.0, 0.0): {"avg_grid_consumption": 1.0, "backlog_slope_kwh_per_step": 0.0},  # nothing to judge on
    }
    for (lam, nu), d in trials.items():
        (tmp_path / f"{trial_id(lam, nu)}.json").write_text(json.dumps(d | {"lambda": lam, "nu": nu}))
    loaded = {(t["lambda"], t["nu"]): t["feasible"] for t in load_grid_search([tmp_path])}
    assert loaded == {(0.0, 0.0): True, (0.0, 1.0): False, (1.0, 0.0): False, (1.0, 1.0): False, (2.0, 0.0): None}
    assert any(p.suffix == ".png" for p in figure_A1(load_grid_search([tmp_path]), tmp_path / "fig"))


def test_trials_without_the_rules_verdict_are_rerun(tmp_path):
    """A trial written before the one feasibility rule (no infeasible_reason) counts as unfinished."""
    trials = tmp_path / "trials"
    trials.mkdir()
    old = {"lambda": 0.0, "nu": -10.0, "avg_grid_consumption": 1.0, "grid_limit": 2.0, "backlog_slope_kwh_per_step": 0.0,
           "feasible": True}
    (trials / f"{trial_id(0.0, -10.0)}.json").write_text(json.dumps(old))
    (trials / f"{trial_id(0.0, 0.0)}.json").write_text(json.dumps(old | {"nu": 0.0, "infeasible_reason": ""}))
    (trials / f"{trial_id(10.0, 0.0)}.json").write_text("{not json")
    assert sorted(finished_results(tmp_path)) == [trial_id(0.0, 0.0)]


# The driver of `cmarl grid-search` with one change: right after it has persisted its KILL_AFTER-th trial it kills its
# whole process group (itself and the Ray processes it started) with SIGKILL. The kill is the event the test waits on.
KILLING_DRIVER = """
import os, signal, sys
import baselines.grid_search as gs

record, count = gs._record_result, []

def record_then_kill(out, metrics):
    record(out, metrics)
    count.append(1)
    if len(count) == int(os.environ["KILL_AFTER"]):
        os.killpg(os.getpgid(0), signal.SIGKILL)

gs._record_result = record_then_kill
from benchmarks.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_sigkill(tmp_path):
    """`cmarl grid-search` killed by SIGKILL after its 2nd finished trial: the next invocation runs only the other 6
    points; the finished trials are kept as they were and every trial finished exactly once."""
    out = tmp_path / "grid"
    args = ["grid-search", "--method", "augmented", "--lambda-range", "0", "15", "5", "--nu-range", "-10", "0", "10",
            "--eval-steps", "100", "--max-concurrent", "2", "--out", str(out)]
    env = dict(os.environ, KILL_AFTER="2")
    killed = subprocess.run([sys.executable, "-c", KILLING_DRIVER, *args], env=env, capture_output=True, text=True,
                            start_new_session=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = finished_results(out)
    assert len(before) == 2
    resumed = subprocess.run([sys.executable, "-m", "benchmarks.cli", *args], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["ran_this_call"] == 6 and summary["finished"] == 8
    after = finished_results(out)
    assert len(after) == 8
    for tid, result in before.items():
        assert after[tid] == result  # finished trials were not re-run
    ids = [json.loads(line)["id"] for line in (out / "finished.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 8  # every trial finished exactly once


def test_a_second_search_on_the_same_folder_is_refused(tmp_path):
    from cmarl_env.records import FolderLock, FolderLockedError

    with FolderLock(tmp_path / "grid"):
        with pytest.raises(FolderLockedError, match="is being written by another process"):
            run_grid_search(GridSearchConfig(**SMALL), tmp_path / "grid", progress=False)
    with pytest.raises(ValueError, match=r"start_hour=8700 \+ steps=100 = 8800 runs past the end of the data"):
        run_grid_search(GridSearchConfig(**(SMALL | {"eval_steps": 100, "start_hour": 8700})), tmp_path / "late")


def test_points_are_judged_on_every_rollout_and_level(tmp_path, dataset):
    """Several start hours and a second constraint level: a point is feasible only if every roll-out is, the
    selected pair is the cheapest such point, and each level gets its table section and its Figure A.1."""
    from baselines.grid_search import level_results

    config = GridSearchConfig(**(SMALL | {"rollouts": 3, "start_jitter": 48, "extra_constraints": (0.3,)}))
    assert len(set(config.start_hours())) > 1
    summary = run_grid_search(config, tmp_path / "grid", max_concurrent=2, progress=False)
    results = finished_results(tmp_path / "grid")
    assert summary["finished"] == 4
    for c in config.levels:
        at = level_results(config, results, c)
        assert len(at) == 4
        for (lam, nu), r in ((tuple(p), at[trial_id(*p)]) for p in config.points()):
            singles = [evaluate_point(config, lam, nu, data=dataset, constraint=c, start_hour=h).metrics()
                       for h in config.start_hours()]
            assert r["feasible"] == all(m["feasible"] for m in singles)
            assert r["feasible_fraction"] == pytest.approx(np.mean([m["feasible"] for m in singles]))
            assert r["total_cost"] == pytest.approx(np.mean([m["total_cost"] for m in singles]))
        feasible = [r for r in at.values() if r["feasible"]]
        sel = summary["selected"][f"{c:g}"]
        if feasible:
            best = min(feasible, key=lambda r: r["total_cost"])
            assert (sel["lambda"], sel["nu"]) == (best["lambda"], best["nu"])
        else:
            assert sel is None
    table = (tmp_path / "grid" / "table1.md").read_text()
    assert "## c = 0.4" in table and "## c = 0.3" in table and "3 roll-out(s) of 96 h" in table
    assert (tmp_path / "grid" / "figure_A1_augmented_c0.3.png").stat().st_size > 0
    # the stricter level has no more feasible points than the looser one
    assert sum(r["feasible"] for r in level_results(config, results, 0.3).values()) <= \
        sum(r["feasible"] for r in level_results(config, results, 0.4).values())


def test_ippo_per_agent_learners_follow_the_scenario_layout(dataset):
    """Per-agent IPPO trains agent i on its own building and demand scale; its controller acts agent by agent."""
    from baselines.grid_search import PerAgentFixedMultipliers, scenario_layout

    config = GridSearchConfig(method="ippo", eval_steps=24, rollouts=1)
    layout = scenario_layout(config, dataset)
    assert len(layout.building) == 7 and sorted(set(layout.scale.tolist())) == [1.0, 2.0]
    # policy i always answers (i / 10, 1): the roll-out's first actions show who acted for whom
    policies = [lambda obs, i=i: np.tile([i / 10, 1.0], (len(obs), 1)) for i in range(7)]
    controller = PerAgentFixedMultipliers(1.0, -1.0, policies)
    from cmarl_env.core import DemandResponseCore
    core = DemandResponseCore(evaluation_config(n_agents=7, constraint=0.3, start_hour=0, steps=24,
                                                n_hours=dataset.n_steps), dataset)
    controller.reset(core)
    seen = controller.act(np.zeros((7, 7), dtype=np.float32))
    assert np.allclose(seen[:, 0], np.arange(7) / 10)
    with pytest.raises(ValueError, match="6 per-agent policies for a scenario of 7 agents"):
        PerAgentFixedMultipliers(1.0, -1.0, policies[:6]).reset(core)
    with pytest.raises(ValueError, match="sharing='shared' is not allowed"):
        GridSearchConfig(sharing="shared")
    with pytest.raises(ValueError, match="train_seeds"):
        GridSearchConfig(train_seeds=())


@pytest.mark.slow
@pytest.mark.parametrize("sharing", ["per_agent", "per_type"])
def test_reduced_ippo_grid(tmp_path, sharing):
    """IPPO proper: PPO learners trained at each point (short budget), then rolled out."""
    config = GridSearchConfig(method="ippo", lambda_min=0.0, lambda_max=8.0, lambda_step=8.0, nu_min=-8.0, nu_max=-8.0,
                              train_steps=2000, eval_steps=48, rollouts=1, sharing=sharing)
    summary = run_grid_search(config, tmp_path / "ippo", max_concurrent=2, progress=False)
    assert summary["finished"] == 2 and not summary["failed"]
    for r in finished_results(tmp_path / "ippo").values():
        assert r["method"] == "ippo" and r["train_seconds"] > 0 and r["steps"] == 48 and r["sharing"] == sharing
        assert r["train_env_steps"] == 2000 * (7 if sharing == "per_agent" else 2)
        assert r["controller"] == f"fixed({r['lambda']:g}, {r['nu']:g})" and r["grid_limit"] > 0
        v = judge(r["avg_grid_consumption"], r["grid_limit"], r["backlog_slope_kwh_per_step"], 7)
        assert r["feasible"] == v.feasible and r["infeasible_reason"] == v.reason


def test_an_ippo_benchmark_run_keeps_every_learners_training_curve(tmp_path):
    """A short-budget entry must show that it learned: each per-agent learner's curve is in the run folder."""
    from benchmarks.runner import run_suite
    from benchmarks.suite import parse_suite

    suite = parse_suite({
        "name": "ippo_curves", "defaults": {"scenario": {"steps": 48}, "seeds": [0], "rollouts": 1},
        "methods": {"ippo": {"kind": "ippo", "budget": "short", "params": {"total_steps": 640}}},
        "experiments": [{"name": "main", "methods": ["ippo"]}]})
    run_suite(suite, tmp_path / "out", backend="serial", progress=False)
    (run,) = (tmp_path / "out" / "runs").glob("*/ippo/seed_0")
    for i in range(7):
        metrics = json.loads((run / "training" / f"agent{i}" / "metrics.json").read_text())
        curve = metrics["test_history"]
        assert len(curve) >= 2 and curve[0]["env_step"] == 0 and all("return_mean" in row for row in curve)
        assert metrics["eval_initial"] and metrics["eval_final"]
    config = json.loads((run / "config.json").read_text())
    assert config["sharing"] == "per_agent" and config["train_steps_per_learner"] == 640


def test_the_grid_value_band_and_its_validation():
    """--grid-values adds (lambda, -lambda - v) per lambda; without the rectangle only the band is searched."""
    config = GridSearchConfig(lambda_min=0, lambda_max=15, lambda_step=7.5, grid_values=(0.3, 0.6), rectangle=False)
    assert config.points() == [(0.0, -0.3), (0.0, -0.6), (7.5, -7.8), (7.5, -8.1), (15.0, -15.3), (15.0, -15.6)]
    both = GridSearchConfig(lambda_min=0, lambda_max=3, lambda_step=3, nu_min=-3, nu_max=0, nu_step=3, grid_values=(0.0,))
    assert both.points() == [(0.0, -3.0), (0.0, 0.0), (3.0, -3.0), (3.0, 0.0)]  # the band's points are already there
    with pytest.raises(ValueError, match="rectangle=False leaves no point"):
        GridSearchConfig(rectangle=False)
    with pytest.raises(ValueError, match=r"grid value 6.0 puts nu = -lambda - v outside \[-20, 20\] \(lambda in \[15(\.0)?\]\)"):
        GridSearchConfig(lambda_min=0, lambda_max=15, lambda_step=15, grid_values=(6.0,))
    with pytest.raises(ValueError, match="grid value nan"):
        GridSearchConfig(grid_values=(float("nan"),))


def test_degenerate_pairs_are_never_selected():
    """A pair whose reward pays less than the cheapest price per kWh of grid energy is feasible only while
    under-trained: the selection skips it even when it is the cheapest feasible point."""
    from baselines.grid_search import cheapest_price, degenerate_reason, selected_pair

    assert cheapest_price() == pytest.approx(0.21)
    assert "below the cheapest price 0.21" in degenerate_reason(15.0, -5.0)
    assert "degenerate" in degenerate_reason(8.0, -8.0)  # the cancelling pair
    assert degenerate_reason(6.0, -11.0) == "" and degenerate_reason(6.0, -6.3) == ""
    config = GridSearchConfig(lambda_min=6, lambda_max=15, lambda_step=9, nu_min=-11, nu_max=-5, nu_step=6)
    row = {"feasible": True, "grid_use_ratio": 0.9}
    results = {trial_id(15.0, -5.0): row | {"lambda": 15.0, "nu": -5.0, "total_cost": 4000.0},
               trial_id(6.0, -11.0): row | {"lambda": 6.0, "nu": -11.0, "total_cost": 5000.0},
               trial_id(6.0, -5.0): row | {"lambda": 6.0, "nu": -5.0, "total_cost": 4500.0, "feasible": False}}
    assert selected_pair(config, results, 0.27)["lambda"] == 6.0
    del results[trial_id(6.0, -11.0)]
    assert selected_pair(config, results, 0.27) is None


def test_a_band_search_draws_the_band_not_an_empty_rectangle(tmp_path):
    """A band-only search has no rectangle to draw: its figure is grid use and cost against the grid value."""
    config = GridSearchConfig(method="augmented", lambda_min=0.0, lambda_max=0.0, lambda_step=1.0,
                              grid_values=(0.3, 0.6), rectangle=False, eval_steps=96, constraint=0.4, rollouts=1)
    summary = run_grid_search(config, tmp_path / "band", max_concurrent=2, progress=False)
    assert summary["finished"] == summary["points"] == 2
    assert (tmp_path / "band" / "figure_band_augmented.png").stat().st_size > 0
    assert not list((tmp_path / "band").glob("figure_A1_*"))
    assert "| grid value -(lambda+nu) |" in (tmp_path / "band" / "table1.md").read_text()
