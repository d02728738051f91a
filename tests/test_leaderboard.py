"""Leaderboard files from a real (tiny) results folder: every number traced back to the run folders it summarises;
scenario headers with the LP frontier, serve-all use and whether the level binds; marl-eval JSON; README block."""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import trim_mean

from benchmarks.aggregate import METRICS, RunRecord, aggregate, interval_estimate, score_matrix
from benchmarks.leaderboard import README_END, README_START, fmt_stat, markdown, update_readme, write_leaderboard
from benchmarks.runner import run_suite
from benchmarks.suite import parse_suite

REPS = 200
SUITE = {
    "name": "unit",
    "defaults": {"scenario": {"steps": 48, "start_hour": 100, "start_jitter": 24, "seed": 1},
                 "seeds": [0, 1], "rollouts": 2, "oracle": True},
    "methods": {"serve_all": {"kind": "serve_all"}, "grid_only": {"kind": "grid_only"},
                "rule_based": {"kind": "rule_based"}, "random": {"kind": "random"},
                "lp_oracle": {"kind": "lp_oracle", "note": "clairvoyant lower bound"}},
    "experiments": [{"name": "main",
                     "scenarios": [{"name": "bind", "constraint": "calibrated", "label": "calibrated level"},
                                   {"name": "loose", "constraint": 0.9}],
                     "methods": ["serve_all", "grid_only", "rule_based", "random", "lp_oracle"]}],
}
SCENARIOS = ("bind", "loose")
METRIC = {m.key: m for m in METRICS}


