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


def consensus_round(lam, neighbours, eps, weights):
    """One consensus round written plainly: random-walk (neighbour mean) or Metropolis-Hastings weights."""
    n = len(lam)
    if weights == "random_walk":
        mixed = [sum(lam[j] for j in neighbours[i]) / len(neighbours[i]) for i in range(n)]
    else:
        deg = [len(nb) for nb in neighbours]
        mixed = []
        for i in range(n):
            w = {j: 1.0 / (1 + max(deg[i], deg[j])) for j in neighbours[i]}
            mixed.append((1.0 - sum(w.values())) * lam[i] + sum(w[j] * lam[j] for j in neighbours[i]))
    return [lam[i] - eps * (lam[i] - mixed[i]) for i in range(n)]


def reference_lambdas(config, dataset):
    """Algorithm 1 written plainly: a loop over agents and neighbour lists."""
    core = DemandResponseCore(config.env_config(dataset.n_steps), dataset)
    graph, _ = build_graph(config.graph, config.graph_params, config.n_agents, config.seed)
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
            lam = consensus_round(lam, neighbours, d.eps, d.weights)
        nu = [min(max(nu[i] - d.eta * r2[i], -20.0), 20.0) for i in range(config.n_agents)]
        history.append(list(lam))
    return np.array(history)


@pytest.mark.parametrize("graph, rounds, weights", [("two_clusters", 1, "random_walk"), ("ring", 3, "random_walk"),
                                                    ("line", 0, "random_walk"), ("two_clusters", 2, "metropolis"),
                                                    ("small_world", 1, "metropolis")])
