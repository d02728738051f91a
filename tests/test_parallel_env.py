"""The PettingZoo environment: PettingZoo's own test suites, dict API, bad input."""

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test, render_test

import cmarl_env
from cmarl_env import demand_response_v0


@pytest.fixture
def env(dataset):
    return demand_response_v0.parallel_env(data=dataset)


def test_parallel_api(dataset):
    parallel_api_test(demand_response_v0.parallel_env(data=dataset, episode_length=100), num_cycles=200)


def test_parallel_api_augmented(dataset):
    env = demand_response_v0.parallel_env(data=dataset, augment=True, multiplier_mode="sampled", reward="lagrangian")
    parallel_api_test(env, num_cycles=100)


def test_parallel_seed(dataset):
    parallel_seed_test(lambda: demand_response_v0.parallel_env(data=dataset, episode_length=60), num_cycles=60)


def test_render(dataset):
    pytest.importorskip("matplotlib", reason="rgb_array rendering needs the [plot] extra")
    render_test(lambda render_mode=None: demand_response_v0.env(data=dataset, render_mode=render_mode, episode_length=20))


def test_rgb_frame(env, dataset):
    pytest.importorskip("matplotlib", reason="rgb_array rendering needs the [plot] extra")
    env = demand_response_v0.parallel_env(data=dataset, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(5):
        env.step({a: [0.5, 0.5] for a in env.agents})
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0


def test_make_by_id(dataset):
    env = cmarl_env.make("DemandResponse-v0", data=dataset, n_agents=3, graph="ring")
    assert env.possible_agents == ["building_0", "building_1", "building_2"]
    with pytest.raises(ValueError, match="registered ids"):
        cmarl_env.make("Nope-v9")


def test_spaces_memoised_and_infos(env):
    assert env.observation_space("building_0") is env.observation_space("building_0")
    assert env.action_space("building_3") is env.action_space("building_3")
    obs, _ = env.reset(seed=1)
    assert obs["building_0"].shape == (7,)
    _, rewards, _, _, infos = env.step({a: [0.2, 0.7] for a in env.agents})
    info = infos["building_2"]
    for key in ("demand", "solar", "e_bat", "e_grid", "backlog", "r0", "r2", "price", "cost", "lambda", "nu",
                "lagrangian_reward", "grid_share", "clipped_actions"):
        assert key in info
    assert info["cost"] == info["e_grid"]
    assert rewards["building_2"] == pytest.approx(info["r0"])
    assert env.state().shape == (7 * 7,)
    assert env.state_space.shape == (49,)


def test_augmentation_hooks(dataset):
    env = demand_response_v0.parallel_env(data=dataset, augment=True, reward="lagrangian")
    obs, _ = env.reset(seed=0, options={"multipliers": {"lambda": 3.0, "nu": -4.0}})
    assert obs["building_0"].shape == (9,)
    assert obs["building_0"][7] == pytest.approx(3.0 / 15)
    assert obs["building_0"][8] == pytest.approx(16.0 / 40)
    env.set_multipliers(lam={"building_1": 7.5})
    assert env.get_multipliers()["lambda"]["building_1"] == 7.5
    assert env.get_multipliers()["lambda"]["building_0"] == 3.0
    _, rewards, _, _, infos = env.step({a: [0.3, 0.3] for a in env.agents})
    info = infos["building_1"]
    expected = info["r0"] + 7.5 * (info["grid_share"] - info["e_grid"]) + (-4.0) * info["r2"]
    assert rewards["building_1"] == pytest.approx(expected)
    assert info["lagrangian_reward"] == pytest.approx(expected)


def test_nan_action_names_agent(env):
    env.reset(seed=0)
    actions = {a: [0.5, 0.5] for a in env.agents}
    actions["building_4"] = [np.nan, 0.5]
    with pytest.raises(ValueError, match="building_4"):
        env.step(actions)
    actions["building_4"] = [np.inf, 0.5]
    with pytest.raises(ValueError, match="building_4"):
        env.step(actions)


def test_out_of_range_clipped_and_counted(env):
    env.reset(seed=0)
    actions = {a: [0.5, 0.5] for a in env.agents}
    actions["building_2"] = [1.5, -0.2]
    _, _, _, _, infos = env.step(actions)
    assert infos["building_2"]["action_clipped"] is True
    assert infos["building_2"]["clipped_actions"] == 1
    assert infos["building_1"]["clipped_actions"] == 0
    assert infos["building_2"]["e_grid"] == 0.0


def test_wrong_shape_and_missing_agent(env):
    env.reset(seed=0)
    actions = {a: [0.5, 0.5] for a in env.agents}
    actions["building_1"] = [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match=r"building_1.*shape \(2,\)"):
        env.step(actions)
    del actions["building_1"]
    with pytest.raises(ValueError, match=r"missing \['building_1'\]"):
        env.step(actions)


def test_disconnected_graph_rejected(dataset):
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(4))
    g.add_edges_from([(0, 1), (2, 3)])
    with pytest.raises(ValueError, match="disconnected"):
        demand_response_v0.parallel_env(data=dataset, n_agents=4, graph=g)


def test_episode_end(dataset):
    env = demand_response_v0.parallel_env(data=dataset, episode_length=3)
    env.reset(seed=0)
    for t in range(3):
        _, _, _, trunc, _ = env.step({a: [0, 1] for a in env.agents})
    assert all(trunc.values()) and env.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


def test_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; import cmarl_env; from cmarl_env import demand_response_v0, views, graphs, core; "
        "bad = [m for m in ('torch', 'tianshou', 'ray', 'citylearn', 'matplotlib', 'pandas') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rgb_without_matplotlib_names_the_extra(dataset, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    env = demand_response_v0.parallel_env(data=dataset, render_mode="rgb_array")
    env.reset(seed=0)
    with pytest.raises(ModuleNotFoundError, match=r"cmarl-env\[plot\]"):
        env.render()
