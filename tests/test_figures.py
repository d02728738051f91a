"""Figure generation from a small stored results folder (built here with synthetic method outputs)."""

import json

import numpy as np
import pytest

from benchmarks import methods as M
from benchmarks.figures import FIGURES, make_figures
from benchmarks.runner import run_suite
from benchmarks.suite import parse_suite

STEPS = 60


def synthetic_dual(rounds_default):
    def adapter(spec, ctx):
        steps, n = spec.scenario.steps, spec.scenario.n_agents
        rounds = spec.method.params.get("rounds", rounds_default)
        t = np.arange(steps)
        k = min(spec.scenario.record_agents, n)
        target = 5.0 + spec.scenario.constraint
        lam = np.stack([target * (1 - np.exp(-t / (10 + 5 * i))) for i in range(k)], axis=1)
        if rounds == 0:
            lam = np.minimum(lam * (1 + 0.5 * np.arange(k)), 15.0)
        grid = 6.0 + np.sin(t / 5.0) - (0.5 if rounds else 0.9)
        backlog = np.maximum(0.0, (t - 10) * (0.02 if rounds else 0.3) / (1 + spec.scenario.constraint))
        traj = {"total_grid": grid, "total_demand": np.full(steps, 8.0), "total_backlog": backlog,
                "cost": 0.3 * grid, "grid_limit": np.full(steps, 6.0), "lambda": lam.astype(np.float32),
                "nu": np.zeros((steps, k), np.float32), "lambda_mean": lam.mean(axis=1),
                "consensus_error": np.abs(lam - lam.mean(axis=1, keepdims=True)).mean(axis=1)}
        recs = [M.rollout_record(j, h, grid, backlog, 0.3 * grid, 6.0, consensus_error_final=0.01)
                for j, h in enumerate(spec.start_hours)]
        out = M.MethodOutput(recs, traj, train={"train_wall_time_s": 100.0})
        out.exec_wall_time_s = 1e-5 * n * steps * len(recs)
        return out

    return adapter


def synthetic_marl(spec, ctx):
    steps = spec.scenario.steps
    grid = np.full(steps, 6.5)
    recs = [M.rollout_record(j, h, grid, np.zeros(steps), 0.3 * grid, 6.0) for j, h in enumerate(spec.start_hours)]
    traj = {"total_grid": grid, "total_demand": np.full(steps, 8.0), "total_backlog": np.zeros(steps),
            "cost": 0.3 * grid, "grid_limit": np.full(steps, 6.0)}
    return M.MethodOutput(recs, traj, train={"train_wall_time_s": 5.0, "env_steps": 500})


