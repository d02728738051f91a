"""State-augmented PPO training: config validation, the Tianshou adapter, a tiny run, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tianshou")

from algorithms.policy import load_policy  # noqa: E402
from algorithms.train import (  # noqa: E402
    TianshouBatchedEnv,
    TrainConfig,
    make_batched_env,
    train,
)
from benchmarks.cli import main as cli_main  # noqa: E402
from cmarl_env.core import observation_layout  # noqa: E402

TINY = dict(num_envs=32, rollout_steps=80, batch_size=512, update_repeats=4, eval_episodes=16, epochs=1)


# ------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("num_envs", 0, "[1, "),
        ("gamma", 1.5, "[0.0, 1.0]"),
        ("gae_lambda", -0.1, "[0.0, 1.0]"),
        ("lr", 0.0, "(0.0, 1.0]"),
        ("demand_scale", -1.0, "(0.0, "),
        ("total_steps", 0, "[1, "),
        ("reward_scale", 0.0, "(0.0, "),
        ("seed", -1, "[0, "),
        ("hidden_sizes", (64, 0), "[1, 4096]"),
    ],
)
def test_config_errors_name_the_field_and_range(field, value, allowed):
    with pytest.raises(ValueError) as info:
        TrainConfig(**{field: value})
    msg = str(info.value)
    assert field.split("[")[0] in msg and allowed in msg


def test_config_errors_for_other_kinds():
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="hidden_sizes"):
        TrainConfig(hidden_sizes=())
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_config_derived_values_and_round_trip():
    cfg = TrainConfig(num_envs=64, rollout_steps=80, total_steps=100_000, epochs=3, demand_scale=2.0)
    assert cfg.collect_steps == 5120
    assert cfg.epoch_steps % cfg.collect_steps == 0 and cfg.epoch_steps * cfg.epochs >= cfg.total_steps
    assert cfg.resolved_reward_scale == 20.0
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    env = cfg.env_config()
    assert env.augment and env.multiplier_mode == "sampled" and env.reward == "lagrangian"
    assert env.episode_length == 80 and env.split == "train"
    assert env.lambda_range == (0.0, 15.0) and env.nu_range == (-20.0, 20.0)


# ------------------------------------------------------------------ adapter
def test_adapter_steps_all_copies_and_hands_back_final_observations(dataset):
    cfg = TrainConfig(num_envs=8, episode_length=5, demand_scale=2.0)
    env = TianshouBatchedEnv(make_batched_env(cfg, 8, dataset), reward_scale=4.0, seed=3)
    assert len(env) == 8 and not env.is_async
    assert env.action_space[0].shape == (2,) and env.observation_space[0].shape == (9,)
    obs, infos = env.reset()
    assert obs.shape == (8, 9) and len(infos) == 8
    lam, nu = env.core.lam.copy(), env.core.nu.copy()
    assert np.all((lam >= 0) & (lam <= 15)) and np.all((nu >= -20) & (nu <= 20))
    assert len(np.unique(lam)) == 8  # sampled per copy
    rng = np.random.default_rng(0)
    for t in range(5):
        act = rng.uniform(0, 1, (8, 2))
        nxt, rew, term, trunc, _ = env.step(act)
        assert not term.any()
        assert trunc.all() == (t == 4)
    # obs_next of the last step is the final observation, not the reset one
    final = nxt
    np.testing.assert_allclose(final[:, 7], lam / 15.0, atol=1e-6)
    reset_obs, _ = env.reset(env_id=np.arange(8))
    assert not np.allclose(reset_obs[:, 7], final[:, 7])  # new multipliers were drawn
    # rewards are the Lagrangian reward divided by the scale
    core = env.core
    sums_before = env.signal_sums["lagrangian_reward"]
    _, rew, _, _, _ = env.step(np.full((8, 2), 0.5))
    assert np.isclose(rew.mean() * 4.0, env.signal_sums["lagrangian_reward"] - sums_before)
    # a subset of copies can be stepped (the others are parked)
    out = env.step(np.full((3, 2), 0.5), id=[0, 2, 5])
    assert out[0].shape == (3, 9) and out[1].shape == (3,)
    assert core.t == 2


def test_adapter_fixed_seed_repeats_the_same_episodes(dataset):
    cfg = TrainConfig(num_envs=4)
    env = TianshouBatchedEnv(make_batched_env(cfg, 4, dataset), seed=11, fixed_seed=True)
    a, _ = env.reset()
    env.step(np.full((4, 2), 0.5))
    b, _ = env.reset()
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------- training
def test_training_cli_writes_a_complete_run_folder(tmp_path, capsys):
    """The CLI end to end on a minimal budget (one PPO iteration): run folder, export, checkpoint metadata."""
    out = tmp_path / "run"
    export = tmp_path / "exported" / "p.pt"
    code = cli_main([
        "train", "--demand-scale", "2.0", "--steps", "256", "--envs", "8", "--epochs", "1", "--seed", "0",
        "--eval-episodes", "4", "--batch-size", "128", "--repeats", "1", "--out", str(out),
        "--export", str(export), "--no-progress",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out / "policy.pt") in printed
    assert (out / "policy.pt").is_file() and export.is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["total_steps"] == 256 and config["train_config"]["demand_scale"] == 2.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["env_steps"] >= 256 and metrics["update_history"]
    policy = load_policy(export, {"observation_layout": list(observation_layout(True))}, demand_scale=2.0)
    assert policy.metadata["train_config"]["total_steps"] == 256 and policy.metadata["train_wall_time_s"] > 0


@pytest.mark.slow  # real training: 12,800 steps until the policy measurably improves
def test_tiny_training_run_via_cli_writes_run_folder_and_improves(tmp_path, capsys):
    out = tmp_path / "run"
    export = tmp_path / "exported" / "p.pt"
    code = cli_main([
        "train", "--demand-scale", "1.0", "--steps", "12800", "--envs", "32", "--epochs", "1", "--seed", "0",
        "--eval-episodes", "32", "--batch-size", "512", "--repeats", "8", "--out", str(out),
        "--export", str(export), "--no-progress",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out / "policy.pt") in printed and "tensorboard" in printed
    assert (out / "policy.pt").is_file() and export.is_file()
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["total_steps"] == 12800 and config["train_config"]["seed"] == 0
    assert config["env_config"]["augment"] is True and config["reward_scale"] == 10.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["env_steps"] >= 12800 and metrics["update_history"]
    # the trained policy earns more Lagrangian return than the untrained one on the same fixed episodes
    initial = metrics["eval_initial"]["lagrangian_return"]
    final = metrics["eval_final"]["lagrangian_return"]
    assert final > initial + 0.05 * abs(initial), (initial, final)
    policy = load_policy(out / "policy.pt", {"observation_layout": list(observation_layout(True))})
    assert policy.metadata["reward_scale"] == 10.0
    assert policy.metadata["train_config"]["total_steps"] == 12800
    assert policy.metadata["env_steps"] >= 12800
    assert policy.metadata["train_wall_time_s"] > 0
    assert policy.act(np.zeros((3, 9), np.float32)).shape == (3, 2)


def test_cli_reports_invalid_config(capsys, tmp_path):
    assert cli_main(["train", "--envs", "0", "--out", str(tmp_path / "x")]) == 2
    assert "num_envs" in capsys.readouterr().err


def test_same_seed_gives_identical_losses_and_weights(tmp_path, dataset):
    def run(name, seed):
        cfg = TrainConfig(total_steps=2560, seed=seed, out_dir=str(tmp_path / name), **TINY)
        return train(cfg, progress=False, data=dataset)

    a, b, c = run("a", 5), run("b", 5), run("c", 6)
    assert a.update_history and a.update_history == b.update_history
    sa, sb, sc = a.policy.net.state_dict(), b.policy.net.state_dict(), c.policy.net.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert a.update_history != c.update_history


def test_fixed_multiplier_baseline_trains_on_plain_observations(tmp_path, dataset):
    cfg = TrainConfig(total_steps=2560, fixed_multipliers=(8.0, -8.0), out_dir=str(tmp_path / "ippo"), **TINY)
    assert not cfg.env_config().augment and cfg.env_config().multiplier_mode == "fixed"
    result = train(cfg, progress=False, data=dataset)
    policy = load_policy(result.checkpoint, {"observation_layout": list(observation_layout(False))})
    assert policy.obs_dim == 7 and policy.metadata["fixed_multipliers"] == [8.0, -8.0]
    env = TianshouBatchedEnv(make_batched_env(cfg, 4, dataset))
    env.reset()
    assert np.all(env.core.lam == 8.0) and np.all(env.core.nu == -8.0)
    with pytest.raises(ValueError, match="fixed_multipliers"):
        TrainConfig(fixed_multipliers=(20.0, 0.0))


# ------------------------------------------------- issue 10: the shipped recipe's options
def test_recipe_options_are_validated():
    for field, value in (("multiplier_sampling", "gaussian"), ("reward_normalization", "batch"),
                         ("reward_shaping", "exact"), ("multiplier_power", 0.5), ("wide_fraction", 1.5),
                         ("raw_multipliers", "yes")):
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})


def test_shipped_recipe_is_a_valid_config_and_differs_from_the_defaults():
    from algorithms.policy import pretrained_paths

    recipe = json.loads((pretrained_paths()[1.0].parent / "recipe.json").read_text())
    cfg = TrainConfig.from_dict(recipe)
    assert cfg.augmented and cfg.multiplier_sampling == "skewed" and cfg.raw_multipliers
    assert cfg.reward_normalization == "multipliers" and cfg.reward_shaping == "backlog_potential"
    # the defaults stay the original ones (the fixed-penalty IPPO baseline trains with them)
    base = TrainConfig()
    assert (base.multiplier_sampling, base.reward_normalization, base.reward_shaping, base.gamma) == \
        ("uniform", "fixed", "none", 0.9)


def test_skewed_multipliers_are_dense_near_the_origin_and_cover_the_ranges():
    from algorithms.train import multiplier_sampler

    sample = multiplier_sampler(TrainConfig(multiplier_sampling="skewed", multiplier_power=3.0, wide_fraction=0.2))
    lam, nu = sample(np.random.default_rng(0), 200_000, (0.0, 15.0), (-20.0, 20.0))
    assert lam.min() >= 0.0 and lam.max() <= 15.0 and nu.min() >= -20.0 and nu.max() <= 20.0
    # what execution visits (lambda < 3, -5 < nu <= 0) gets far more than its uniform share (0.2 and 0.125)
    assert np.mean(lam < 3.0) > 0.48 and np.mean((nu > -5.0) & (nu <= 0.0)) > 0.5
    assert np.mean(nu > 0.0) == pytest.approx(0.1, abs=0.01)  # only the wide share reaches nu > 0
    assert lam.max() > 14.9 and nu.min() < -19.9 and nu.max() > 19.9
    assert multiplier_sampler(TrainConfig()) is None  # uniform: the core's own draw


def _captured(env):
    """Record the inner BatchedEnv's infos (the adapter returns empty ones)."""
    inner, seen = env.env, {}
    step = inner.step

    def recording(actions):
        out = step(actions)
        seen["infos"] = out[4]
        return out

    inner.step = recording
    return seen


