"""Figures from a small real results folder: the plotted data (Line2D, bars, markers, colour mesh) equals the stored
trajectories and metrics they are drawn from."""

import json

import numpy as np
import pytest
from matplotlib.container import BarContainer
from scipy.stats import trim_mean

pytest.importorskip("torch")

from benchmarks import figures as F  # noqa: E402
from benchmarks import registry  # noqa: E402
from benchmarks.aggregate import interval_estimate, load_runs, score_matrix  # noqa: E402
from benchmarks.figures import FIGURES, make_figures, running_mean  # noqa: E402
from benchmarks.registry import MethodDef, Prepared  # noqa: E402
from benchmarks.runner import run_suite  # noqa: E402
from benchmarks.suite import parse_suite  # noqa: E402
from cmarl_env.evaluation import Controller, judge  # noqa: E402

STEPS = 48
SUITE = {
    "name": "figs",
    "defaults": {"scenario": {"steps": STEPS, "start_hour": 100, "start_jitter": 0, "record_agents": 7},
                 "seeds": [0, 1], "rollouts": 1, "oracle": False},
    "methods": {"consensus": {"kind": "consensus"}, "no_consensus": {"kind": "no_consensus"},
                "no_consensus_nu15": {"kind": "no_consensus", "params": {"nu_min": -15.0, "nu_max": 15.0}},
                "serve_all": {"kind": "serve_all"},
                "tuned": {"kind": "tuned_share", "budget": "short"}},
    "experiments": [
        {"name": "main", "scenarios": [{"name": "main", "constraint": 0.27}],
         "methods": ["consensus", "no_consensus", "no_consensus_nu15", "serve_all", "tuned"]},
        {"name": "levels", "matrix": {"constraint": [0.2, 0.3]}, "methods": ["consensus"]},
        {"name": "scaling", "scenarios": [{"graph": "small_world", "constraint": 0.5}],
         "matrix": {"n_agents": [10, 100]},
         "methods": ["consensus"]},
    ],
}
# grid-search trials: (lambda, nu) -> what the trial file stores
TRIALS = {
    (0.0, -20.0): {"feasible": True},                                   # stored verdicts win
    (0.0, 0.0): {"feasible": False},
    (5.0, -20.0): {"n_agents": 7, "limit": 7.0, "grid": 7.07, "slope": 0.035},    # at both edges: feasible
    (5.0, 0.0): {"n_agents": 7, "limit": 7.0, "grid": 7.08, "slope": 0.0},        # grid use over 1.01 x limit
    (10.0, -20.0): {"n_agents": 1, "limit": 7.0, "grid": 6.0, "slope": 0.035},    # slope per agent too high
    (10.0, 0.0): {"n_agents": 7, "limit": 7.0, "grid": 6.0, "slope": 0.01, "diverged": True},
}


class GridShare(Controller):
    """Battery first, then a fixed share of the rest from the grid."""

    name = "grid_share"

    def __init__(self, share):
        self.share = share

    def act(self, obs):
        a = np.ones((obs.shape[0], 2))
        a[:, 1] = self.share
        return a


def _prepare_tuned(spec, ctx):
    """A learned baseline in miniature: its "training" (a seeded choice of the grid share) depends on the seed."""
    share = float(np.random.default_rng(spec.seed).uniform(0.5, 1.0))
    return Prepared(controller=lambda: GridShare(share), config={"share": share},
                    train={"env_steps": 100, "budget_detail": "short budget: 100 env steps"})


@pytest.fixture(scope="module")
def tuned_kind():
    """A method trained in the run (registry: trains=True), like the MARL baselines of Figure A.3 (which need
    Tianshou's numba compilation, too slow here; they go through the same registry flag)."""
    registry.register(MethodDef(kind="tuned_share", label="Tuned share", prepare=_prepare_tuned, seeded=True,
                                trains=True, budget="short", colour="tab:olive"))
    yield
    registry._REGISTRY.pop("tuned_share", None)


