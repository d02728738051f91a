"""The vectorized battery against CityLearn's own ``Battery`` on the same requests."""

import numpy as np
import pytest
citylearn = pytest.importorskip("citylearn", reason="the battery equivalence needs the [citylearn] extra (make test-citylearn)")
from citylearn.base import EpisodeTracker  # noqa: E402
from citylearn.energy_model import Battery  # noqa: E402

from cmarl_env import battery

STEPS = 600


def citylearn_batteries(specs, steps):
    tracker = EpisodeTracker(0, steps)
    tracker.next_episode(steps + 1, False, False, 0)
    out = []
    for seed, kwargs in specs:
        b = Battery(episode_tracker=tracker, seconds_per_time_step=3600, random_seed=seed, **kwargs)
        b.reset()
        out.append(b)
    return out


def params_of(batteries):
    return battery.BatteryParams.from_arrays(
        capacity=[b.capacity for b in batteries],
        nominal_power=[b.nominal_power for b in batteries],
        capacity_loss_coefficient=[b.capacity_loss_coefficient for b in batteries],
        loss_coefficient=[b.loss_coefficient for b in batteries],
        depth_of_discharge=[b.depth_of_discharge for b in batteries],
        power_efficiency_curve=np.stack([b.power_efficiency_curve for b in batteries]),
        capacity_power_curve=np.stack([b.capacity_power_curve for b in batteries]),
    )


SPECS = [
    (2022, dict(capacity=6.4, nominal_power=5.0, efficiency=0.9, capacity_loss_coefficient=1e-5, loss_coefficient=0.0)),
    (7, dict(capacity=6.4, nominal_power=5.0, efficiency=0.9, capacity_loss_coefficient=1e-3, loss_coefficient=0.0)),
    (11, dict(capacity=10.0, nominal_power=3.3, efficiency=0.95, capacity_loss_coefficient=1e-4, loss_coefficient=0.002)),
    (13, dict(capacity=4.0, nominal_power=4.0, efficiency=0.85, capacity_loss_coefficient=1e-5, loss_coefficient=0.0,
              depth_of_discharge=0.8, initial_soc=0.5)),
]


def test_battery_matches_citylearn():
    rng = np.random.default_rng(0)
    batteries = citylearn_batteries(SPECS, STEPS)
    p = params_of(batteries)
    soc = np.array([b.soc[0] for b in batteries], dtype=np.float32)
    degraded = p.capacity.copy()
    model = np.arange(len(batteries))
    # mix of charging and discharging, with requests beyond the power limits
    requests = rng.uniform(-7.0, 7.0, size=(STEPS, len(batteries)))
    requests[rng.random(requests.shape) < 0.1] = 0.0
    max_err_energy = max_err_balance = 0.0
    for t in range(STEPS):
        r = requests[t]
        soc, balance, degraded = battery.charge(soc, degraded, r, model, p)
        for i, b in enumerate(batteries):
            b.charge(float(r[i]))
            stored_ref = float(b.soc[b.time_step]) * b.capacity
            max_err_energy = max(max_err_energy, abs(stored_ref - float(soc[i]) * p.capacity[i]))
            max_err_balance = max(max_err_balance, abs(float(b.energy_balance[b.time_step]) - float(balance[i])))
            assert abs(b.degraded_capacity - degraded[i]) < 1e-9
            b.next_time_step()
        soc = battery.standby_loss(soc, model, p)
    assert max_err_energy < 1e-6, max_err_energy
    assert max_err_balance < 1e-6, max_err_balance


def test_battery_can_fail_on_wrong_physics():
    """The comparison is sensitive: a 1 % efficiency error is caught."""
    batteries = citylearn_batteries(SPECS[:1], 50)
    p = params_of(batteries)
    wrong = battery.BatteryParams(**{**p.__dict__, "efficiency_y": p.efficiency_y * 0.99})
    soc = np.array([batteries[0].soc[0]], dtype=np.float32)
    soc, _, _ = battery.charge(soc, p.capacity.copy(), np.array([3.0]), np.array([0]), wrong)
    batteries[0].charge(3.0)
    assert abs(float(batteries[0].soc[0]) - float(soc[0])) * 6.4 > 1e-3


def test_charge_never_exceeds_request_or_capacity():
    batteries = citylearn_batteries(SPECS, 10)
    p = params_of(batteries)
    model = np.arange(len(batteries))
    soc = np.zeros(len(batteries), dtype=np.float32)
    for _ in range(5):
        soc, balance, _ = battery.charge(soc, p.capacity.copy(), np.full(len(batteries), 2.0), model, p)
        assert np.all(balance <= 2.0 + 1e-6) and np.all(balance >= 0)
        assert np.all(soc <= 1.0)