def test_matches_plain_reference(dataset, graph, rounds, weights):
    config = ExecutionConfig(n_agents=7, graph=graph, steps=150, start_hour=100,
                             dual=DualConfig(alpha=0.2, eps=0.6, eta=0.1, rounds=rounds, weights=weights))
    result = run_execution(config, {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    np.testing.assert_allclose(result.trajectories["lambda"], reference_lambdas(config, dataset), atol=1e-9, rtol=0)
    assert result.facts["consensus_weights"] == weights


def test_weights_change_the_run_and_the_spectral_facts(dataset):
    """Metropolis and random walk differ on an irregular graph (two_clusters has a bridge), in lambda and in rho;
    the Metropolis consensus value is the plain average, so its consensus error is measured in uniform weights."""
    from algorithms import theory
    from algorithms.dual import DualConsensus

    runs = {}
    for weights in ("random_walk", "metropolis"):
        config = ExecutionConfig(steps=100, dual=DualConfig(alpha=0.2, rounds=1, weights=weights))
        runs[weights] = run_execution(config, {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
        graph, walk = build_graph(config.graph, config.graph_params, 7, config.seed)
        assert runs[weights].facts["rho"] == pytest.approx(theory.spectral_summary(graph, 7, 0.5, weights=weights).rho)
        w = DualConsensus(walk, config.dual, share=1.0).weights
        lam = runs[weights].trajectories["lambda"][-1]
        assert runs[weights].trajectories["consensus_error"][-1] == pytest.approx(
            theory.weighted_norm(lam - w @ lam, w), abs=1e-12)
    assert runs["random_walk"].facts["rho"] != pytest.approx(runs["metropolis"].facts["rho"])
    assert not np.array_equal(runs["random_walk"].trajectories["lambda"], runs["metropolis"].trajectories["lambda"])


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
    dual = DualConfig(alpha=0.05, eta=0.3, rounds=1, nu_min=-1e9, nu_max=1e9)
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


def test_run_folder_metrics_summarise_the_trajectories(dataset, tmp_path):
    """metrics.json is computed from the stored trajectories: grid use, limit, backlog, slope, cost, verdict."""
    from cmarl_env.evaluation import backlog_slope, judge

    config = ExecutionConfig(steps=60, start_hour=200, constraint=0.2)
    result = run_execution(config, {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    write_run(result, tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    traj = np.load(tmp_path / "run" / "trajectories.npz")
    core = DemandResponseCore(config.env_config(dataset.n_steps), dataset)
    # the grid limit is c x the peak over exactly the run's hours [200, 260)
    lo, hi = config.start_hour, config.start_hour + config.steps
    assert np.all(core.layout.offset == 0)
    b, scale = core.layout.building, np.asarray(core.layout.scale)
    peak = (dataset.demand_kwh[b, lo:hi] * scale[:, None]).sum(axis=0).max()
    assert core.window == (lo, hi) and m["peak_demand"] == pytest.approx(peak)
    assert m["grid_limit"] == pytest.approx(0.2 * peak) and np.all(traj["grid_limit"] == m["grid_limit"])
    assert m["steps"] == 60 and m["n_agents"] == 7 and traj["total_grid"].shape == (60,)
    assert m["avg_grid_consumption"] == pytest.approx(traj["total_grid"].mean())
    assert m["grid_use_ratio"] == pytest.approx(traj["total_grid"].mean() / m["grid_limit"])
    assert m["final_backlog_kwh"] == pytest.approx(traj["total_backlog"][-1])
    assert m["backlog_slope_kwh_per_step"] == pytest.approx(backlog_slope(traj["total_backlog"]))
    assert m["energy_cost"] == pytest.approx(traj["cost"].sum())
    prices = dataset.price[b, lo:hi].max()
    assert m["terminal_backlog_value"] == pytest.approx(traj["total_backlog"][-1] * prices)
    assert m["total_cost"] == pytest.approx(m["energy_cost"] + m["terminal_backlog_value"])
    v = judge(m["avg_grid_consumption"], m["grid_limit"], m["backlog_slope_kwh_per_step"], 7)
    assert m["feasible"] == v.feasible and m["infeasible_reason"] == v.reason
    assert m["lambda_final"] == pytest.approx(traj["lambda"][-1].tolist())
    assert m["lambda_spread_final"] == pytest.approx(np.ptp(traj["lambda"][-1]))
    assert m["agent_steps_per_s"] > 0 and m["wall_time_s"] > 0
    assert traj["lambda"].shape == (60, 7) and traj["nu"].shape == (60, 7)
    csv = (tmp_path / "run" / "trajectories.csv").read_text().splitlines()
    assert len(csv) == 61 and csv[0].startswith("total_grid,")
    assert float(csv[1].split(",")[0]) == pytest.approx(traj["total_grid"][0], rel=1e-5)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["dual"]["rounds"] == 1 and stored["dual"]["weights"] == "random_walk"
    facts = json.loads((tmp_path / "run" / "facts.json").read_text())
    assert "versions" in facts and facts["consensus_weights"] == "random_walk"


def test_bad_horizon(dataset):
    with pytest.raises(ValueError, match=r"runs past the end of the data \(8760 hours.*allowed: start_hour \+ steps <= 8760"):
        run_execution(ExecutionConfig(steps=3000, start_hour=7000), {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)


def test_cli_with_shipped_policies(tmp_path, capsys):
    from benchmarks.cli import main

    assert main(["run", "--steps", "48", "--out", str(tmp_path / "cli_run"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "cli_run" / "metrics.json").read_text())
    assert metrics["steps"] == 48 and metrics["n_agents"] == 7
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["grid_limit"] == metrics["grid_limit"] and printed["total_cost"] == metrics["total_cost"]
    # --weights reaches DualConfig and the run folder
    assert main(["run", "--steps", "48", "--weights", "metropolis", "--out", str(tmp_path / "mh"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "mh" / "config.json").read_text())["dual"]["weights"] == "metropolis"
    assert json.loads((tmp_path / "mh" / "facts.json").read_text())["consensus_weights"] == "metropolis"
    mh = json.loads((tmp_path / "mh" / "metrics.json").read_text())
    assert mh["grid_limit"] == metrics["grid_limit"]  # same hours, same limit
    assert mh["lambda_final"] != metrics["lambda_final"]
    with pytest.raises(SystemExit):
        main(["run", "--steps", "48", "--weights", "uniform", "--out", str(tmp_path / "bad")])
