"""Algorithm 1 execution: against a plain per-agent reference, the theory bound, the run folder."""

import json
import math

import numpy as np
import pytest

from algorithms.dual import DualConfig
from algorithms.execute import ExecutionConfig, build_graph, run_execution, write_run
from cmarl_env.core import DemandResponseCore


def greedy_policy(obs):
    """A fixed policy that reacts to its multipliers: less grid when lambda is high, more when nu is low."""
    lam, nu = obs[:, 7], obs[:, 8]
    grid = np.clip(1.0 - 0.9 * lam + 0.8 * (0.5 - nu), 0.0, 1.0)
    return np.stack([np.full(len(obs), 0.7), grid], axis=1)


def reference_lambdas(config, dataset):
    """Algorithm 1 written plainly: a loop over agents and neighbour lists."""
    core = DemandResponseCore(config.env_config(dataset.n_steps), dataset)
    graph, _ = build_graph(config)
    neighbours = [sorted(graph.neighbors(i)) for i in range(config.n_agents)]
    d = config.dual
    lam = [0.0] * config.n_agents
    nu = [0.0] * config.n_agents
    obs = core.reset(start_hour=config.start_hour)
    history = []
    for _ in range(config.steps):
        core.lam, core.nu = np.array(lam), np.array(nu)
        obs = core.observe()
        out = core.step(greedy_policy(obs))
        e, r2 = out.signals.e_grid, out.signals.r2
        lam = [min(max(lam[i] + d.alpha * (e[i] - core.share), 0.0), 15.0) for i in range(config.n_agents)]
        for _ in range(d.rounds):
            lam = [lam[i] - d.eps * (lam[i] - sum(lam[j] for j in neighbours[i]) / len(neighbours[i]))
                   for i in range(config.n_agents)]
        nu = [min(max(nu[i] - d.eta * r2[i], -20.0), 20.0) for i in range(config.n_agents)]
        history.append(list(lam))
    return np.array(history)


@pytest.mark.parametrize("graph, rounds", [("two_clusters", 1), ("ring", 3), ("line", 0)])
def test_matches_plain_reference(dataset, graph, rounds):
    config = ExecutionConfig(n_agents=7, graph=graph, steps=150, start_hour=100,
                             dual=DualConfig(alpha=0.2, eps=0.6, eta=0.1, rounds=rounds))
    result = run_execution(config, {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    np.testing.assert_allclose(result.trajectories["lambda"], reference_lambdas(config, dataset), atol=1e-9, rtol=0)


def test_consensus_error_within_theorem_bound(dataset):
    config = ExecutionConfig(n_agents=30, graph="small_world", steps=300, dual=DualConfig(alpha=0.1, eps=0.5, rounds=2))
    result = run_execution(config, {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    err, bound = result.trajectories["consensus_error"], result.trajectories["consensus_bound"]
    assert np.all(np.isfinite(bound))
    assert np.all(err <= bound + 1e-12)
    assert err.max() > 0  # the check is not vacuous
    assert 0 < result.facts["rho"] < 1


def test_no_consensus_has_no_bound_and_spreads(dataset):
    config = ExecutionConfig(steps=200, dual=DualConfig(alpha=0.2, rounds=0))
    result = run_execution(config, {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    assert math.isinf(result.metrics["consensus_bound_final"])
    with_consensus = run_execution(ExecutionConfig(steps=200, dual=DualConfig(alpha=0.2, rounds=1)),
                                   {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    assert result.metrics["lambda_spread_final"] > with_consensus.metrics["lambda_spread_final"]


def test_nu_tracks_the_backlog(dataset):
    """r2 telescopes (r2_t = B_{t+1} - B_t), so while unclipped nu_i = -eta * B_i: the nu range bounds each backlog."""
    dual = DualConfig(eta=0.3, rounds=1, nu_min=-1e9, nu_max=1e9)
    result = run_execution(ExecutionConfig(steps=300, dual=dual), {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    t = result.trajectories
    assert t["total_backlog"].max() > 1.0  # not vacuous
    np.testing.assert_allclose(t["nu"].sum(axis=1), -dual.eta * t["total_backlog"], rtol=1e-9, atol=1e-9)


def test_projection_range_narrower_than_training_range(dataset):
    """Observations keep the training normalisation (checkpoints still match); the dual step clips to the narrower range."""
    config = ExecutionConfig(steps=300, dual=DualConfig(eta=0.3, rounds=0, nu_min=-2.0, nu_max=2.0))
    core = DemandResponseCore(config.env_config(dataset.n_steps), dataset)
    assert core.nu_range == (-20.0, 20.0)
    result = run_execution(config, data=dataset)  # the shipped policies, checked against the environment
    nu = result.trajectories["nu"]
    assert nu.min() == pytest.approx(-2.0) and nu.max() <= 2.0


def test_run_folder(dataset, tmp_path):
    result = run_execution(ExecutionConfig(steps=30), {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    write_run(result, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("avg_grid_consumption", "grid_limit", "final_backlog_kwh", "backlog_slope_kwh_per_step", "lambda_final",
                "lambda_spread_final", "total_cost", "n_agents", "steps", "wall_time_s", "agent_steps_per_s"):
        assert key in metrics
    assert len(metrics["lambda_final"]) == 7
    traj = np.load(tmp_path / "run" / "trajectories.npz")
    assert traj["lambda"].shape == (30, 7)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dual"]["rounds"] == 1
    assert "versions" in json.loads((tmp_path / "run" / "facts.json").read_text())


def test_bad_horizon(dataset):
    with pytest.raises(ValueError, match="exceeds the dataset's 8760 hours"):
        run_execution(ExecutionConfig(steps=3000, start_hour=7000), {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)


def test_cli_with_shipped_policies(tmp_path):
    from benchmarks.cli import main

    assert main(["run", "--steps", "48", "--out", str(tmp_path / "cli_run"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "cli_run" / "metrics.json").read_text())
    assert metrics["steps"] == 48 and metrics["n_agents"] == 7
