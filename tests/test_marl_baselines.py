"""MARL baselines (MAPPO, MADDPG, MASAC, ISAC with fixed penalties): learning, checkpoints, config, CLI, evaluation.

The learning tests train each baseline on a small instance (3 agents, 24-hour
episodes, a few thousand env steps, fixed seeds) and require the evaluation
return (mean per-agent Lagrangian return on fixed training episodes,
deterministic policy) to beat the untrained policy's by a margin.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tianshou")

from baselines.marl import (  # noqa: E402
    BACKLOG_SLOPE_LIMIT,
    BASELINES,
    GRID_TOLERANCE,
    ROLLOUT_START_STRIDE,
    BaselineConfig,
    CheckpointError,
    MARLPolicy,
    ScenarioVectorEnv,
    backlog_slope,
    evaluate,
    load_policy,
    save_checkpoint,
    train_baseline,
)
from baselines.marl.common import build_local_actor, encode_local, feature_dim  # noqa: E402
from cmarl_env.core import DemandResponseCore  # noqa: E402

SMALL = dict(n_agents=3, episode_length=24, num_envs=4, rollout_steps=24, eval_episodes=8, epochs=2,
             warmup_steps=200, collect_steps=8, seed=0)
# per-baseline budgets (env steps) and settings that learn within seconds
BUDGETS = {
    "mappo": dict(total_steps=1920, batch_size=64, lr=1e-3),
    "maddpg": dict(total_steps=800, updates_per_step=0.5),
    "masac": dict(total_steps=1600, updates_per_step=0.5),
    "isac": dict(total_steps=1200, updates_per_step=0.5),
}
MIN_GAIN = 3.0  # required improvement of the per-agent evaluation return (untrained: about 132 on these episodes)

_RUNS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """Train each baseline once per test module (lazily) and return its summary."""

    def get(name: str) -> dict:
        if name not in _RUNS:
            config = BaselineConfig(name=name, **(SMALL | BUDGETS[name]))
            _RUNS[name] = train_baseline(config, tmp_path_factory.mktemp(name), data=dataset)
        return _RUNS[name]

    return get


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_learns(trained, name):
    summary = trained(name)
    before, after = summary["eval_return_initial"], summary["eval_return_final"]
    assert after > before + MIN_GAIN, f"{name}: evaluation return {before:.2f} -> {after:.2f}, expected a gain > {MIN_GAIN}"
    assert summary["seconds_per_iteration"] > 0 and summary["iterations"] > 0
    assert summary["env_steps"] >= BUDGETS[name]["total_steps"]


@pytest.mark.parametrize("name", BASELINES)
def test_run_folder_and_checkpoint_round_trip(trained, name, dataset, tmp_path):
    summary = trained(name)
    run = summary["run_dir"]
    for fname in ("config.json", "policy.pt", "metrics.json", "versions.json"):
        assert Path(run, fname).is_file(), fname
    metrics = json.loads(Path(run, "metrics.json").read_text())
    assert len(metrics["history"]) == SMALL["epochs"]
    config = json.loads(Path(run, "config.json").read_text())
    assert config["baseline_config"]["name"] == name and config["env_config"]["reward"] == "lagrangian"

    policy = load_policy(summary["checkpoint"])
    assert policy.metadata["name"] == name
    assert policy.metadata["lambda_"] == 8.0 and policy.metadata["nu"] == -8.0
    core = DemandResponseCore(BaselineConfig(name=name, **SMALL).env_config(), dataset)
    obs = core.reset(seed=3)
    a = policy.act(obs, core.layout.scale)
    assert a.shape == (3, 2) and np.all((a >= 0) & (a <= 1))
    again = save_checkpoint(tmp_path / "copy.pt", policy)
    b = load_policy(again).act(obs, core.layout.scale)
    np.testing.assert_array_equal(a, b)

    # the full Tianshou algorithm state (critics, targets, optimizers) restores into a fresh build
    from baselines.marl.training import build, make_env

    config = BaselineConfig.from_dict(policy.metadata["config"])
    built = build(config, make_env(config, dataset))
    state = torch.load(summary["checkpoint"], weights_only=True)["algorithm"]
    built.algorithm.load_state_dict(state)
    restored = MARLPolicy(built.local_actor, policy.metadata).act(obs, core.layout.scale)
    np.testing.assert_array_equal(a, restored)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_policy(bad)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(CheckpointError, match="is not a"):
        load_policy(other)


def test_seeded_training_is_deterministic(dataset, tmp_path):
    config = BaselineConfig(name="maddpg", **(SMALL | dict(total_steps=96, warmup_steps=48, epochs=1)))
    first = train_baseline(config, tmp_path / "a", data=dataset)
    second = train_baseline(config, tmp_path / "b", data=dataset)
    assert first["eval_return_final"] == second["eval_return_final"]
    pa, pb = load_policy(first["checkpoint"]), load_policy(second["checkpoint"])
    for (ka, va), (kb, vb) in zip(pa.actor.state_dict().items(), pb.actor.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


# -------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(name="qmix"), "name"),
        (dict(n_agents=0), "n_agents"),
        (dict(n_agents=2.5), "n_agents"),
        (dict(lambda_=16.0), "lambda_"),
        (dict(nu=-21.0), "nu"),
        (dict(total_steps=0), "total_steps"),
        (dict(lr=0.0), "lr"),
        (dict(batch_size=0), "batch_size"),
        (dict(hidden_sizes=()), "hidden_sizes"),
        (dict(hidden_sizes=(64, 0)), "hidden_sizes"),
        (dict(gamma=1.5), "gamma"),
        (dict(episode_length=0), "episode_length"),
        (dict(train_window=(100, 50)), "train_window"),
        (dict(train_window=(0, 40), episode_length=80), "train_window"),
        (dict(num_envs=3, collect_steps=8), "collect_steps"),
        (dict(device="tpu"), "device"),
        (dict(seed=-1), "seed"),
        (dict(reward_scale=0.0), "reward_scale"),
    ],
)
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        BaselineConfig(**changes)


def test_config_round_trip_and_defaults():
    config = BaselineConfig(name="masac")
    assert (config.lambda_, config.nu, config.n_agents, config.episode_length) == (8.0, -8.0, 7, 80)
    assert config.train_window == (0, 3000) and config.device == "cpu"
    assert BaselineConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    env = config.env_config()
    assert env.reward == "lagrangian" and env.multiplier_mode == "fixed" and env.augment is False
    with pytest.raises(ValueError, match="unknown"):
        config.replace(colour="red")


# ------------------------------------------------------------------- adapter
@pytest.mark.parametrize("mode", ["team", "local", "local_global"])
def test_adapter_matches_the_core(dataset, mode):
    config = BaselineConfig(name="maddpg", **(SMALL | dict(num_envs=2, collect_steps=8)))
    env = ScenarioVectorEnv(config, mode, data=dataset, seed=5)
    ref = DemandResponseCore(config.env_config(), dataset)
    ref.set_multipliers(8.0, -8.0)
    n, f = 3, env.feat_dim
    assert f == feature_dim(2)
    obs, _ = env.reset()
    ref_obs = ref.reset(seed=5 * 1009)  # copy 0's first episode
    onehot = env.onehot
    rng = np.random.default_rng(0)
    for t in range(config.episode_length):
        joint = rng.random((2, n, 2))
        act = joint.reshape(2, -1) if mode == "team" else joint.reshape(2 * n, 2)
        obs_next, rew, term, trunc, info = env.step(act)
        out = ref.step(joint[0])
        expected = encode_local(out.obs, onehot)
        if mode == "team":
            assert obs_next.shape == (2, n, f)
            np.testing.assert_allclose(obs_next[0], expected)
            np.testing.assert_allclose(rew[0], out.reward.mean() / config.reward_scale)
            np.testing.assert_allclose(info[0]["agent_rew"], out.reward / config.reward_scale)
        else:
            width = f if mode == "local" else f * (n + 1)
            assert obs_next.shape == (2 * n, width)
            np.testing.assert_allclose(obs_next[:n, :f], expected)
            np.testing.assert_allclose(rew[:n], out.reward / config.reward_scale)
            if mode == "local_global":
                np.testing.assert_allclose(obs_next[1, f:], expected.ravel())
        assert not term.any()
        assert trunc.all() == (t == config.episode_length - 1)
    again, _ = env.reset()  # the next episode starts at a new random hour
    assert again.shape == obs.shape
    partial = pytest.raises(ValueError, match="whole scenario copies") if mode != "team" else contextlib.nullcontext()
    with partial:  # slots of one copy act together; a team env can step one copy alone
        env.step(np.zeros((1, 2)) if mode != "team" else np.zeros((1, 2 * n)), id=[0])


# ---------------------------------------------------------------- evaluation
def _constant_policy(a_bat: float, a_grid: float, n_agents: int = 7) -> MARLPolicy:
    """A deterministic 'actor' whose output is the constant action (a_bat, a_grid) in [0, 1]."""
    actor = build_local_actor("deterministic", feature_dim(2), (8,))
    with torch.no_grad():
        for p in actor.parameters():
            p.zero_()
        last = [m for m in actor.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.copy_(torch.atanh(torch.tensor([2 * a_bat - 1, 2 * a_grid - 1]).clamp(-0.999999, 0.999999)))
    meta = {"name": "constant", "n_agents": n_agents, "actor_kind": "deterministic", "type_scales": [1.0, 2.0],
            "feature_dim": feature_dim(2), "hidden_sizes": [8], "lambda_": 8.0, "nu": -8.0}
    return MARLPolicy(actor, meta)


def test_evaluate_protocol(dataset):
    postpone = evaluate(_constant_policy(1.0, 0.0), n_rollouts=3, steps=300, data=dataset)
    assert postpone["n_agents"] == 7 and len(postpone["rollouts"]) == 3
    assert postpone["thresholds"] == {"grid_tolerance": GRID_TOLERANCE, "backlog_slope_limit": BACKLOG_SLOPE_LIMIT}
    first = postpone["rollouts"][0]
    assert postpone["start_hours"] == [0, ROLLOUT_START_STRIDE, 2 * ROLLOUT_START_STRIDE]
    assert first["start_hour"] == 0 and first["avg_grid_consumption"] < 1e-2
    assert first["backlog_slope_kwh_per_step"] > BACKLOG_SLOPE_LIMIT and first["infeasible"]
    assert postpone["infeasible_fraction"] == 1.0

    grid = evaluate(_constant_policy(1.0, 1.0), n_rollouts=2, steps=300, data=dataset)
    r0 = grid["rollouts"][0]
    assert r0["final_backlog_kwh"] < 1e-3 and abs(r0["backlog_slope_kwh_per_step"]) < 1e-4
    assert r0["total_cost"] > 0
    assert r0["infeasible"] == (r0["avg_grid_consumption"] > GRID_TOLERANCE * r0["grid_limit"])
    # roll-outs starting in other weeks see other data
    assert grid["rollouts"][1]["total_cost"] != r0["total_cost"]
    with pytest.raises(ValueError, match="beyond the dataset"):
        evaluate(_constant_policy(1.0, 1.0), n_rollouts=10, steps=8000, data=dataset)


def test_backlog_slope():
    assert backlog_slope(np.arange(30.0) * 0.5) == pytest.approx(0.5)
    assert backlog_slope(np.r_[np.zeros(20), np.full(10, 3.0)]) == pytest.approx(0.0)


# ----------------------------------------------------------------------- CLI
def test_cli_unknown_name_lists_the_baselines(capsys, tmp_path):
    from baselines import train_cli

    parser = argparse.ArgumentParser(prog="cmarl train-baseline")
    train_cli.configure(parser)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["qmix", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "qmix" in err
    for name in BASELINES:
        assert name in err
    args = parser.parse_args(["isac", "--steps", "10", "--lambda", "6", "--nu", "-11", "--out", str(tmp_path)])
    assert (args.name, args.steps, args.lambda_, args.nu, args.agents, args.eval_rollouts) == ("isac", 10, 6.0, -11.0, 7, 10)


def test_cmarl_entry_point_reaches_train_baseline(capsys, tmp_path):
    from benchmarks.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train-baseline", "dqn", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "mappo" in capsys.readouterr().err
