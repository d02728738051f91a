"""Gymnasium single-agent view and the batched vector view."""

import gymnasium as gym
import numpy as np
import pytest

from cmarl_env import EnvConfig
from cmarl_env.core import DemandResponseCore
from cmarl_env.views import BatchedEnv, SingleAgentEnv


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
    assert "final_observation" in infos
    assert not np.array_equal(env.core.lam, lam_first)
    np.testing.assert_allclose(reward, infos["lagrangian_reward"])
    assert np.all(env.core.layout.scale == 2.0)


def test_batched_env_bad_size(dataset):
    with pytest.raises(ValueError, match="num_envs"):
        BatchedEnv(EnvConfig(), num_envs=0, data=dataset)