def test_backlog_potential_shaping_turns_nu_r2_into_a_holding_cost(dataset):
    """Per step: r0 + lambda (c/N - e_grid) + (1 - gamma) nu B' (potential Phi = -nu B), also on the reset step."""
    from algorithms.train import multiplier_sampler

    cfg = TrainConfig(num_envs=6, episode_length=4, multiplier_sampling="skewed")
    gamma = 0.95
    env = TianshouBatchedEnv(make_batched_env(cfg, 6, dataset), 1.0, seed=2, sampler=multiplier_sampler(cfg),
                             init_backlog_hours=20.0, shaping_gamma=gamma)
    seen = _captured(env)
    env.reset()
    core, rng = env.core, np.random.default_rng(1)
    for t in range(9):
        lam, nu, backlog = core.lam.copy(), core.nu.copy(), core.backlog.copy()
        _, reward, _, trunc, _ = env.step(rng.uniform(0, 1, (6, 2)))
        info = seen["infos"]["final_info"] if trunc.any() else seen["infos"]
        np.testing.assert_allclose(info["backlog"], backlog + info["r2"], atol=1e-9)
        expected = info["r0"] + lam * (core.share - info["e_grid"]) + (1.0 - gamma) * nu * info["backlog"]
        np.testing.assert_allclose(reward, expected, rtol=1e-9, atol=1e-9)
    # the discounted sums of nu r2 and of the holding cost differ by the start state's potential only
    b = np.array([3.0, 5.0, 2.0, 7.0, 7.0])
    nu, g = -1.7, 0.95
    plain = sum(g**t * nu * (b[t + 1] - b[t]) for t in range(4))
    shaped = sum(g**t * (1 - g) * nu * b[t + 1] for t in range(4)) - g**4 * (-nu * b[4]) + (-nu * b[0])
    assert plain == pytest.approx(shaped)


