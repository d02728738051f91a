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
    BASELINES,
    EVAL_START_HOURS,
    BaselineConfig,
    CheckpointError,
    MARLController,
    MARLPolicy,
    ScenarioVectorEnv,
    evaluate,
    load_policy,
    save_checkpoint,
    train_baseline,
)
from baselines.marl.common import build_local_actor, encode_local, feature_dim  # noqa: E402
from cmarl_env.core import DemandResponseCore  # noqa: E402
from cmarl_env.evaluation import BACKLOG_SLOPE_LIMIT, ServeAll, evaluation_config, judge, rollout  # noqa: E402

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
# the least training that still goes through every stage (warm-up, updates, both epochs, evaluation, checkpoint)
TINY = dict(total_steps=96, warmup_steps=48, batch_size=64)

_RUNS: dict[tuple[str, bool], dict] = {}


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """Train each baseline once per test module (lazily) and return its summary: ``learn=True`` with the budget
    that learns (the slow tests), else the tiny budget that exercises the code paths."""

    def get(name: str, learn: bool = False) -> dict:
        if (name, learn) not in _RUNS:
            budget = BUDGETS[name] if learn else {k: v for k, v in TINY.items()
                                                   if k in BUDGETS[name] or k != "batch_size"}
            config = BaselineConfig(name=name, **(SMALL | budget))
            _RUNS[name, learn] = train_baseline(config, tmp_path_factory.mktemp(name), data=dataset)
        return _RUNS[name, learn]

    return get


# ------------------------------------------------------------------ learning
@pytest.mark.slow  # real training until the evaluation return improves
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_learns(trained, name):
    summary = trained(name, learn=True)
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
    first = train_baseline(config, tmp_path / "a", data=dataset, eval_start_hours=[0, 100], eval_steps=48)
    second = train_baseline(config, tmp_path / "b", data=dataset, eval_start_hours=[0, 100], eval_steps=48)
    assert first["eval_return_final"] == second["eval_return_final"]
    assert first["evaluation"]["best"]["total_cost"] == second["evaluation"]["best"]["total_cost"]
    stored = json.loads((tmp_path / "a" / "metrics.json").read_text())["evaluation"]
    assert stored["start_hours"] == [0, 100] and [r["steps"] for r in stored["rollouts"]] == [48, 48]
    assert stored["grid_limit"] == stored["rollouts"][0]["grid_limit"] and "feasible" in stored["rollouts"][1]
    with pytest.raises(ValueError, match="runs past the end of the data"):
        train_baseline(config, tmp_path / "c", data=dataset, eval_start_hours=[8750], eval_steps=48)
    assert not (tmp_path / "c").exists()  # refused before anything was trained or written
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


def _plain_rollout(policy, dataset, start, steps, constraint=0.27):
    """What evaluate must compute, written as a plain loop: the policy on the evaluated hours' environment."""
    core = DemandResponseCore(evaluation_config(n_agents=7, constraint=constraint, start_hour=start, steps=steps,
                                                n_hours=dataset.n_steps), dataset)
    obs = core.reset(start_hour=start)
    grid, backlog = [], []
    for _ in range(steps):
        out = core.step(policy.act(obs, core.layout.scale))
        obs = out.obs
        grid.append(out.signals.e_grid.sum())
        backlog.append(out.signals.backlog.sum())
    return core, np.array(grid), np.array(backlog)


def test_evaluate_is_the_one_rollout_and_the_one_rule(dataset):
    """Each roll-out of evaluate is the policy on evaluation_config(start, steps), judged by cmarl_env.evaluation."""
    from cmarl_env.evaluation import backlog_slope

    policy = _constant_policy(1.0, 0.0)  # battery only: everything else waits
    report = evaluate(policy, [0, 500, 1000], steps=300, data=dataset)
    assert report["n_agents"] == 7 and report["start_hours"] == [0, 500, 1000] and len(report["rollouts"]) == 3
    for k, (r, h) in enumerate(zip(report["rollouts"], [0, 500, 1000])):
        core, grid, backlog = _plain_rollout(policy, dataset, h, 300)
        assert r["rollout"] == k and r["start_hour"] == h and r["steps"] == 300
        assert core.window == (h, h + 300)  # the grid limit is set by the evaluated hours only
        assert r["grid_limit"] == pytest.approx(core.grid_limit) and report["grid_limits"][k] == r["grid_limit"]
        assert r["avg_grid_consumption"] == pytest.approx(grid.mean(), abs=1e-12)
        assert r["final_backlog_kwh"] == pytest.approx(backlog[-1])
        assert r["backlog_slope_kwh_per_step"] == pytest.approx(backlog_slope(backlog))
        v = judge(grid.mean(), core.grid_limit, backlog_slope(backlog), 7)
        assert r["feasible"] == v.feasible and r["infeasible_reason"] == v.reason
        # postponing everything: the backlog grows, per agent, beyond the one rule's threshold
        assert r["backlog_slope_per_agent"] > BACKLOG_SLOPE_LIMIT and not r["feasible"]
        assert "backlog slope" in r["infeasible_reason"]
        # the demand left waiting is charged at the horizon's highest price
        max_price = dataset.price[core.layout.building, h:h + 300].max()
        assert r["terminal_backlog_value"] == pytest.approx(backlog[-1] * max_price) and backlog[-1] > 0
        assert r["total_cost"] == pytest.approx(r["energy_cost"] + r["terminal_backlog_value"])
    assert report["infeasible_fraction"] == 1.0
    assert report["mean"]["avg_grid_consumption"] == pytest.approx(
        np.mean([r["avg_grid_consumption"] for r in report["rollouts"]]))

    serve = evaluate(_constant_policy(1.0, 1.0), data=dataset, steps=300)  # default start hours: (0,)
    assert serve["start_hours"] == list(EVAL_START_HOURS) == [0]
    r0 = serve["rollouts"][0]
    assert r0["final_backlog_kwh"] < 1e-3 and abs(r0["backlog_slope_kwh_per_step"]) < 1e-4
    # a = (1, ~1) is (up to the actor's tanh) the serve-all reference on the same hours and limit
    ref = rollout(ServeAll(), DemandResponseCore(evaluation_config(
        n_agents=7, constraint=0.27, start_hour=0, steps=300, n_hours=dataset.n_steps), dataset), 0, 300)
    assert r0["grid_limit"] == ref.grid_limit
    assert r0["avg_grid_consumption"] == pytest.approx(ref.avg_grid, rel=1e-4)
    assert r0["feasible"] == ref.verdict.feasible
    assert serve["best"] is serve["rollouts"][0]
    with pytest.raises(ValueError, match="runs past the end of the data"):
        evaluate(_constant_policy(1.0, 1.0), [0, 1000], steps=8000, data=dataset)
    with pytest.raises(ValueError, match="at least one start hour"):
        evaluate(_constant_policy(1.0, 1.0), [], steps=10, data=dataset)


