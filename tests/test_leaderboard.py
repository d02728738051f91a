"""Leaderboard files are well-formed: Markdown tables, CSV, marl-eval JSON, README block."""

import csv
import io
import json
import math

import pytest

from benchmarks.leaderboard import README_END, README_START, update_readme, write_leaderboard

SCENARIOS = ("two_clusters_n7_c0.27", "ring_n7_c0.3")
METHODS = {"consensus": ("consensus", False, "pretrained", "shipped pretrained policies"),
           "mappo": ("mappo", False, "short", "short budget: 8,000 env steps"),
           "lp_oracle": ("lp_oracle", True, "none", "none")}


def write_run(root, scenario, method, seed, cost, infeasible, ratio, experiment="main"):
    kind, ref, budget, detail = METHODS[method]
    folder = root / "runs" / scenario / method / f"seed_{seed}"
    folder.mkdir(parents=True)
    rollouts = [{"rollout": k, "start_hour": k, "total_cost": cost + k, "cost_ratio": ratio,
                 "grid_use_ratio": 0.99, "grid_violation_pct": 0.0, "backlog_slope_kwh_per_step": 0.01,
                 "infeasible": k < infeasible, "consensus_error_final": 0.1 if kind == "consensus" else None}
                for k in range(3)]
    metrics = {"format": "cmarl-bench-run/1", "run_id": f"{scenario}/{method}/seed_{seed}", "scenario": scenario,
               "method": method, "kind": kind, "label": method.upper(), "reference": ref, "seed": seed,
               "experiment": experiment, "n_agents": 7, "steps": 24, "n_rollouts": 3, "mean_cost": cost + 1,
               "cost_ratio": ratio, "grid_use_ratio": 0.99, "grid_violation_pct": 0.0, "grid_limit": 7.5,
               "backlog_slope_kwh_per_step": 0.01, "infeasible_fraction": infeasible / 3,
               "consensus_error_final": 0.1 if kind == "consensus" else None, "train_wall_time_s": 12.0,
               "exec_seconds_per_step": 0.001, "budget": budget, "budget_detail": detail, "note": "",
               "train": {"env_steps": 8000} if kind == "mappo" else {}}
    spec = {"scenario": {"name": scenario, "n_agents": 7, "graph": scenario.split("_n")[0], "constraint": 0.27,
                         "steps": 24, "start_hour": 0, "start_jitter": 24}, "method": {"kind": kind, "params": {}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "spec.json").write_text(json.dumps(spec))
    (folder / "rollouts.json").write_text(json.dumps(rollouts))


@pytest.fixture
def results(tmp_path):
    for s in SCENARIOS:
        for seed in range(3):
            write_run(tmp_path, s, "consensus", seed, 100.0 + seed, 0, 1.05)
            write_run(tmp_path, s, "mappo", seed, 95.0 + seed, 2, 1.0 if seed else None)
            write_run(tmp_path, s, "lp_oracle", seed, 90.0, 0, 1.0)
    err = tmp_path / "runs" / SCENARIOS[0] / "mappo" / "seed_9"
    err.mkdir()
    (err / "error.json").write_text(json.dumps({"run_id": f"{SCENARIOS[0]}/mappo/seed_9", "error_type": "RuntimeError",
                                                "error": "boom"}))
    (tmp_path / "suite.json").write_text(json.dumps({"suite": "unit"}))
    return tmp_path


def _tables(md: str):
    """Markdown tables as lists of rows (cells)."""
    tables, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    return tables


def test_markdown_tables(results):
    paths = write_leaderboard(results, reps=200)
    md = paths["markdown"].read_text()
    assert "suite `unit`" in md
    assert "Overall ranking" in md
    for s in SCENARIOS:
        assert f"Scenario `{s}`" in md
    tables = _tables(md)
    assert len(tables) == 1 + len(SCENARIOS)
    for t in tables:
        width = len(t[0])
        assert all(len(row) == width for row in t), t
        assert set(t[1]) == {"---"}
    overall = tables[0]
    assert overall[2][0] == "1" and overall[2][1] == "CONSENSUS"      # feasible beats the infeasible MAPPO
    assert overall[3][1] == "MAPPO" and "short budget: 8,000 env steps" in overall[3][2]
    assert overall[4][0] == "ref."                                      # the LP is listed, not ranked
    header = tables[1][0]
    assert {"Cost", "Cost / LP", "Violation %", "Backlog slope", "Infeasible", "Consensus err", "Train s",
            "Exec ms/step"} <= set(header)
    row = next(r for r in tables[1] if r[1] == "CONSENSUS")
    assert row[header.index("Cost / LP")].startswith("1.050 [1.050, 1.050]")
    assert row[header.index("Cost")].startswith("102.0 [")               # IQM of 101, 102, 103
    assert row[header.index("Seeds")] == "3"
    mappo = next(r for r in tables[1] if r[1] == "MAPPO")
    assert mappo[header.index("Consensus err")] == "—"
    assert "1 failed run" in md and "seed_9" in md


def test_csv_long_form(results):
    paths = write_leaderboard(results, reps=200)
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert rows and set(rows[0]) == {"scope", "scenario", "method", "label", "kind", "reference", "training", "metric",
                                     "iqm", "ci_low", "ci_high", "n", "rank"}
    scopes = {r["scope"] for r in rows}
    assert scopes == {"overall", "scenario"}
    r = next(r for r in rows if r["scope"] == "scenario" and r["method"] == "consensus" and r["metric"] == "mean_cost"
             and r["scenario"] == SCENARIOS[0])
    assert float(r["iqm"]) == pytest.approx(102.0) and int(r["n"]) == 3 and r["rank"] == "1"
    assert float(r["ci_low"]) <= 102.0 <= float(r["ci_high"])
    # consensus error of MAPPO is absent -> empty cells, not "nan"
    e = next(r for r in rows if r["method"] == "mappo" and r["metric"] == "consensus_error_final")
    assert e["iqm"] == "" and e["n"] == "0"
    assert all(r["iqm"] == "" or math.isfinite(float(r["iqm"])) for r in rows)


def test_marl_eval_json_layout(results):
    paths = write_leaderboard(results, reps=200)
    data = json.loads(paths["json"].read_text())
    assert list(data) == ["cmarl_main"]
    env = data["cmarl_main"]
    assert set(env) == set(SCENARIOS)
    for task, algos in env.items():
        assert set(algos) == set(METHODS)
        run_sets = {tuple(sorted(runs)) for runs in algos.values()}
        assert run_sets == {("seed_0", "seed_1", "seed_2")}            # same runs for every algorithm
        for algo, runs in algos.items():
            for run in runs.values():
                assert set(run) == {"step_0", "absolute_metrics"}
                step = run["step_0"]
                assert isinstance(step["step_count"], int)
                for name, values in list(step.items()) + list(run["absolute_metrics"].items()):
                    if name == "step_count":
                        continue
                    assert isinstance(values, list) and values
                    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
                assert run["absolute_metrics"]["return"] == [-v for v in run["absolute_metrics"]["cost"]]
    assert env[SCENARIOS[0]]["mappo"]["seed_0"]["step_0"]["step_count"] == 8000
    assert "cost_ratio" not in env[SCENARIOS[0]]["mappo"]["seed_0"]["step_0"]      # LP infeasible: left out
    assert env[SCENARIOS[0]]["mappo"]["seed_1"]["absolute_metrics"]["infeasible"] == [1.0, 1.0, 0.0]
    assert "consensus_error" in env[SCENARIOS[0]]["consensus"]["seed_0"]["step_0"]
    summary = json.loads(paths["summary"].read_text())
    assert summary["ranking"] == ["consensus", "mappo"] and summary["suite"] == "unit"


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        write_leaderboard(tmp_path)


def test_update_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{README_START}\nold table\n{README_END}\n\nrest\n")
    assert update_readme(readme, "| new | table |\n")
    text = readme.read_text()
    assert "old table" not in text and "| new | table |" in text and text.endswith("rest\n")
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not update_readme(plain, "x")
    assert plain.read_text() == "no markers\n"
