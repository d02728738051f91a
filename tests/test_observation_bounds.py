"""Observations stay inside the (finite) observation space, whatever the scenario and the actions.

A property test (hypothesis): random agent counts, demand scales, splits,
episode lengths, seeds and three action policies, including postponing
everything, which makes the backlog grow as fast as it can.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="hypothesis comes with the [test-base] extra")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cmarl_env import demand_response_v0  # noqa: E402
from cmarl_env.views import BatchedEnv, SingleAgentEnv, final_observations  # noqa: E402


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_agents=st.integers(1, 40),
    scale=st.floats(0.1, 20.0),
    split=st.sampled_from(["train", "test", "all"]),
    episode_length=st.integers(1, 30),
    policy=st.sampled_from(["never_serve", "random", "serve_all"]),
    seed=st.integers(0, 2**16),
)
def test_observations_stay_inside_the_space(dataset, n_agents, scale, split, episode_length, policy, seed):
    env = demand_response_v0.parallel_env(
        data=dataset, n_agents=n_agents, demand_scales=scale, split=split, episode_length=episode_length,
        augment=True, multiplier_mode="sampled", graph="complete", seed=seed,
    )
    space = env.observation_space("building_0")
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    while env.agents:
        for a, o in obs.items():
            assert space.contains(o), (a, o, space)
        assert env.state_space.contains(env.state())
        if policy == "never_serve":
            actions = {a: np.zeros(2, dtype=np.float32) for a in env.agents}
        elif policy == "serve_all":
            actions = {a: np.ones(2, dtype=np.float32) for a in env.agents}
        else:
            actions = {a: rng.uniform(0, 1, 2).astype(np.float32) for a in env.agents}
        obs, *_ = env.step(actions)
    for o in obs.values():
        assert space.contains(o)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scale=st.floats(0.1, 20.0),
    episode_length=st.integers(1, 30),
    agent=st.integers(0, 6),
    seed=st.integers(0, 2**16),
)
def test_views_observations_stay_inside_their_spaces(dataset, scale, episode_length, agent, seed):
    single = SingleAgentEnv(data=dataset, agent=agent, episode_length=episode_length, demand_scales=scale)
    obs, _ = single.reset(seed=seed)
    truncated = False
    while not truncated:
        assert single.observation_space.contains(obs)
        obs, _, _, truncated, _ = single.step(np.zeros(2, dtype=np.float32))
    assert single.observation_space.contains(obs)
    batched = BatchedEnv(num_envs=8, demand_scale=scale, data=dataset, episode_length=episode_length)
    obs, _ = batched.reset(seed=seed)
    for _ in range(episode_length):
        assert batched.observation_space.contains(obs)
        obs, _, _, truncated, infos = batched.step(np.zeros((8, 2)))
    assert batched.observation_space.contains(obs) and truncated.all()
    assert batched.observation_space.contains(final_observations(infos))