def test_marl_controller(dataset):
    """reset computes the type one-hot from core.layout.scale; act is the actor on encode_local(obs, onehot)."""
    policy = _constant_policy(0.3, 0.6)
    core = DemandResponseCore(evaluation_config(n_agents=7, constraint=0.27, start_hour=10, steps=20,
                                                n_hours=dataset.n_steps), dataset)
    ctl = MARLController(policy)
    obs = core.reset(start_hour=10)
    ctl.reset(core)
    scales = core.layout.scale
    np.testing.assert_array_equal(ctl.onehot, np.eye(2, dtype=np.float32)[(scales == 2.0).astype(int)])
    np.testing.assert_array_equal(ctl.act(obs), policy.act(obs, scales))
    assert ctl.act(obs).shape == (7, 2)
    r = rollout(ctl, core, 10, 20)
    assert r.controller == "constant" and r.steps == 20
    assert r.info["lagrangian_return_per_agent"] < 0 and r.info["fixed_multipliers"] == [8.0, -8.0]
    # seeded action noise: the same roll-out twice, a different one without noise
    noisy = [rollout(MARLController(policy, action_noise=0.2, seed=1), core, 10, 20) for _ in range(2)]
    np.testing.assert_array_equal(noisy[0].total_grid, noisy[1].total_grid)
    assert not np.array_equal(noisy[0].total_grid, r.total_grid)
    # agents of a type the policy never saw are refused
    odd = DemandResponseCore(evaluation_config(n_agents=3, constraint=0.27, start_hour=0, steps=5, n_hours=dataset.n_steps,
                                               demand_scales=(1.0, 3.0, 1.0)), dataset)
    with pytest.raises(ValueError, match="not agent types this policy"):
        rollout(MARLController(policy), odd, 0, 5)


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
    assert (args.name, args.steps, args.lambda_, args.nu, args.agents, args.eval_start_hours) == ("isac", 10, 6.0, -11.0, 7, [0])
    skip = parser.parse_args(["isac", "--eval-start-hours", "--out", str(tmp_path)])
    assert skip.eval_start_hours == []
    assert parser.parse_args(["isac", "--eval-start-hours", "0", "4000", "--out", str(tmp_path)]).eval_start_hours == [0, 4000]


def test_cmarl_entry_point_reaches_train_baseline(capsys, tmp_path):
    from benchmarks.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train-baseline", "dqn", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "mappo" in capsys.readouterr().err


def test_own_action_q_replaces_only_agent_is_action():
    """MADDPG and MASAC actor updates: Q_i sees the policy's action in agent i's slot and the buffer's elsewhere."""
    import torch

    from baselines.marl.common import JointCritic, own_action_q

    torch.manual_seed(0)
    n, feat, b = 4, 5, 3
    critic = JointCritic(n, feat, (16,))
    obs = torch.randn(b, n, feat)
    taken = torch.rand(b, 2 * n) * 2 - 1
    own = torch.rand(b, 2 * n) * 2 - 1
    q = own_action_q(critic, obs, taken, own, n)
    assert q.shape == (b, n)
    for i in range(n):
        joint = taken.clone()
        joint[:, 2 * i:2 * i + 2] = own[:, 2 * i:2 * i + 2]
        torch.testing.assert_close(q[:, i], critic(obs, joint)[:, i])
    # with the buffer's action in every slot it is the critic on the buffer's joint action
    torch.testing.assert_close(own_action_q(critic, obs, taken, taken, n), critic(obs, taken))
    # and it differs from resampling every agent's action at once (the old MASAC variant)
    assert not torch.allclose(q, critic(obs, own))