@pytest.fixture(scope="module")
def results(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("results")
    report = run_suite(parse_suite(SUITE), root, backend="serial", progress=False)
    assert report.failed == []
    err = root / "runs" / "loose" / "mappo" / "seed_9"
    err.mkdir(parents=True)
    (err / "error.json").write_text(json.dumps({"run_id": "loose/mappo/seed_9", "error_type": "RuntimeError",
                                                "error": "boom"}))
    paths = write_leaderboard(root, reps=REPS)
    return root, paths


def _runs(root: Path, scenario: str, method: str) -> list[dict]:
    folders = sorted((root / "runs" / scenario / method).glob("seed_*/metrics.json"))
    return [json.loads(p.read_text()) for p in folders]


def _iqm(root, scenario, method, key) -> float:
    vals = [m[key] for m in _runs(root, scenario, method) if m.get(key) is not None]
    return float(trim_mean(vals, 0.25)) if vals else math.nan


def _facts(root, scenario) -> dict:
    return json.loads((root / "scenarios" / f"{scenario}.json").read_text())


def _expected_ranks(root, scenario) -> dict[str, float]:
    """Within-scenario ranks recomputed from the run folders: infeasible fraction, then cost / LP (IQMs)."""
    keys = {m: (round(_iqm(root, scenario, m, "infeasible_fraction"), 6), _iqm(root, scenario, m, "cost_ratio"))
            for m in ("serve_all", "grid_only", "rule_based", "random")}
    order = sorted(keys, key=keys.get)
    assert len(set(keys.values())) == len(keys), keys  # no ties in this fixture
    return {m: float(i + 1) for i, m in enumerate(order)}


def _tables(md: str):
    """Markdown tables as lists of rows (cells), each preceded by the nearest heading."""
    tables, cur, heading = [], [], None
    for line in md.splitlines():
        if line.startswith("#"):
            heading = line
        if line.startswith("|"):
            cur.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif cur:
            tables.append((heading, cur))
            cur = []
    if cur:
        tables.append((heading, cur))
    return tables


def _section(md: str, scenario: str) -> str:
    start = md.index(f"#### Scenario `{scenario}`")
    end = md.find("#### Scenario", start + 1)
    return md[start:end if end > 0 else len(md)]


# --------------------------------------------------------------------------- markdown
def test_scenario_headers_show_the_recorded_facts(results):
    root, paths = results
    md = paths["markdown"].read_text()
    for s in SCENARIOS:
        f = _facts(root, s)
        head = _section(md, s).split("\n\n")[1]
        expected = f"LP frontier {f['lp_frontier']:.3f} and serve-all grid use {f['serve_all_grid']:.3f} of the peak"
        assert expected in head
        assert f"c = {f['constraint']:.4g}" in head
        limits = [m["grid_limit"] for m in _runs(root, s, "serve_all")]
        assert f"grid limit about {np.mean(limits):.2f} kWh/h" in head
    bind, loose = _facts(root, "bind"), _facts(root, "loose")
    assert bind["calibrated"] and bind["binding"] and not loose["binding"]
    assert bind["lp_frontier"] < bind["constraint"] < bind["serve_all_grid"]
    assert loose["serve_all_grid"] < 0.9
    assert "#### Scenario `bind` (calibrated level)" in md
    assert "(calibrated: frontier + 0.5 x (serve-all - frontier)" in _section(md, "bind")
    assert ": **binding**" in _section(md, "bind")
    assert "**not binding: the serve-all controller already meets it**" in _section(md, "loose")


def test_scenario_tables_are_the_iqms_of_the_runs(results):
    root, paths = results
    md = paths["markdown"].read_text()
    tables = {h: t for h, t in _tables(md)}
    for s in SCENARIOS:
        (table,) = [t for h, t in tables.items() if h and h.startswith(f"#### Scenario `{s}`")]
        header, rows = table[0], table[2:]
        assert set(table[1]) == {"---"} and all(len(r) == len(header) for r in table)
        assert header[:3] == ["Rank", "Method", "Training"] and header[-1] == "Runs"
        assert header[3:-1] == [m.label for m in METRICS]
        by_label = {r[1]: r for r in rows}
        labels = {m: _runs(root, s, m)[0]["label"] for m in SUITE["methods"]}
        assert set(by_label) == set(labels.values())
        ranks = _expected_ranks(root, s)
        for method, label in labels.items():
            row = by_label[label]
            runs = _runs(root, s, method)
            assert row[header.index("Runs")] == str(len(runs)) == str(2 if method == "random" else 1)
            assert row[0] == ("ref." if method == "lp_oracle" else f"{ranks[method]:g}")
            for key in ("total_cost", "cost_ratio", "grid_use_ratio", "backlog_slope_per_agent",
                        "max_agent_backlog_kwh", "infeasible_fraction", "train_wall_time_s"):
                d = METRIC[key]
                cell = row[header.index(d.label)]
                iqm = _iqm(root, s, method, key)
                assert cell.split(" [")[0] == f"{iqm * d.scale:.{d.digits}f}", (s, method, key, cell)
                if len(runs) > 1 and d.interval:
                    st = interval_estimate(score_matrix([[m[key] for m in runs]]), reps=REPS)
                    assert cell == fmt_stat(st, d.scale, d.digits) and st.ci_low <= iqm <= st.ci_high
                    assert cell.endswith("]")
                else:
                    assert " [" not in cell                    # an interval only where one was bootstrapped
            assert row[header.index("Consensus err")] == "—"
        # rows are in rank order, the LP (a reference) last
        assert [r[0] for r in rows] == [f"{v:g}" for v in sorted(ranks.values())] + ["ref."]
        lp = by_label[labels["lp_oracle"]]
        assert lp[header.index("Cost / LP")] == "1.000"


def test_overall_ranking_over_the_common_scenarios(results):
    root, paths = results
    md = paths["markdown"].read_text()
    assert "Over the scenarios every ranked method ran: `bind`, `loose`." in md
    heading, overall = _tables(md)[0]
    assert heading == "#### Overall ranking"
    mean_rank = {m: np.mean([_expected_ranks(root, s)[m] for s in SCENARIOS])
                 for m in ("serve_all", "grid_only", "rule_based", "random")}

    def pooled(method, key):  # the IQM over both scenarios' runs (ties of the mean rank are broken by these)
        return trim_mean([m[key] for s in SCENARIOS for m in _runs(root, s, method)], 0.25)

    order = sorted(mean_rank, key=lambda m: (mean_rank[m], round(pooled(m, "infeasible_fraction"), 6),
                                             pooled(m, "cost_ratio")))
    labels = {m: _runs(root, "bind", m)[0]["label"] for m in mean_rank}
    got = [(r[0], r[1], r[3]) for r in overall[2:]]
    assert [g[1] for g in got] == [labels[m] for m in order]
    for rank, label, mr in got:
        method = next(m for m, lab in labels.items() if lab == label)
        assert mr == f"{mean_rank[method]:.2f}"
    assert [g[0] for g in got] == ["1", "2", "3", "4"]            # the LP is not ranked
    assert "P(ours better)" not in overall[0]                      # no dual-consensus run here
    header = overall[0]
    # the overall cost ratio pools both scenarios: IQM of the runs x scenarios matrix
    serve = next(r for r in overall[2:] if r[1] == labels["serve_all"])
    values = [_runs(root, s, "serve_all")[0]["cost_ratio"] for s in SCENARIOS]
    assert serve[header.index("Cost / LP")] == f"{trim_mean(values, 0.25):.3f}"
    summary = json.loads(paths["summary"].read_text())
    assert summary["suite"] == "unit" and summary["common_scenarios"] == list(SCENARIOS)
    assert summary["mean_rank"] == pytest.approx(mean_rank)
    assert summary["scenario_facts"]["bind"]["lp_frontier"] == _facts(root, "bind")["lp_frontier"]


def test_failures_are_listed(results):
    _, paths = results
    md = paths["markdown"].read_text()
    assert "**1 failed run(s)**" in md and "`loose/mappo/seed_9`" in md
    summary = json.loads(paths["summary"].read_text())
    assert summary["failures"] == [{"run_id": "loose/mappo/seed_9", "error": "RuntimeError: boom"}]


def _record(scenario, method, kind, seed, ratio, infeasible=0.0):
    m = {"kind": kind, "label": method.upper(), "reference": False, "cost_ratio": ratio, "total_cost": 100 * ratio,
         "infeasible_fraction": infeasible, "budget": "none", "budget_detail": "", "note": "", "n_rollouts": 1,
         "grid_limit": 1.5}
    spec = {"scenario": {"n_agents": 7, "graph": "ring", "constraint": 0.2, "steps": 24, "start_hour": 0,
                         "start_jitter": 0}}
    return RunRecord(f"{scenario}/{method}/seed_{seed}", scenario, method, seed, m, Path("."), spec)


def test_markdown_scenario_headers_for_each_case():
    recs = [_record(s, m, kind, seed, 1.2 + 0.01 * seed) for s in ("a", "b", "c") for m, kind in
            (("x", "mappo"), ("y", "random")) for seed in range(2)]
    facts = {"a": {"lp_frontier": 0.18, "serve_all_grid": 0.21, "constraint": 0.2, "binding": True,
                   "hours": [0, 24]},
             "b": {"lp_frontier": 0.25, "serve_all_grid": 0.3, "constraint": 0.2, "binding": False, "hours": [0, 24]},
             "c": {"lp_frontier": 0.18, "serve_all_grid": 0.19, "constraint": 0.2, "binding": False, "hours": [0, 24]}}
    md = markdown(aggregate(recs, reps=REPS, scenario_facts=facts), "synthetic")
    assert "LP frontier 0.180 and serve-all grid use 0.210 of the peak on hours 0-24: **binding**" in _section(md, "a")
    assert "**not binding: below the LP frontier, no controller can meet it**" in _section(md, "b")
    assert "**not binding: the serve-all controller already meets it**" in _section(md, "c")
    assert "P(ours better)" not in _tables(md)[0][1][0]                          # no dual consensus: no column
    # a method that ran only one scenario removes the overall ranking's other scenarios
    only_a = aggregate(recs + [_record("a", "solo", "grid_only", 0, 0.9)], reps=REPS)
    assert only_a.common_scenarios == ["a"] and only_a.ranking[0] == "solo"
    assert "Over the scenarios every ranked method ran: `a`." in markdown(only_a)
    none = aggregate([_record("a", "x", "grid_only", 0, 1.0), _record("b", "y", "serve_all", 0, 1.0)], reps=REPS)
    assert "No scenario was run by every ranked method" in markdown(none)


def test_markdown_probability_of_improvement_column():
    recs = []
    for seed in range(3):
        recs += [_record("a", "ours", "consensus", seed, 1.2 + 0.01 * seed),
                 _record("a", "worse", "mappo", seed, 1.5 + 0.01 * seed),
                 _record("a", "infeasible", "random", seed, 1.0, infeasible=1.0)]
    agg = aggregate(recs, reps=REPS)
    _, overall = _tables(markdown(agg, "synthetic"))[0]
    assert overall[0][-1] == "P(ours better)"
    rows = {r[1]: r for r in overall[2:]}
    assert [r[1] for r in overall[2:]] == ["OURS", "WORSE", "INFEASIBLE"]
    assert rows["OURS"][-1] == "—"
    assert agg.improvement["worse"].iqm == 1.0 and agg.improvement["infeasible"].iqm == 1.0
    assert rows["WORSE"][-1] == fmt_stat(agg.improvement["worse"], 1.0, 2) == "1.00 [1.00, 1.00]"
    assert rows["INFEASIBLE"][-1] == "1.00 [1.00, 1.00]"        # cheaper, but infeasible in every run


# --------------------------------------------------------------------------- CSV and JSON
def test_csv_long_form_matches_the_aggregate(results):
    root, paths = results
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert rows and list(rows[0]) == ["scope", "scenario", "method", "label", "kind", "reference", "training",
                                      "metric", "iqm", "ci_low", "ci_high", "n", "rank"]
    assert {r["scope"] for r in rows} == {"overall", "scenario"}
    for s in SCENARIOS:
        ranks = _expected_ranks(root, s)
        for method in SUITE["methods"]:
            mine = {r["metric"]: r for r in rows if r["scope"] == "scenario" and r["scenario"] == s
                    and r["method"] == method}
            assert set(mine) == {m.key for m in METRICS}
            for key in ("total_cost", "cost_ratio", "infeasible_fraction", "grid_use_ratio"):
                r = mine[key]
                assert float(r["iqm"]) == pytest.approx(_iqm(root, s, method, key), rel=1e-12)
                assert int(r["n"]) == len(_runs(root, s, method))
                if r["ci_low"]:
                    assert float(r["ci_low"]) <= float(r["iqm"]) <= float(r["ci_high"])
            assert mine["total_cost"]["rank"] == ("" if method == "lp_oracle" else f"{ranks[method]:g}")
            assert mine["total_cost"]["reference"] == str(method == "lp_oracle")
            # absent metrics are empty cells, not "nan"
            assert mine["consensus_error_final"]["iqm"] == "" and mine["consensus_error_final"]["n"] == "0"
    assert all(r["iqm"] == "" or math.isfinite(float(r["iqm"])) for r in rows)
    overall_ranked = [r["method"] for r in rows if r["scope"] == "overall" and r["metric"] == "total_cost"
                      and r["rank"]]
    assert overall_ranked == json.loads(paths["summary"].read_text())["ranking"]


def test_marl_eval_json_holds_the_rollouts(results):
    root, paths = results
    data = json.loads(paths["json"].read_text())
    assert list(data) == ["cmarl_main"]
    env = data["cmarl_main"]
    assert set(env) == set(SCENARIOS)
    for task, algos in env.items():
        assert set(algos) == set(SUITE["methods"])
        assert set(algos["random"]) == {"seed_0", "seed_1"} and set(algos["serve_all"]) == {"seed_0"}
        for algo, runs in algos.items():
            for seed, run in runs.items():
                assert set(run) == {"step_0", "absolute_metrics"}
                assert run["step_0"]["step_count"] == 0                  # nothing was trained
                rollouts = json.loads((root / "runs" / task / algo / seed / "rollouts.json").read_text())
                got = run["absolute_metrics"]
                assert got["cost"] == pytest.approx([r["total_cost"] for r in rollouts])
                assert got["return"] == [-v for v in got["cost"]]
                assert got["cost_ratio"] == pytest.approx([r["cost_ratio"] for r in rollouts])
                assert got["grid_use_ratio"] == pytest.approx([r["grid_use_ratio"] for r in rollouts])
                assert got["backlog_slope"] == pytest.approx([r["backlog_slope_kwh_per_step"] for r in rollouts])
                assert got["infeasible"] == [float(r["infeasible"]) for r in rollouts]
                assert "consensus_error" not in got
                assert {k: v for k, v in run["step_0"].items() if k != "step_count"} == got


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        write_leaderboard(tmp_path)


def test_update_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{README_START}\nold table\n{README_END}\n\nrest\n")
    assert update_readme(readme, "| new | table |\n")
    text = readme.read_text()
    assert text == f"# Title\n\n{README_START}\n| new | table |\n{README_END}\n\nrest\n"
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not update_readme(plain, "x")
    assert plain.read_text() == "no markers\n"


def test_a_training_column_never_shows_one_runs_learned_multipliers_for_another():
    from benchmarks.leaderboard import shared_detail

    a = "short budget: 6,400 env steps; multipliers learned from (0, 0) to lambda 3.41 (means)"
    b = "short budget: 6,400 env steps; multipliers learned from (0, 0) to lambda 3.54 (means)"
    assert shared_detail([a, a]) == a
    assert shared_detail([a, b]) == ("short budget: 6,400 env steps; multipliers learned from (0, 0) to lambda 3.41 "
                                     "(means) / multipliers learned from (0, 0) to lambda 3.54 (means)")
    assert shared_detail([a, "short budget: 6,400 env steps"]) == "short budget: 6,400 env steps"
    assert shared_detail(["", ""]) == ""
