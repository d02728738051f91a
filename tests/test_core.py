"""Dynamics invariants of the vectorized core on the real CityLearn data."""

import numpy as np
import pytest

from cmarl_env import EnvConfig
from cmarl_env.core import DemandResponseCore, NonFiniteActionError
from cmarl_env.dynamics import aggregate_profile


def run(core, steps, rng, actions=None):
    records = []
    for _ in range(steps):
        backlog_before = core.backlog.copy()
        a = rng.random((core.n_agents, 2)) if actions is None else actions
        out = core.step(a)
        records.append((backlog_before, out))
    return records


@pytest.mark.parametrize("n_agents", [1, 7, 50])
def test_energy_conservation_and_bounds(dataset, n_agents):
    core = DemandResponseCore(EnvConfig(n_agents=n_agents, episode_length=400), dataset)
    core.reset(seed=3)
    rng = np.random.default_rng(0)
    for backlog_before, out in run(core, 400, rng):
        s = out.signals
        # demand plus backlog equals served plus new backlog
        np.testing.assert_allclose(s.demand + backlog_before, s.e_bat + s.e_grid + s.backlog, atol=1e-9)
        assert np.all(s.backlog >= -1e-12)
        # no grid energy beyond what is demanded
        assert np.all(s.e_grid <= s.demand + backlog_before + 1e-12)
        assert np.all(s.e_bat >= 0) and np.all(s.e_grid >= 0)
        assert np.all((core.soc >= 0) & (core.soc <= 1))
        assert np.all(s.solar_to_battery <= s.solar + 1e-6)
        np.testing.assert_allclose(s.r2, s.demand - s.e_grid - s.e_bat)
        np.testing.assert_allclose(s.r0, -s.price * s.e_grid)


def test_full_grid_serves_everything(dataset):
    core = DemandResponseCore(EnvConfig(episode_length=50), dataset)
    core.reset(seed=0)
    for _, out in run(core, 50, None, actions=np.tile([0.0, 1.0], (7, 1))):
        np.testing.assert_allclose(out.signals.e_grid, out.signals.demand)
        assert np.all(out.signals.backlog == 0)


def test_zero_grid_postpones(dataset):
    core = DemandResponseCore(EnvConfig(episode_length=30), dataset)
    core.reset(seed=0)
    total_demand = 0.0
    total_battery = 0.0
    for _, out in run(core, 30, None, actions=np.zeros((7, 2))):
        total_demand += out.signals.demand.sum()
        total_battery += out.signals.e_bat.sum()
        assert np.all(out.signals.e_grid == 0)
    assert total_battery == 0
    np.testing.assert_allclose(core.backlog.sum(), total_demand)


def test_battery_solar_first_then_serves(dataset):
    """A battery charged by the sun is drained by a_bat = 1 before the grid is used."""
    core = DemandResponseCore(EnvConfig(n_agents=3, episode_length=48, start_hour=100), dataset)
    core.reset()
    used = 0.0
    for _, out in run(core, 48, None, actions=np.tile([1.0, 1.0], (3, 1))):
        used += out.signals.e_bat.sum()
        assert np.all(out.signals.e_bat <= out.signals.demand + 1e-12)
    assert used > 0


def test_agents_beyond_buildings_reuse_profiles_with_offsets(dataset):
    n = 40
    core = DemandResponseCore(EnvConfig(n_agents=n, demand_scales=1.0), dataset)
    assert core.layout.building.tolist() == [i % 17 for i in range(n)]
    assert np.all(core.layout.offset[:17] == 0) and np.any(core.layout.offset[17:] != 0)
    core.reset(seed=0, start_hour=0)
    col = (core.layout.offset) % core.width
    np.testing.assert_allclose(core.demand, dataset.demand_kwh[core.layout.building, col])
    again = DemandResponseCore(EnvConfig(n_agents=n, demand_scales=1.0), dataset)
    assert np.array_equal(again.layout.offset, core.layout.offset)


