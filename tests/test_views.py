"""Gymnasium single-agent view and the batched vector view."""

import gymnasium as gym
import numpy as np
import pytest

from cmarl_env import EnvConfig, views
from cmarl_env.core import DemandResponseCore
from cmarl_env.views import BatchedEnv, SingleAgentEnv, final_observations


def _final_info(infos, key):
    """One key of the finished episodes' last infos, under either Gymnasium convention."""
    final = infos["final_info"]
    if isinstance(final, dict):  # Gymnasium 1.x: a dict of arrays
        return np.asarray(final[key])
    return np.array([info[key] for info in final])  # 0.28-0.29: one dict per copy


def test_single_agent_matches_core_agent(dataset):
    """Separable dynamics: agent 4 of the 7-agent scenario evolves exactly as its one-agent MDP."""
    config = EnvConfig(episode_length=50, start_hour=200)
    full = DemandResponseCore(config, dataset)
    full.reset()
    single = SingleAgentEnv(config, agent=4, data=dataset)
    obs, _ = single.reset()
    np.testing.assert_array_equal(obs, full.observe()[4])
    rng = np.random.default_rng(0)
    for _ in range(50):
        actions = rng.random((7, 2))
        out = full.step(actions)
        obs, reward, terminated, truncated, info = single.step(actions[4])
        np.testing.assert_array_equal(obs, out.obs[4])
        assert reward == out.reward[4]
        assert info["e_grid"] == out.signals.e_grid[4]
    assert truncated and not terminated
    assert single.core.share == full.share


def test_single_agent_passes_gymnasium_checker(dataset):
    from gymnasium.utils.env_checker import check_env

    env = SingleAgentEnv(EnvConfig(augment=True, multiplier_mode="sampled", reward="lagrangian"), data=dataset)
    check_env(env, skip_render_check=True)


def test_batched_env_steps_all_copies(dataset):
    config = EnvConfig(augment=True, multiplier_mode="sampled", reward="lagrangian", episode_length=10)
    env = BatchedEnv(config, num_envs=32, demand_scale=2.0, data=dataset)
    assert isinstance(env, gym.vector.VectorEnv)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 9)
    assert len(set(np.atleast_1d(env.core.start_hour).tolist())) > 1
    lam_first = env.core.lam.copy()
    for t in range(10):
        obs, reward, terminated, truncated, infos = env.step(np.full((32, 2), 0.5))
    assert truncated.all() and not terminated.any()
    assert views.FINAL_OBS_KEY in infos
    assert not np.array_equal(env.core.lam, lam_first)
    np.testing.assert_allclose(reward, _final_info(infos, "lagrangian_reward"))
    assert np.all(env.core.layout.scale == 2.0)


def test_batched_env_follows_the_installed_gymnasiums_vector_convention(dataset):
    env = BatchedEnv(EnvConfig(episode_length=3, augment=True, multiplier_mode="sampled"), num_envs=5, data=dataset)
    obs, infos = env.reset(seed=0)
    for key in ("cost", "r2", "lagrangian_reward", "lambda", "nu"):
        assert infos[key].shape == (5,) and infos[f"_{key}"].all()
    for _ in range(2):
        obs, reward, terminated, truncated, infos = env.step(np.zeros((5, 2)))
        assert views.FINAL_OBS_KEY not in infos and "final_info" not in infos
    last_backlog = env.core.backlog.copy()
    obs, reward, terminated, truncated, infos = env.step(np.zeros((5, 2)))  # serve nothing: backlog grows
    assert truncated.all()
    # the returned observations and infos are the reset ones ...
    assert np.all(obs[:, 1] == 0.0) and np.all(infos["backlog"] == 0.0) and np.all(infos["cost"] == 0.0)
    # ... the finished episodes' are under the convention's keys, each with its mask
    for key in (views.FINAL_OBS_KEY, "final_info"):
        assert infos[f"_{key}"].shape == (5,) and infos[f"_{key}"].all()
    final = final_observations(infos)
    assert final.shape == (5, 9) and final.dtype == np.float32
    assert np.all(final[:, 1] > 0)
    np.testing.assert_allclose(_final_info(infos, "backlog"), last_backlog + _final_info(infos, "demand"))
    if views.GYMNASIUM_1:
        assert infos["final_obs"].dtype == object and np.array_equal(np.stack(infos["final_obs"]), final)
        assert infos["final_info"]["_cost"].all()
        np.testing.assert_array_equal(infos["final_observation"], final)  # the stacked copy
    else:
        assert isinstance(infos["final_info"][0], dict)
    if hasattr(gym.vector, "AutoresetMode"):
        assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP


def test_batched_env_bad_size(dataset):
    with pytest.raises(ValueError, match="num_envs"):
        BatchedEnv(EnvConfig(), num_envs=0, data=dataset)
