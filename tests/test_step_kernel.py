"""The blocked, vectorized step kernel against the per-battery physics it is built from."""

import numpy as np
import pytest

from cmarl_env import battery, dynamics


def random_params(rng, n_models, k_efficiency, k_power):
    def curve(k, lo, hi):
        x = np.cumsum(rng.uniform(0.1, 1.0, (n_models, k)), axis=1)
        x = (x - x[:, :1]) / (x[:, -1:] - x[:, :1])
        return np.stack([x, rng.uniform(lo, hi, (n_models, k))], axis=1)

    return battery.BatteryParams.from_arrays(
        capacity=rng.uniform(2.0, 12.0, n_models),
        nominal_power=rng.uniform(1.0, 6.0, n_models),
        capacity_loss_coefficient=rng.choice([1e-5, 1e-3], n_models),
        loss_coefficient=rng.choice([0.0, 0.002], n_models),
        depth_of_discharge=rng.choice([1.0, 0.8], n_models),
        power_efficiency_curve=curve(k_efficiency, 0.7, 1.0),
        capacity_power_curve=curve(k_power, 0.1, 1.0),
    )


def random_state(rng, params, n):
    """Edge cases included: empty and full batteries, no solar, no demand, actions outside [0, 1]."""
    model = rng.integers(0, params.n_models, n)
    soc = rng.choice([0.0, 1.0, 0.5], n).astype(np.float32)
    soc = np.where(rng.random(n) < 0.5, rng.random(n), soc).astype(np.float32)
    degraded = params.capacity[model] * rng.uniform(0.9, 1.0, n)
    backlog = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.0, 10.0, n))
    demand = np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0.0, 5.0, n))
    solar = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0.0, 10.0, n))
    price = rng.random(n)
    actions = rng.uniform(-0.2, 1.2, (n, 2))
    actions[rng.random(n) < 0.2, 0] = 1.0
    return soc, degraded, backlog, demand, solar, price, actions, rng.random(n) * 10, rng.random(n) * 10, 0.3, model


def run_kernel(kernel, state, params):
    n = state[0].shape[0]
    soc_out = np.empty(n, dtype=np.float32)
    out = np.empty((8, n))
    clipped = np.empty(n, dtype=np.bool_)
    non_finite = kernel(*state, *params.kernel_args, soc_out, *out, clipped)
    return soc_out, out, clipped, non_finite


@pytest.mark.parametrize("sizes", [(5, 3), (2, 6)])
def test_serial_and_parallel_kernels_agree(sizes):
    """The two compilations vectorize differently; they must agree bit for bit, for any curve length."""
    rng = np.random.default_rng(sum(sizes))
    params = random_params(rng, 5, *sizes)
    state = random_state(rng, params, 5000)
    serial = run_kernel(dynamics._step_serial, state, params)
    parallel = run_kernel(dynamics._step_parallel, state, params)
    np.testing.assert_array_equal(serial[0].view(np.uint32), parallel[0].view(np.uint32))
    np.testing.assert_array_equal(serial[1].view(np.uint64), parallel[1].view(np.uint64))
    np.testing.assert_array_equal(serial[2], parallel[2])
    assert serial[3] == parallel[3] == 0


@pytest.mark.parametrize("n", [7, 5000])
def test_solar_charging_is_battery_charge(n):
    """Without discharge, the step is CityLearn's charge with the solar energy, then the standby loss."""
    rng = np.random.default_rng(n)
    params = random_params(rng, 3, 5, 3)
    state = list(random_state(rng, params, n))
    state[6][:, 0] = 0.0
    soc, degraded, solar, model = state[0], state[1], state[4], state[10]
    res = dynamics.step(*state, params)
    charged_soc, balance, charged_degraded = battery.charge(soc, degraded, solar, model, params)
    sunny = solar > 0.0
    expected_soc = battery.standby_loss(np.where(sunny, charged_soc, soc), model, params)
    np.testing.assert_array_equal(res.soc, expected_soc)
    np.testing.assert_array_equal(res.degraded, np.where(sunny, charged_degraded, degraded))
    np.testing.assert_array_equal(res.signals.solar_to_battery, np.where(sunny, balance, 0.0))
    assert np.all(res.signals.e_bat == 0.0)
