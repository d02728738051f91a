"""Conventions other libraries rely on, checked with the real client libraries.

Gymnasium's and PettingZoo's own checkers with no warnings, registration with
both registries, finite observation bounds, reset infos carrying every signal
key, the ``max_cycles`` alias, ``human`` rendering once per step, environments
freed when dropped; TorchRL's ``PettingZooWrapper``, Tianshou's
``PettingZooEnv`` and SuperSuit drive the environment. Client libraries that
are not installed (the base-only and CityLearn jobs) skip their tests; the
main job installs them all (``[test]`` and ``[learn]`` extras).
"""

from __future__ import annotations

import gc
import warnings
import weakref

import gymnasium as gym
import numpy as np
import pytest

import cmarl_env
from cmarl_env import EnvConfig, demand_response_v0
from cmarl_env.parallel_env import INFO_KEYS
from cmarl_env.views import BatchedEnv, SingleAgentEnv

SIGNALS = ("cost", "r2", "lagrangian_reward", "e_grid", "backlog", "demand")


class _NoWarnings:
    """Fail on any warning raised inside the block (DeprecationWarnings included)."""

    def __enter__(self):
        self._ctx = warnings.catch_warnings(record=True)
        self.caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        if exc[0] is None:
            messages = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in self.caught]
            assert not messages, "warnings raised:\n" + "\n".join(messages)
        return False


# ------------------------------------------------------------------ checkers
def test_gymnasium_checker_without_warnings(dataset):
    from gymnasium.utils.env_checker import check_env

    for config in (EnvConfig(), EnvConfig(augment=True, multiplier_mode="sampled", reward="lagrangian", split="test")):
        with _NoWarnings():
            check_env(SingleAgentEnv(config, data=dataset), skip_render_check=True)


def test_gymnasium_make_and_passive_checker_without_warnings(dataset):
    with _NoWarnings():
        env = gym.make("cmarl/DemandResponseSingle-v0", data=dataset, episode_length=5)
        assert isinstance(env.unwrapped, SingleAgentEnv)
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        for _ in range(5):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert truncated and not terminated
        env.close()


def test_gymnasium_make_with_module_prefix(dataset):
    env = gym.make("cmarl_env:cmarl/DemandResponseSingle-v0", data=dataset)
    assert isinstance(env.unwrapped, SingleAgentEnv)


def test_batched_view_through_gymnasiums_vector_api(dataset):
    if cmarl_env.views.GYMNASIUM_1:  # the vector entry point is the default; env kwargs go as kwargs
        kwargs = {"data": dataset, "episode_length": 3}
    else:  # 0.28-0.29: mode "custom", and the vector entry point only gets vector_kwargs
        kwargs = {"vectorization_mode": "custom", "vector_kwargs": {"data": dataset, "episode_length": 3}}
    with _NoWarnings():
        env = gym.make_vec("cmarl/DemandResponseSingle-v0", num_envs=6, **kwargs)
        assert isinstance(env.unwrapped if hasattr(env, "unwrapped") else env, BatchedEnv)
        obs, infos = env.reset(seed=0)
        assert obs.shape == (6, 7) and env.single_observation_space.shape == (7,)
        for _ in range(3):
            obs, reward, terminated, truncated, infos = env.step(env.action_space.sample())
        assert truncated.all() and cmarl_env.views.FINAL_OBS_KEY in infos


def test_pettingzoo_checkers_without_warnings(dataset):
    from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

    with _NoWarnings():
        parallel_api_test(demand_response_v0.parallel_env(data=dataset, episode_length=30), num_cycles=40)
        parallel_api_test(
            demand_response_v0.parallel_env(data=dataset, augment=True, multiplier_mode="sampled", episode_length=30),
            num_cycles=40,
        )
        api_test(demand_response_v0.env(data=dataset, n_agents=3, graph="ring", episode_length=10), num_cycles=20)
        parallel_seed_test(lambda: demand_response_v0.parallel_env(data=dataset, episode_length=20), num_cycles=20)
        seed_test(lambda: demand_response_v0.env(data=dataset, n_agents=3, graph="ring", episode_length=20), num_cycles=20)


def test_pettingzoo_max_cycles_test():
    from pettingzoo.test import max_cycles_test

    max_cycles_test(demand_response_v0)


