"""Learned-multiplier baselines (MAPPO-L ``mappo_lagrangian``, networked primal-dual ``networked_pd``).

Learning tests (small instance: 3 agents, 24-hour episodes, fixed seeds, a few seconds each):

* the primal part learns: with the dual steps off (``dual_lr_* = 0``) and the multipliers held at the paper's
  pair (lambda, mu) = (6, 11), a short run raises the training objective - the per-agent Lagrangian return
  ``r0 + 6 (c/N - e_grid) - 11 r2`` on fixed training episodes - by a margin;
* the dual part moves the right way: on a tight grid constraint (c = 0.05 of the peak, far below what any
  policy uses) the grid multiplier rises from 0 and the demand multipliers rise while backlog grows faster than
  the slack; on a loose one (c = 1, demand slack 1 kWh/h) every multiplier stays at 0.

Plus the pieces: config defaults and errors, the env's constraint-signal infos against the core, the
neighbourhood observation, the dual step (projection, consensus), checkpoints and run folder, CLI and registry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tianshou")

from baselines.marl import (  # noqa: E402
    ALL_BASELINES,
    BASELINES,
    LAGRANGIAN_BASELINES,
    BaselineConfig,
    MARLController,
    ScenarioVectorEnv,
    evaluate_return,
    load_policy,
    train_baseline,
)
from baselines.marl.common import encode_local, neighbourhood_table, scenario_adjacency  # noqa: E402
from baselines.marl.lagrangian import LagrangianPPO  # noqa: E402
from cmarl_env.core import DemandResponseCore  # noqa: E402

SMALL = dict(n_agents=3, episode_length=24, num_envs=4, rollout_steps=24, eval_episodes=8, epochs=2,
             batch_size=64, lr=1e-3, seed=0)
FIXED = dict(lambda_=6.0, nu=-11.0, dual_lr_grid=0.0, dual_lr_demand=0.0)  # multipliers held at (6, 11)
LEARN_STEPS = 3840
MIN_GAIN = 2.0  # required gain of the per-agent Lagrangian training return at (6, 11) (untrained: 92.7; seed 0 gains 4.6, 5.4)

_RUNS: dict[tuple, dict] = {}


def _train(dataset, tmp_path_factory, name: str, **changes) -> dict:
    key = (name, tuple(sorted(changes.items())))
    if key not in _RUNS:
        config = BaselineConfig(name=name, **(SMALL | changes))
        _RUNS[key] = train_baseline(config, tmp_path_factory.mktemp(name), data=dataset)
    return _RUNS[key]


# --------------------------------------------------------------------- learning
@pytest.mark.parametrize("name", LAGRANGIAN_BASELINES)
def test_primal_update_improves_the_lagrangian_objective(dataset, tmp_path_factory, name):
    s = _train(dataset, tmp_path_factory, name, total_steps=LEARN_STEPS, **FIXED)
    before, after = s["eval_return_initial"], s["eval_return_final"]
    assert after > before + MIN_GAIN, f"{name}: Lagrangian return at (6, 11) {before:.2f} -> {after:.2f}"
    m = s["multipliers_final"]  # held: no dual step moved them
    assert m["lambda"] == [6.0] * len(m["lambda"]) and m["mu"] == [11.0] * 3 and m["dual_updates"] == s["iterations"]


@pytest.mark.parametrize("name", LAGRANGIAN_BASELINES)
def test_multipliers_move_in_the_right_direction(dataset, tmp_path_factory, name):
    tight = _train(dataset, tmp_path_factory, name, total_steps=480, epochs=1, constraint_fraction=0.05)
    loose = _train(dataset, tmp_path_factory, name, total_steps=480, epochs=1, constraint_fraction=1.0,
                   demand_slack=1.0)
    hist = json.loads(Path(tight["run_dir"], "metrics.json").read_text())["dual_history"]
    assert len(hist) == tight["iterations"] == 5
    assert all(r["grid_excess"] > 0 for r in hist)              # c = 0.05: every batch violates the grid limit
    lam = [r["lambda_mean"] for r in hist]
    assert lam[0] > 0 and all(b > a for a, b in zip(lam, lam[1:])), lam   # ... so lambda rises every update
    assert tight["multipliers_final"]["mu_mean"] > 0             # backlog grows faster than 0.005 kWh/h at first
    m = loose["multipliers_final"]
    assert max(m["lambda"]) == 0.0 and max(m["mu"]) == 0.0, m    # nothing violated: the multipliers stay at 0


@pytest.mark.slow  # the full primal-dual loop: the rising grid multiplier drives the training batches' grid use down
@pytest.mark.parametrize("name", LAGRANGIAN_BASELINES)
def test_tight_constraint_lowers_grid_use(dataset, tmp_path_factory, name):
    # demand constraint relaxed (slack 1 kWh/h), so only the grid multiplier acts; it reaches the cap, and the
    # grid excess of the collected batches falls. (Slowly: with a fitted critic, using the grid less in one hour
    # mostly delays the grid use to later hours, so the per-step advantage of postponing is small.)
    s = _train(dataset, tmp_path_factory, name, total_steps=4800, constraint_fraction=0.05, dual_lr_grid=5.0,
               demand_slack=1.0)
    hist = json.loads(Path(s["run_dir"], "metrics.json").read_text())["dual_history"]
    assert s["multipliers_final"]["lambda_mean"] > 10.0 and s["multipliers_final"]["mu_mean"] == 0.0
    first = np.mean([r["grid_excess"] for r in hist[:10]])
    last = np.mean([r["grid_excess"] for r in hist[-10:]])
    assert last < first - 0.05, (first, last)


# ------------------------------------------------------------------ dual step
def _algorithm(name: str, **changes) -> LagrangianPPO:
    from baselines.marl.training import build, make_env

    config = BaselineConfig(name=name, **(SMALL | changes))
    return build(config, make_env(config)).algorithm


def test_dual_step_is_projected_ascent_on_the_measured_violation():
    alg = _algorithm("mappo_lagrangian", dual_lr_grid=2.0, dual_lr_demand=10.0, lambda_=1.0, nu=-0.5,
                     demand_slack=0.01)
    agent = np.array([0, 1, 2, 0, 1, 2])
    grid = np.array([0.3, 0.3, 0.3, 0.1, 0.1, 0.1])           # mean excess 0.2 kWh
    r2 = np.array([0.05, 0.0, -0.2, 0.05, 0.0, -0.2])        # per agent 0.05, 0, -0.2
    rec = alg.dual_step(grid, r2, agent)
    m = alg.multipliers()
    assert m["lambda"] == pytest.approx([1.0 + 2.0 * 0.2])
    assert m["mu"] == pytest.approx([0.5 + 10 * 0.04, 0.5 - 10 * 0.01, 0.0])   # the last one projected onto 0
    assert rec["update"] == 1 and int(alg.dual_updates) == 1
    alg.dual_step(np.full(6, 100.0), np.full(6, 100.0), agent)                 # the box: lambda <= 15, mu <= 20
    assert alg.multipliers()["lambda"] == [15.0] and alg.multipliers()["mu"] == [20.0] * 3


def test_networked_multipliers_are_local_and_averaged_with_the_neighbours():
    alg = _algorithm("networked_pd", graph="line", dual_lr_grid=1.0, dual_lr_demand=0.0)
    assert alg.grid_multiplier.shape == (3,)
    w = alg.consensus.toarray()
    assert np.allclose(w.sum(axis=0), 1) and np.allclose(w.sum(axis=1), 1)   # Metropolis: doubly stochastic
    assert w[0, 2] == 0 and w[0, 1] > 0                                       # line 0-1-2: 0 and 2 not neighbours
    agent = np.arange(3)
    alg.dual_step(np.array([3.0, 0.0, 0.0]), np.zeros(3), agent)              # only agent 0 exceeds its share
    lam = np.array(alg.multipliers()["lambda"])
    assert lam.tolist() == [3.0, 0.0, 0.0]
    alg.dual_step(np.zeros(3), np.zeros(3), agent)                            # one averaging round, no excess
    lam2 = np.array(alg.multipliers()["lambda"])
    assert lam2 == pytest.approx(w @ lam) and lam2.sum() == pytest.approx(3.0) and lam2[1] > 0 and lam2[2] == 0
    for _ in range(200):
        alg.dual_step(np.zeros(3), np.zeros(3), agent)
    assert np.array(alg.multipliers()["lambda"]) == pytest.approx([1.0] * 3)  # consensus on the average
    none = _algorithm("networked_pd", graph="line", dual_lr_grid=1.0, consensus_rounds=0)
    none.dual_step(np.array([3.0, 0.0, 0.0]), np.zeros(3), agent)
    none.dual_step(np.zeros(3), np.zeros(3), agent)
    assert none.multipliers()["lambda"] == [3.0, 0.0, 0.0]                    # no exchange without rounds


# ------------------------------------------------------------------- adapter
@pytest.mark.parametrize("name", LAGRANGIAN_BASELINES)
def test_signal_infos_match_the_core(dataset, name):
    config = BaselineConfig(name=name, **(SMALL | dict(num_envs=2, graph="line")))
    env = ScenarioVectorEnv(config, config.env_mode, data=dataset, seed=5)
    ref = DemandResponseCore(config.env_config(), dataset)
    n = 3
    env.reset()
    ref_obs = ref.reset(seed=5 * 1009)
    rng = np.random.default_rng(1)
    for _ in range(5):
        joint = rng.random((2, n, 2))
        obs, rew, _, _, infos = env.step(joint.reshape(2 * n, 2))
        out = ref.step(joint[0])
        for j in range(n):
            info = infos[j]
            assert info["agent"] == j
            assert info["r0"] == pytest.approx(out.signals.r0[j])
            assert info["grid"] == pytest.approx(out.signals.e_grid[j] - ref.share)
            assert info["r2"] == pytest.approx(out.signals.r2[j])
            assert rew[j] == pytest.approx(out.signals.r0[j] / config.reward_scale)   # the reward is the objective
        ref_obs = out.obs
    local = encode_local(ref_obs, env.onehot)
    f = env.feat_dim
    if name == "networked_pd":   # line 0-1-2: [own, neighbours, zero padding] (max degree 2)
        assert obs.shape == (2 * n, 3 * f)
        np.testing.assert_allclose(obs[0], np.concatenate([local[0], local[1], np.zeros(f)]))
        np.testing.assert_allclose(obs[1], np.concatenate([local[1], local[0], local[2]]))
        np.testing.assert_allclose(obs[2], np.concatenate([local[2], local[1], np.zeros(f)]))
    else:                        # MAPPO's [own, global state]
        np.testing.assert_allclose(obs[1], np.concatenate([local[1], local.ravel()]))


def test_neighbourhood_table_follows_the_scenario_graph():
    config = BaselineConfig(name="networked_pd", n_agents=7)
    table = neighbourhood_table(scenario_adjacency(config))   # two clusters {0..3}, {4..6}, edge (3, 4)
    assert table.shape == (7, 5)
    assert table[3].tolist() == [3, 0, 1, 2, 4] and table[0].tolist() == [0, 1, 2, 3, -1]
    assert table[6].tolist() == [6, 4, 5, -1, -1]


# ---------------------------------------------------------------- config / CLI
def test_config_defaults_and_errors():
    assert (BaselineConfig(name="mappo_lagrangian").lambda_, BaselineConfig(name="networked_pd").nu) == (0.0, 0.0)
    assert (BaselineConfig(name="mappo").lambda_, BaselineConfig(name="mappo").nu) == (8.0, -8.0)
    c = BaselineConfig(name="networked_pd", graph_params={"k": 2}, graph="small_world")
    assert c.graph_params == (("k", 2),) and BaselineConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    for changes, field in [(dict(nu=2.0), "nu=2.0"), (dict(lambda_=15.0, lambda_max=10.0), "lambda_=15.0"),
                           (dict(graph="moebius"), "graph='moebius'"), (dict(dual_lr_grid=-1.0), "dual_lr_grid"),
                           (dict(consensus_weights="uniform"), "consensus_weights='uniform'"),
                           (dict(graph_params=[1, 2]), "graph_params"), (dict(mu_max=30.0), "mu_max")]:
        with pytest.raises(ValueError, match=field.replace("(", r"\(").replace("[", r"\[")):
            BaselineConfig(name="mappo_lagrangian", **changes)
    assert BaselineConfig(name="mappo", nu=2.0).nu == 2.0   # a positive fixed nu stays allowed


def test_cli_knows_the_learned_multiplier_baselines(tmp_path, capsys):
    from baselines import train_cli

    parser = argparse.ArgumentParser(prog="cmarl train-baseline")
    train_cli.configure(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["qmix", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert all(name in err for name in ALL_BASELINES)
    args = parser.parse_args(["networked_pd", "--graph", "ring", "--constraint", "0.2", "--out", str(tmp_path / "x")])
    assert (args.graph, args.constraint, args.lambda_, args.nu) == ("ring", 0.2, None, None)
    args.nu = 1.0
    with pytest.raises(SystemExit, match="nu=1.0"):
        train_cli.run(args)


def test_registry_and_suites():
    from benchmarks import registry
    from benchmarks.suite import load_suite

    for kind in LAGRANGIAN_BASELINES:
        m = registry.get(kind)
        assert m.trains and m.seeded and "graph" not in m.params and "dual_lr_grid" in m.params
    assert registry.get("mappo_lagrangian").label == "MAPPO-L"
    quick = load_suite("quick")
    for suite, budget in (("quick", "short"), ("baselines", "full"), ("paper", "full")):
        methods = {m.kind: m for m in load_suite(suite).methods.values()}
        for kind in LAGRANGIAN_BASELINES:
            assert methods[kind].budget == budget, (suite, kind)
    steps = {m.kind: m.params.get("total_steps") for m in quick.methods.values()}
    assert all(steps[k] <= 12_000 for k in LAGRANGIAN_BASELINES), steps   # the quick suite stays quick
    assert set(BASELINES) & set(LAGRANGIAN_BASELINES) == set()


# ---------------------------------------------------------- checkpoint / run
def test_run_folder_checkpoint_and_execution_without_multipliers(dataset, tmp_path_factory, tmp_path):
    s = _train(dataset, tmp_path_factory, "networked_pd", total_steps=LEARN_STEPS, **FIXED)
    metrics = json.loads(Path(s["run_dir"], "metrics.json").read_text())
    assert len(metrics["dual_history"]) == s["iterations"]
    assert [h["multipliers"]["dual_updates"] for h in metrics["history"]] == [h["iterations"] for h in metrics["history"]]
    policy = load_policy(s["checkpoint"])
    assert policy.metadata["multipliers_final"] == s["multipliers_final"]
    assert policy.metadata["feature_dim"] == 7 + 2          # local features + type one-hot: no multiplier inputs
    # the multipliers are part of the algorithm state and restore into a fresh build
    from baselines.marl.training import build, make_env

    config = BaselineConfig.from_dict(policy.metadata["config"])
    built = build(config, make_env(config, dataset))
    built.algorithm.load_state_dict(torch.load(s["checkpoint"], weights_only=True)["algorithm"])
    assert built.algorithm.multipliers() == s["multipliers_final"]
    from cmarl_env.evaluation import evaluation_config, rollout

    ctl = MARLController(policy)
    cfg = evaluation_config(n_agents=3, constraint=0.27, start_hour=0, steps=24, n_hours=dataset.n_steps)
    rollout(ctl, DemandResponseCore(cfg, dataset), 0, 24)
    assert ctl.summary()["learned_multipliers_mean"] == [6.0, -11.0] and "not use them" in ctl.summary()["note"]
    again = evaluate_return(policy, config, data=dataset)
    assert again["lagrangian_return"] == pytest.approx(s["eval_return_final"])