def test_multiplier_normalisation_divides_each_episode_by_its_multipliers(dataset):
    from algorithms.train import multiplier_sampler

    cfg = TrainConfig(num_envs=5, episode_length=3, multiplier_sampling="skewed")
    plain = TianshouBatchedEnv(make_batched_env(cfg, 5, dataset), 2.0, seed=4, sampler=multiplier_sampler(cfg))
    scaled = TianshouBatchedEnv(make_batched_env(cfg, 5, dataset), 2.0, seed=4, sampler=multiplier_sampler(cfg),
                                multiplier_scaled=True)
    plain.reset(), scaled.reset()
    rng = np.random.default_rng(3)
    for _ in range(7):  # across two resets
        core = scaled.core
        unit = (core.price_norm + core.lam + np.abs(core.nu)) / core.price_norm
        act = rng.uniform(0, 1, (5, 2))
        _, r_plain, *_ = plain.step(act)
        _, r_scaled, *_ = scaled.step(act)
        np.testing.assert_allclose(r_scaled, r_plain / unit, rtol=1e-12)


def test_raw_multiplier_inputs_reach_the_networks_and_the_checkpoint(tmp_path, dataset):
    cfg = TrainConfig(total_steps=2560, out_dir=str(tmp_path / "raw"), raw_multipliers=True,
                      multiplier_sampling="skewed", reward_normalization="multipliers",
                      reward_shaping="backlog_potential", gamma=0.99, **TINY)
    result = train(cfg, progress=False, data=dataset)
    lam_col, nu_col = observation_layout(True).index("lambda"), observation_layout(True).index("nu")
    assert result.policy.net.raw_columns == [[lam_col, 0.0, 7.5], [nu_col, -10.0, 20.0]]
    policy = load_policy(result.checkpoint)
    assert policy.metadata["raw_columns"] == result.policy.net.raw_columns
    obs = np.random.default_rng(0).uniform(0, 1, (64, 9)).astype(np.float32)
    np.testing.assert_array_equal(policy.act(obs), result.policy.act(obs))