def test_max_cycles_is_an_alias_of_episode_length(dataset):
    env = demand_response_v0.parallel_env(data=dataset, max_cycles=7)
    assert env.config.episode_length == 7
    assert demand_response_v0.parallel_env(data=dataset, max_cycles=7, episode_length=7).config.episode_length == 7
    with pytest.raises(ValueError, match="max_cycles"):
        demand_response_v0.parallel_env(data=dataset, max_cycles=7, episode_length=8)
    assert cmarl_env.make("DemandResponse-v0", data=dataset, max_cycles=3).config.episode_length == 3


def test_pettingzoo_registry_when_available(dataset):
    import pettingzoo

    if not hasattr(pettingzoo, "parallel_registry"):
        assert cmarl_env.registration.register_with_pettingzoo() is False
        pytest.skip(f"PettingZoo {pettingzoo.__version__} has no registry (1.27 on)")
    parallel = pettingzoo.make("parallel", "cmarl/DemandResponse-v0", data=dataset, max_cycles=4)
    assert parallel.possible_agents == [f"building_{i}" for i in range(7)] and parallel.config.episode_length == 4
    aec = pettingzoo.make("aec", "cmarl/DemandResponse-v0", data=dataset, n_agents=2, graph="line")
    aec.reset(seed=0)
    assert aec.agent_selection == "building_0"


# ------------------------------------------------------------------ spaces and infos
def test_observation_bounds_are_finite(dataset):
    for env in (
        demand_response_v0.parallel_env(data=dataset),
        demand_response_v0.parallel_env(data=dataset, augment=True, split="test", demand_scales=3.0),
    ):
        space = env.observation_space("building_0")
        assert np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))
        assert np.all(np.isfinite(env.state_space.high))
    assert np.all(np.isfinite(SingleAgentEnv(data=dataset).observation_space.high))
    assert np.all(np.isfinite(BatchedEnv(num_envs=4, data=dataset).single_observation_space.high))


def test_reset_infos_carry_every_step_key_with_the_same_types(dataset):
    env = demand_response_v0.parallel_env(data=dataset, augment=True, multiplier_mode="sampled")
    _, reset_infos = env.reset(seed=0)
    _, _, _, _, step_infos = env.step({a: [0.5, 0.5] for a in env.agents})
    for agent in env.possible_agents:
        assert set(INFO_KEYS) <= set(reset_infos[agent])
        assert list(reset_infos[agent]) == list(step_infos[agent])
        for key, value in reset_infos[agent].items():
            assert type(value) is type(step_infos[agent][key]), key
    info = reset_infos["building_0"]
    assert info["cost"] == info["e_grid"] == info["r2"] == info["lagrangian_reward"] == 0.0
    assert info["lambda"] == env.get_multipliers()["lambda"]["building_0"]

    single = SingleAgentEnv(data=dataset)
    _, reset_info = single.reset(seed=0)
    _, _, _, _, step_info = single.step(np.array([0.5, 0.5], dtype=np.float32))
    assert set(reset_info) == set(step_info)

    batched = BatchedEnv(num_envs=5, data=dataset)
    _, reset_infos = batched.reset(seed=0)
    _, _, _, _, step_infos = batched.step(np.full((5, 2), 0.5))
    assert set(reset_infos) == set(step_infos)
    for key in SIGNALS:
        assert reset_infos[key].shape == (5,) and reset_infos[f"_{key}"].all()


# ------------------------------------------------------------------ rendering, truncation, memory
def test_human_rendering_prints_once_per_step(dataset, capsys):
    env = demand_response_v0.parallel_env(data=dataset, render_mode="human", episode_length=5)
    env.reset(seed=0)
    for _ in range(3):
        env.step({a: [0.5, 0.5] for a in env.agents})
        assert env.render() is None
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("t=")]
    assert len(lines) == 1 + 3  # the reset frame, then one per step

    aec = demand_response_v0.env(data=dataset, render_mode="human", n_agents=3, graph="ring", episode_length=5)
    aec.reset(seed=0)
    capsys.readouterr()
    for _ in range(2 * 3):  # two full cycles of three agents, render() after every agent
        aec.step(aec.action_space(aec.agent_selection).sample())
        aec.render()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("t=")]
    assert len(lines) == 2