def test_agent_types_from_demand_scales(dataset):
    core = DemandResponseCore(EnvConfig(), dataset)
    assert core.layout.scale.tolist() == [2, 1, 1, 1, 2, 1, 1]
    assert core.agent_types.tolist() == [1, 0, 0, 0, 1, 0, 0]


def test_peak_and_constraint_share(dataset):
    core = DemandResponseCore(EnvConfig(), dataset)
    d = dataset.demand_kwh[:7, :3000] * core.layout.scale[:, None]
    assert core.peak_demand == pytest.approx(d.sum(axis=0).max())
    assert core.share == pytest.approx(0.27 * core.peak_demand / 7)


def test_aggregate_profile_matches_direct_sum():
    rng = np.random.default_rng(1)
    demand = rng.random((3, 50))
    building = rng.integers(0, 3, 200)
    offset = rng.integers(0, 50, 200)
    scale = rng.uniform(0.5, 2, 200)
    weights = np.zeros((3, 50))
    np.add.at(weights, (building, offset), scale)
    direct = np.array([(scale * demand[building, (t + offset) % 50]).sum() for t in range(50)])
    np.testing.assert_allclose(aggregate_profile(demand, weights), direct)


def test_million_agents_step(dataset):
    core = DemandResponseCore(EnvConfig(n_agents=1_000_000, episode_length=3), dataset)
    obs = core.reset(seed=0)
    assert obs.shape == (1_000_000, 7)
    out = core.step(np.full((1_000_000, 2), 0.5))
    assert np.isfinite(out.signals.e_grid).all()


def test_same_seed_same_trajectory(dataset):
    def trajectory():
        core = DemandResponseCore(EnvConfig(n_agents=20, episode_length=60), dataset)
        core.reset(seed=11)
        rng = np.random.default_rng(5)
        return np.stack([out.signals.e_grid for _, out in run(core, 60, rng)])

    assert np.array_equal(trajectory(), trajectory())


def test_bad_actions(dataset):
    core = DemandResponseCore(EnvConfig(), dataset)
    core.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(7, 2\)"):
        core.step(np.zeros((7, 3)))
    bad = np.full((7, 2), 0.5)
    bad[3, 1] = np.nan
    with pytest.raises(NonFiniteActionError, match=r"\[3\]"):
        core.step(bad)
    bad[3, 1] = 1.7
    out = core.step(bad)
    assert out.clipped.tolist() == [False, False, False, True, False, False, False]


def test_bad_actions_many_agents(dataset):
    """The multi-threaded kernel finds non-finite and out-of-range rows too."""
    core = DemandResponseCore(EnvConfig(n_agents=20_000, demand_scales=1.0), dataset)
    core.reset(seed=0)
    actions = np.full((20_000, 2), 0.5)
    actions[12_345, 0] = np.nan
    soc_before = core.soc.copy()
    with pytest.raises(NonFiniteActionError, match="12345"):
        core.step(actions)
    assert np.array_equal(core.soc, soc_before)
    actions[12_345, 0] = 0.5
    actions[7, 1] = 2.0
    assert np.flatnonzero(core.step(actions).clipped).tolist() == [7]


def test_start_hour_outside_window(dataset):
    core = DemandResponseCore(EnvConfig(), dataset)
    with pytest.raises(ValueError, match="outside the data window"):
        core.reset(start_hour=5000)
    test_core = DemandResponseCore(EnvConfig(split="test"), dataset)
    test_core.reset(start_hour=5000)
    assert test_core.window == (3000, 8760)


def test_multipliers_sampled_in_ranges(dataset):
    core = DemandResponseCore(EnvConfig(n_agents=500, augment=True, multiplier_mode="sampled"), dataset)
    obs = core.reset(seed=2)
    assert core.lam.min() >= 0 and core.lam.max() <= 15
    assert core.nu.min() >= -20 and core.nu.max() <= 20
    np.testing.assert_allclose(obs[:, 7], core.lam / 15, rtol=1e-6)
    np.testing.assert_allclose(obs[:, 8], (core.nu + 20) / 40, rtol=1e-6)
    with pytest.raises(ValueError, match=r"lambda values must lie in \[0.0, 15.0\]"):
        core.set_multipliers(lam=16.0)