SUITE = {
    "name": "figs",
    "defaults": {"scenario": {"steps": STEPS, "start_jitter": 12, "record_agents": 7}, "seeds": [0, 1], "rollouts": 2,
                 "oracle": False},
    "methods": {"consensus": {"kind": "consensus"}, "no_consensus": {"kind": "no_consensus"},
                "no_consensus_nu15": {"kind": "no_consensus", "params": {"nu_min": -15.0, "nu_max": 15.0}},
                "rule": {"kind": "rule_based"}, "mappo": {"kind": "mappo", "budget": "short"},
                "isac": {"kind": "isac", "budget": "short"}},
    "experiments": [
        {"name": "main", "methods": ["consensus", "no_consensus", "no_consensus_nu15", "rule", "mappo", "isac"]},
        {"name": "levels", "matrix": {"constraint": [0.2, 0.3, 0.4, 0.5]}, "methods": ["consensus"], "seeds": [0]},
        {"name": "scaling", "scenarios": [{"graph": "small_world"}], "matrix": {"n_agents": [10, 100, 1000]},
         "methods": ["consensus"], "seeds": [0], "rollouts": 1},
    ],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setitem(M.METHODS, "consensus", synthetic_dual(1))
    mp.setitem(M.METHODS, "no_consensus", synthetic_dual(0))
    mp.setitem(M.METHODS, "mappo", synthetic_marl)
    mp.setitem(M.METHODS, "isac", synthetic_marl)
    root = tmp_path_factory.mktemp("results")
    try:
        report = run_suite(parse_suite(SUITE), root, backend="serial", progress=False)
    finally:
        mp.undo()
    assert report.failed == []
    gs = root / "grid_search"
    gs.mkdir()
    for lam in (0.0, 5.0, 10.0, 15.0):
        for nu in (-20.0, -10.0, 0.0, 8.0):
            trial = {"lambda": lam, "nu": nu, "metrics": {"mean_grid_consumption": 10.0 - 0.4 * lam,
                                                          "backlog_slope": 0.1 * (nu + 20) / (1 + lam),
                                                          "grid_limit": 7.0}}
            if lam == 0.0 and nu == 8.0:
                trial["diverged"] = True
            (gs / f"trial_l{lam:g}_n{nu:g}.json").write_text(json.dumps(trial))
    return root


def test_all_figures(results, tmp_path):
    out = make_figures(results, tmp_path / "figs")
    assert [f.name for f in out] == list(FIGURES)
    for fig in out:
        assert fig.skipped is None, (fig.name, fig.skipped)
        assert [p.suffix for p in fig.paths] == [".png", ".pdf"]
        for p in fig.paths:
            assert p.is_file() and p.stat().st_size > 5000, p
        assert fig.paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert fig.paths[1].read_bytes()[:5] == b"%PDF-"


def test_figure_3_adds_a_panel_for_a_narrower_nu_range(results, tmp_path):
    import matplotlib.image

    (fig3,) = [f for f in make_figures(results, tmp_path, only=["figure_3"]) if f.name == "figure_3"]
    height, width = matplotlib.image.imread(fig3.paths[0]).shape[:2]
    assert width / height > 3.0  # three panels (about 3.4; two give about 2.3)


def test_png_is_readable_size(results, tmp_path):
    import matplotlib.image as mpimg

    (fig,) = make_figures(results, tmp_path, only=["figure_2"])
    img = mpimg.imread(fig.paths[0])
    h, w = img.shape[:2]
    assert w >= 1200 and h >= 400          # two panels at 150 dpi


def test_missing_data_is_skipped_with_a_reason(tmp_path, dataset):
    raw = {"name": "refs", "defaults": {"scenario": {"steps": 24}, "seeds": [0], "rollouts": 1, "oracle": False},
           "methods": {"rule": {"kind": "rule_based"}}, "experiments": [{"methods": ["rule"]}]}
    run_suite(parse_suite(raw), tmp_path, backend="serial", progress=False)
    out = {f.name: f for f in make_figures(tmp_path)}
    assert all(not f.paths for f in out.values())
    assert "consensus" in out["figure_2"].skipped
    assert "grid-search" in out["figure_A1"].skipped
    assert "agent counts" in out["figure_A2"].skipped
    assert "baseline" in out["figure_A3"].skipped


def test_figures_command(results, tmp_path, capsys):
    from benchmarks.cli import main

    assert main(["figures", str(results), "--out", str(tmp_path), "--only", "figure_3", "figure_A1"]) == 0
    text = capsys.readouterr().out
    assert "figure_3:" in text and str(tmp_path / "figure_3.png") in text and "figure_A1.pdf" in text
    with pytest.raises(SystemExit):
        main(["figures", str(tmp_path / "missing")])


def test_figure_a2_from_scaling_json(tmp_path):
    """`python -m benchmarks.scaling` writes scaling.json; `cmarl figures --scaling` reads it."""
    folder = tmp_path / "scaling"
    folder.mkdir()
    summary = {"agents": [10, 100, 1000], "seconds_per_step": [0.001, 0.002, 0.01], "steps": 50,
               "graph": "small_world", "lambda_mean": {str(n): list(np.linspace(0, 3, 50)) for n in (10, 100, 1000)}}
    (folder / "scaling.json").write_text(json.dumps(summary))
    (fig,) = make_figures(tmp_path / "empty", tmp_path / "out", scaling=folder, only=["figure_A2"])
    assert fig.skipped is None and all(p.is_file() for p in fig.paths)