def test_single_agent_env_raises_after_truncation(dataset):
    env = SingleAgentEnv(data=dataset, episode_length=3)
    env.reset(seed=0)
    for _ in range(3):
        *_, truncated, _ = env.step(env.action_space.sample())
    assert truncated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    env.reset()
    env.step(env.action_space.sample())


def _freed(make) -> bool:
    env = make()
    ref = weakref.ref(env)
    del env
    gc.collect()
    return ref() is None


def test_dropped_environments_are_freed(dataset):
    def parallel():
        env = demand_response_v0.parallel_env(data=dataset, n_agents=50, graph="ring")
        for agent in env.possible_agents:
            env.observation_space(agent), env.action_space(agent)
        env.reset(seed=0)
        env.step({a: env.action_space(a).sample() for a in env.agents})
        return env

    def aec():
        env = demand_response_v0.env(data=dataset, n_agents=3, graph="ring")
        env.reset(seed=0)
        env.step(env.action_space(env.agent_selection).sample())
        return env

    def single():
        env = SingleAgentEnv(data=dataset)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        return env

    def batched():
        env = BatchedEnv(num_envs=8, data=dataset, episode_length=2)
        env.reset(seed=0)
        for _ in range(2):
            env.step(env.action_space.sample())
        return env

    for make in (parallel, aec, single, batched):
        assert _freed(make), make.__name__


# ------------------------------------------------------------------ real clients
def test_torchrl_rollout_carries_the_constraint_signals(dataset):
    pytest.importorskip("torchrl")
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper

    with warnings.catch_warnings():
        # TorchRL announces the one PettingZoo version it was tested with whenever another is installed; this
        # test is the compatibility check with the newest PettingZoo, so the announcement says nothing new here.
        warnings.filterwarnings("ignore", message="PettingZoo in TorchRL is tested using version", category=UserWarning)
        env = PettingZooWrapper(
            env=demand_response_v0.parallel_env(data=dataset, episode_length=10, reward="objective"),
            categorical_actions=False,
            seed=0,
        )
    td = env.rollout(10)
    assert td.batch_size == (10,)
    for key in SIGNALS:
        assert ("building", "info", key) in td.keys(True, True), key
        assert ("next", "building", "info", key) in td.keys(True, True), key
    cost = td["next", "building", "info", "cost"]
    assert cost.shape == (10, 7) and bool((cost >= 0).all()) and float(cost.sum()) > 0
    assert td["next", "building", "info", "r2"].shape == (10, 7)
    assert bool(td["next", "done"][-1].all())


def test_tianshou_pettingzoo_env_runs_a_full_episode_on_the_aec_conversion(dataset):
    pytest.importorskip("tianshou")
    from tianshou.env import PettingZooEnv

    n, length = 3, 6
    env = PettingZooEnv(demand_response_v0.env(data=dataset, n_agents=n, graph="ring", episode_length=length))
    obs, info = env.reset(seed=0)
    assert obs["agent_id"] == "building_0" and obs["obs"].shape == (7,)
    steps, done = 0, False
    while not done:
        obs, rewards, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        done = terminated or truncated
        assert len(rewards) == n
    assert steps == n * length and truncated and not terminated
    assert "cost" in info and "r2" in info


def test_supersuit_vector_conversion_and_obs_normalisation(dataset):
    ss = pytest.importorskip("supersuit")

    normalised = ss.normalize_obs_v0(demand_response_v0.parallel_env(data=dataset, episode_length=5))
    obs, _ = normalised.reset(seed=0)
    for o in obs.values():
        assert np.all(o >= 0.0) and np.all(o <= 1.0)
    vec = ss.pettingzoo_env_to_vec_env_v1(demand_response_v0.parallel_env(data=dataset, episode_length=5))
    vec = ss.concat_vec_envs_v1(vec, 2, num_cpus=0, base_class="gymnasium")
    obs, infos = vec.reset(seed=0)
    assert obs.shape == (14, 7)
    for _ in range(5):
        obs, rewards, terminated, truncated, infos = vec.step(np.full((14, 2), 0.5, dtype=np.float32))
    assert obs.shape == (14, 7) and rewards.shape == (14,)
    assert np.all(truncated)
    assert all("cost" in info for info in infos)