@pytest.fixture(scope="module")
def results(tmp_path_factory, dataset, tuned_kind):
    root = tmp_path_factory.mktemp("results")
    report = run_suite(parse_suite(SUITE), root, backend="serial", progress=False)
    assert report.failed == [], report.failed
    gs = root / "grid_search"
    gs.mkdir()
    for (lam, nu), t in TRIALS.items():
        trial = {"lambda": lam, "nu": nu, "metrics": {"mean_grid_consumption": t.get("grid", 6.5 - 0.1 * lam),
                                                      "backlog_slope": t.get("slope", 0.01 * (nu + 20)),
                                                      "grid_limit": t.get("limit", 7.0)}}
        for key in ("feasible", "n_agents", "diverged"):
            if key in t:
                trial[key] = t[key]
        (gs / f"trial_l{lam:g}_n{nu:g}.json").write_text(json.dumps(trial))
    return root


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib Figure of every figure drawn (saved as usual)."""
    figs = {}
    save = F._save

    def keep(fig, out_dir, name):
        figs[name] = fig
        return save(fig, out_dir, name)

    monkeypatch.setattr(F, "_save", keep)
    return figs


def _folder(root, scenario, method, seed=0):
    return root / "runs" / scenario / method / f"seed_{seed}"


def _traj(root, scenario, method, seed=0):
    with np.load(_folder(root, scenario, method, seed) / "trajectories.npz") as z:
        return {k: z[k] for k in z.files}


def _rollout0(root, scenario, method, seed=0):
    return json.loads((_folder(root, scenario, method, seed) / "rollouts.json").read_text())[0]


def _metrics(root, scenario, method, seed=0):
    return json.loads((_folder(root, scenario, method, seed) / "metrics.json").read_text())


def _line(ax, label):
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return line


def _y(ax, label):
    return np.asarray(_line(ax, label).get_ydata(), dtype=float)


PAPER_FIGURES = ("figure_2", "figure_3", "figure_4", "figure_A1", "figure_A2", "figure_A3")


def test_all_figures_are_written(results, tmp_path):
    out = make_figures(results, tmp_path / "figs")
    assert [f.name for f in out] == list(FIGURES) and set(PAPER_FIGURES) <= set(FIGURES)
    for fig in out:
        if fig.name not in PAPER_FIGURES:      # figures of other suites (e.g. the ablations): skipped with a reason
            assert fig.paths or fig.skipped, fig.name
            continue
        assert fig.skipped is None, (fig.name, fig.skipped)
        assert [p.name for p in fig.paths] == [f"{fig.name}.png", f"{fig.name}.pdf"]
        assert fig.paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert fig.paths[1].read_bytes()[:5] == b"%PDF-"


def test_figure_2_draws_the_running_means_and_the_backlogs(results, tmp_path, drawn):
    make_figures(results, tmp_path, only=["figure_2"])
    fig = drawn["figure_2"]
    a, b = fig.axes[0], fig.axes[1]
    cons, nocons = _traj(results, "main", "consensus"), _traj(results, "main", "no_consensus")
    np.testing.assert_allclose(_y(a, "Demand"), running_mean(cons["total_demand"]))
    np.testing.assert_allclose(_y(a, "Grid consumption with consensus"), running_mean(cons["total_grid"]))
    np.testing.assert_allclose(_y(a, "Grid consumption without consensus"), running_mean(nocons["total_grid"]))
    np.testing.assert_array_equal(_line(a, "Demand").get_xdata(), np.arange(1, STEPS + 1))
    # the last point of a running mean is the roll-out's average grid use in rollouts.json
    assert _y(a, "Grid consumption with consensus")[-1] == pytest.approx(
        _rollout0(results, "main", "consensus")["avg_grid_consumption"])
    limit = _y(a, "grid limit (c = 0.27 of peak)")
    assert np.all(limit == pytest.approx(_rollout0(results, "main", "consensus")["grid_limit"]))
    # (b): one backlog curve per constraint level of the 7-agent two-clusters consensus runs
    levels = {"Constraint = 0.20": "two_clusters_n7_c0.2", "Constraint = 0.27": "main",
              "Constraint = 0.30": "two_clusters_n7_c0.3"}
    assert {ln.get_label() for ln in b.get_lines() if ln.get_label().startswith("Constraint")} == set(levels)
    for label, scenario in levels.items():
        np.testing.assert_allclose(_y(b, label), _traj(results, scenario, "consensus")["total_backlog"])
    assert _y(b, "Constraint = 0.20")[-1] == pytest.approx(
        _rollout0(results, "two_clusters_n7_c0.2", "consensus")["final_backlog_kwh"])


def test_figure_3_draws_cost_and_backlog_with_a_panel_for_the_narrow_nu_runs(results, tmp_path, drawn):
    make_figures(results, tmp_path, only=["figure_3"])
    fig = drawn["figure_3"]
    assert len(fig.axes) == 3
    for method, label in (("consensus", "With consensus"), ("no_consensus", "Without consensus")):
        t = _traj(results, "main", method)
        np.testing.assert_allclose(_y(fig.axes[0], label), np.cumsum(t["cost"]))
        np.testing.assert_allclose(_y(fig.axes[1], label), t["total_backlog"])
        r0 = _rollout0(results, "main", method)
        assert _y(fig.axes[0], label)[-1] == pytest.approx(r0["energy_cost"])     # cumulative cost = energy bought
        assert _y(fig.axes[1], label)[-1] == pytest.approx(r0["final_backlog_kwh"])
    narrow = _traj(results, "main", "no_consensus_nu15")
    np.testing.assert_allclose(_y(fig.axes[2], "Without consensus"), narrow["total_backlog"])
    assert "[-15, 15]" in fig.axes[2].get_title()
    # without the narrow-nu runs: two panels
    records = [r for r in load_runs(results)[0] if r.method != "no_consensus_nu15"]
    F.figure_3(records, tmp_path / "two")
    assert len(drawn["figure_3"].axes) == 2


def test_figure_4_draws_the_stored_multipliers(results, tmp_path, drawn):
    make_figures(results, tmp_path, only=["figure_4"])
    fig = drawn["figure_4"]
    assert len(fig.axes) == 2
    for ax, method in zip(fig.axes, ("consensus", "no_consensus")):
        lam = _traj(results, "main", method)["lambda"]
        assert lam.shape == (STEPS, 7)
        agents = [ln for ln in ax.get_lines() if ln.get_label().startswith("Agent ")]
        assert len(agents) >= 3
        for ln in agents:
            i = int(ln.get_label().split()[1])
            np.testing.assert_allclose(ln.get_ydata(), lam[:, i])
        # the paper's double-demand agents (0 and ceil(7 / 2) = 4) are tagged
        assert {ln.get_label() for ln in agents} >= {"Agent 0 (double demand)", "Agent 4 (double demand)"}


def test_figure_A1_markers_are_the_verdicts_and_the_mesh_the_grid_use(results, tmp_path, drawn):
    make_figures(results, tmp_path, only=["figure_A1"])
    fig = drawn["figure_A1"]
    expected = set()
    for (lam, nu), t in TRIALS.items():
        if t.get("diverged"):
            continue
        verdict = t["feasible"] if "feasible" in t else judge(t["grid"], t["limit"], t["slope"], t["n_agents"]).feasible
        if verdict:
            expected.add((lam, nu))
    assert expected == {(0.0, -20.0), (5.0, -20.0)}
    for ax in fig.axes[:2]:
        (markers,) = ax.collections[1:]
        assert {tuple(p) for p in markers.get_offsets().tolist()} == expected
    mesh = fig.axes[0].collections[0].get_array()
    lams, nus = sorted({k[0] for k in TRIALS}), sorted({k[1] for k in TRIALS})
    grid = np.ma.getdata(mesh).reshape(len(nus), len(lams))
    mask = np.ma.getmaskarray(mesh).reshape(len(nus), len(lams))
    for (lam, nu), t in TRIALS.items():
        i, j = nus.index(nu), lams.index(lam)
        assert mask[i, j] == bool(t.get("diverged"))                        # diverged trials are blank
        if not t.get("diverged"):
            assert grid[i, j] == pytest.approx(t.get("grid", 6.5 - 0.1 * lam))


def test_figure_A2_draws_the_timings_and_the_multiplier_running_means(results, tmp_path, drawn):
    make_figures(results, tmp_path, only=["figure_A2"])
    fig = drawn["figure_A2"]
    scen = {10: "small_world_n10_c0.5", 100: "small_world_n100_c0.5"}
    timing = _line(fig.axes[0], "execution time per step")
    np.testing.assert_array_equal(timing.get_xdata(), [10, 100])
    per_step = [_metrics(results, s, "consensus")["exec_seconds_per_step"] for s in scen.values()]
    np.testing.assert_allclose(timing.get_ydata(), 1000 * np.array(per_step))
    for n, s in scen.items():
        t = _traj(results, s, "consensus")
        np.testing.assert_allclose(_y(fig.axes[1], f"{n:,} agents"), running_mean(t["lambda_mean"]))


def test_figure_A2_from_scaling_json(tmp_path, drawn):
    """`python -m benchmarks.scaling` writes scaling.json; `cmarl figures --scaling` reads it."""
    folder = tmp_path / "scaling"
    folder.mkdir()
    lam = {n: np.linspace(0, 3, 50) * (1 + n / 1000) for n in (10, 100, 1000)}
    summary = {"agents": [10, 100, 1000], "seconds_per_step": [0.001, 0.002, 0.01], "steps": 50,
               "graph": "small_world", "lambda_mean": {str(n): v.tolist() for n, v in lam.items()}}
    (folder / "scaling.json").write_text(json.dumps(summary))
    (fig,) = make_figures(tmp_path / "empty", tmp_path / "out", scaling=folder, only=["figure_A2"])
    assert fig.skipped is None and all(p.is_file() for p in fig.paths)
    drawn_fig = drawn["figure_A2"]
    np.testing.assert_allclose(_y(drawn_fig.axes[0], "execution time per step"), [1.0, 2.0, 10.0])
    for n, v in lam.items():
        np.testing.assert_allclose(_y(drawn_fig.axes[1], f"{n:,} agents"), running_mean(v))


def test_figure_A2_from_calibrated_scaling_runs(tmp_path, dataset):
    raw = {"name": "cal", "defaults": {"scenario": {"graph": "small_world", "constraint": "calibrated", "steps": 24,
                                                    "start_jitter": 0, "record_agents": 5},
                                       "seeds": [0], "rollouts": 1, "oracle": False},
           "methods": {"consensus": {"kind": "consensus"}},
           "experiments": [{"name": "x", "matrix": {"n_agents": [10, 20]}, "methods": ["consensus"]}]}
    assert run_suite(parse_suite(raw), tmp_path, backend="serial", progress=False).failed == []
    (fig,) = make_figures(tmp_path, tmp_path / "out", only=["figure_A2"])
    assert fig.skipped is None, fig.skipped


def test_figure_A3_draws_the_baselines_grid_use_and_cost_iqms(results, tmp_path, drawn):
    make_figures(results, tmp_path, only=["figure_A3"])
    fig = drawn["figure_A3"]
    left, right = fig.axes
    cons = _traj(results, "main", "consensus")
    tuned = _traj(results, "main", "tuned", seed=0)                   # roll-out 0 of the first seed
    np.testing.assert_allclose(_y(left, "Dual consensus (ours)"), running_mean(cons["total_grid"]))
    np.testing.assert_allclose(_y(left, "Tuned share (short budget: 100 env steps)"), running_mean(tuned["total_grid"]))
    assert _line(left, "Tuned share (short budget: 100 env steps)").get_color() == "tab:olive"   # the registry's
    assert np.all(_y(left, "grid limit") == pytest.approx(float(np.mean(cons["grid_limit"]))))
    # serve-all is no trained baseline: not drawn
    assert [t.get_text() for t in right.get_xticklabels()] == ["Dual consensus", "Tuned share"]
    costs = {"Dual consensus": [_metrics(results, "main", "consensus")["total_cost"]],
             "Tuned share": [_metrics(results, "main", "tuned", s)["total_cost"] for s in (0, 1)]}
    assert costs["Tuned share"][0] != costs["Tuned share"][1]        # two seeds, two trained controllers
    (bars,) = [c for c in right.containers if isinstance(c, BarContainer)]
    heights = [p.get_height() for p in bars.patches]
    assert heights == pytest.approx([trim_mean(costs["Dual consensus"], 0.25), trim_mean(costs["Tuned share"], 0.25)])
    # error bars: the rliable interval of the runs' costs
    st = interval_estimate(score_matrix([costs["Tuned share"]]))
    segments = bars.errorbar.lines[2][0].get_segments()
    assert segments[1][:, 1] == pytest.approx([st.ci_low, st.ci_high])
    assert st.ci_low < heights[1] < st.ci_high
    assert segments[0][:, 1] == pytest.approx([heights[0], heights[0]])     # one run: no spread
    notes = [t.get_text() for t in right.texts]
    inf = [_metrics(results, "main", "consensus")["infeasible_fraction"],
           np.mean([_metrics(results, "main", "tuned", s)["infeasible_fraction"] for s in (0, 1)])]
    assert notes == [f"{100 * f:.0f}% infeas." for f in inf]


def test_missing_data_is_skipped_with_a_reason(tmp_path, dataset):
    raw = {"name": "refs", "defaults": {"scenario": {"steps": 24}, "seeds": [0], "rollouts": 1, "oracle": False},
           "methods": {"rule": {"kind": "rule_based"}}, "experiments": [{"methods": ["rule"]}]}
    run_suite(parse_suite(raw), tmp_path, backend="serial", progress=False)
    out = {f.name: f for f in make_figures(tmp_path)}
    assert all(not f.paths for f in out.values())
    assert "consensus" in out["figure_2"].skipped
    assert "grid-search" in out["figure_A1"].skipped
    assert "agent counts" in out["figure_A2"].skipped
    assert "trains=True" in out["figure_A3"].skipped
    assert not (tmp_path / "figures").exists() or not list((tmp_path / "figures").iterdir())


def test_figures_command(results, tmp_path, capsys):
    from benchmarks.cli import main

    assert main(["figures", str(results), "--out", str(tmp_path), "--only", "figure_3", "figure_A1"]) == 0
    text = capsys.readouterr().out
    assert "figure_3:" in text and str(tmp_path / "figure_3.png") in text and "figure_A1.pdf" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure_3.pdf", "figure_3.png", "figure_A1.pdf",
                                                          "figure_A1.png"]
    with pytest.raises(SystemExit):
        main(["figures", str(tmp_path / "missing")])


def test_figure_dual_steps_tabulates_every_pair_and_marks_the_default(tmp_path, dataset, drawn):
    """A small alpha x eta sweep (the layout of suite dual_steps): one row per pair with its infeasible roll-outs,
    the heat-maps drawn; without such runs the figure is skipped with a reason."""
    from algorithms.dual import DualConfig

    alphas, etas = [DualConfig().alpha, 0.05], [DualConfig().eta, 0.2]
    raw = {"name": "steps", "defaults": {"scenario": {"steps": 24, "start_jitter": 5}, "seeds": [0], "rollouts": 2,
                                         "oracle": False},
           "methods": {"ours": {"kind": "consensus", "sweep": {"alpha": alphas, "eta": etas}},
                       "rule": {"kind": "rule_based"}},
           "experiments": [{"methods": ["ours", "rule"]}]}
    run_suite(parse_suite(raw), tmp_path, backend="serial", progress=False)
    records, _ = load_runs(tmp_path)
    rows = F.dual_steps_table(records)
    assert [(x["alpha"], x["eta"]) for x in rows] == [(a, e) for a in sorted(alphas) for e in sorted(etas)]
    for x in rows:
        run = next(r for r in records if r.kind == "consensus" and F._params(r)["alpha"] == x["alpha"]
                   and F._params(r)["eta"] == x["eta"])
        assert (x["infeasible"], x["rollouts"]) == (run.metrics["n_infeasible"], 2)
        assert x["cost_ratio"] is None  # no LP in this suite
    paths = F.figure_dual_steps(records, tmp_path / "figs")
    assert [p.name for p in paths] == ["figure_dual_steps.png", "figure_dual_steps.pdf"]
    with pytest.raises(F.MissingData, match="alpha and eta"):
        F.figure_dual_steps([r for r in records if r.kind != "consensus"], tmp_path / "none")
