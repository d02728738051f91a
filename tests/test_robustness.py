"""The robustness suite (benchmarks/suites/robustness.json) and its figures (benchmarks.figures.figure_robustness)."""

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import figures as F  # noqa: E402
from benchmarks.figures import make_figures, robustness_markdown, robustness_table  # noqa: E402
from benchmarks.runner import run_suite  # noqa: E402
from benchmarks.suite import load_suite, parse_suite  # noqa: E402

SMALL = {
    "name": "robustness_small",
    "defaults": {"scenario": {"steps": 48, "start_hour": 100, "start_jitter": 0, "record_agents": 7, "constraint": 0.2},
                 "seeds": [0], "rollouts": 1, "oracle": False},
    "methods": {"loss": {"kind": "consensus", "sweep": {"message_loss": [0.0, 0.5]}},
                "quantize": {"kind": "consensus", "sweep": {"quantize_bits": [0, 2]}},
                "no_consensus": {"kind": "no_consensus"}},
    "experiments": [{"name": "robustness_tiny", "methods": ["loss", "quantize", "no_consensus"]},
                    {"name": "other", "methods": ["loss"], "scenarios": [{"name": "elsewhere"}]}],
}


def test_shipped_suite_sweeps_every_model_on_both_scenarios():
    suite = load_suite("robustness")
    runs = suite.runs()
    params = {}
    for spec in runs:
        params.setdefault(spec.scenario.n_agents, []).append(dict(spec.method.params))
    for n in (7, 1000):
        got = params[n]
        plain = [p for p in got if len(p) == 1]  # one field swept, nothing else changed
        assert [p["message_loss"] for p in plain if "message_loss" in p] == [0.0, 0.1, 0.3, 0.5, 0.8]
        assert [p["delay"] for p in plain if "delay" in p] == [0, 1, 2, 6, 24]
        assert [p["edge_up"] for p in plain if "edge_up" in p] == [1.0, 0.5, 0.2]
        assert [p["update_prob"] for p in plain if "update_prob" in p] == [1.0, 0.8, 0.5, 0.2]
        assert [p["quantize_bits"] for p in plain if "quantize_bits" in p] == [0, 16, 8, 4, 2]
    assert {s.scenario.constraint for s in runs if s.scenario.n_agents == 1000} == {"calibrated"}
    assert {(s.scenario.constraint, s.scenario.graph, s.scenario.steps) for s in runs if s.scenario.n_agents == 7} == \
        {(0.2, "two_clusters", 3000)}
    assert sum(s.method.kind == "no_consensus" for s in runs) == 2
    assert {s.method.params.get("loss_mode") for s in runs if "message_loss" in s.method.params} == {None, "drop"}
    assert any(s.method.params.get("async_catch_up") for s in runs)


def test_figure_per_model_draws_the_run_metrics(tmp_path, monkeypatch):
    report = run_suite(parse_suite(SMALL), tmp_path, backend="serial", progress=False)
    assert report.failed == [], report.failed
    drawn = {}
    save = F._save
    monkeypatch.setattr(F, "_save", lambda fig, out, name: drawn.setdefault(name, fig) and save(fig, out, name))
    out = {f.name: f for f in make_figures(tmp_path, only=["figure_robustness"])}
    assert [p.name for p in out["figure_robustness"].paths] == [
        "figure_robustness_loss.png", "figure_robustness_loss.pdf",
        "figure_robustness_quantize.png", "figure_robustness_quantize.pdf"]
    from benchmarks.aggregate import load_runs

    rows = robustness_table(load_runs(tmp_path)[0])
    assert {r["scenario"] for r in rows} == {"two_clusters_n7_c0.2"}  # the other experiment is not a robustness one
    loss = [r for r in rows if r["model"] == "loss"]
    assert [r["level"] for r in loss] == [0.0, 0.5]
    ax = drawn["figure_robustness_loss"].axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "N = 7"]
    np.testing.assert_allclose(line.get_ydata(), [r["grid_use_ratio"] for r in loss])
    nocons = next(r for r in rows if r["model"] == "no_consensus")
    (dash,) = [ln for ln in ax.get_lines() if ln.get_label() == "no consensus, N = 7"]
    assert dash.get_ydata()[0] == nocons["grid_use_ratio"]
    assert loss[0]["cost_vs_fault_free"] == 1.0
    quant = [r for r in rows if r["model"] == "quantize"]
    assert quant[0]["total_cost"] == loss[0]["total_cost"]  # both fault-free: the same run, bit for bit
    assert quant[1]["fault_bound"] is not None and quant[1]["consensus_error"] <= quant[1]["fault_bound"]
    md = robustness_markdown(rows)
    assert md.count("\n") == len(rows) + 1 and "| 7 | quantize | exact |" in md
    # the README tables: both scenarios side by side, and the theory per faulty run
    from benchmarks import robustness_report

    compact = robustness_report.compact_markdown(rows)
    assert compact.count("| none (fault-free) |") == 1 and "| no_consensus | - |" in compact
    theory = robustness_report.theory_rows(load_runs(tmp_path)[0])
    assert [(t["model"], t["level"]) for t in theory] == [("loss", 0.5), ("quantize", 2.0)]
    assert theory[1]["theory"]["model_bound_holds"] is True
    text = robustness_report.theory_markdown(theory)
    assert "quantised messages: deterministic" in text and "measured only" in text


def test_missing_robustness_runs_are_skipped(tmp_path):
    out = {f.name: f for f in make_figures(tmp_path, only=["figure_robustness"])}
    assert "cmarl bench robustness" in out["figure_robustness"].skipped
