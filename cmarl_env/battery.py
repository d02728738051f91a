"""Vectorized port of ``citylearn.energy_model.Battery`` (CityLearn 3.0.2).

Every function here is pure and works on arrays of N batteries at once. The
arithmetic follows CityLearn's ``Battery.charge`` line by line (power limit
from the capacity-power curve, two fixed-point passes of the power-efficiency
curve, depth-of-discharge and degraded-capacity limits, capacity fade per
cycle) and stores the state of charge and the energy balance in float32, as
CityLearn does, so that trajectories agree with CityLearn's own objects to
well below 1e-6 kWh (checked in ``tests/test_battery.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ZERO_DIVISION_PLACEHOLDER = 1.0e-6  # CityLearn's guard against division by zero


@dataclass(frozen=True)
class BatteryParams:
    """Per-battery constants, each an array of shape (N,) or (N, K)."""

    capacity: np.ndarray
    nominal_power: np.ndarray
    capacity_loss_coefficient: np.ndarray
    loss_coefficient: np.ndarray
    depth_of_discharge: np.ndarray
    efficiency_slope: np.ndarray
    efficiency_intercept: np.ndarray
    efficiency_breaks: np.ndarray
    power_slope: np.ndarray
    power_intercept: np.ndarray
    power_breaks: np.ndarray
    seconds_per_time_step: float = 3600.0

    @property
    def step_hours(self) -> float:
        return max(self.seconds_per_time_step / 3600.0, 1.0e-12)

    @property
    def minimum_soc(self) -> np.ndarray:
        return np.clip(1.0 - self.depth_of_discharge, 0.0, 1.0)

    @property
    def minimum_energy(self) -> np.ndarray:
        return self.minimum_soc * self.capacity

    @classmethod
    def from_arrays(
        cls,
        *,
        capacity,
        nominal_power,
        capacity_loss_coefficient,
        loss_coefficient,
        depth_of_discharge,
        power_efficiency_curve,
        capacity_power_curve,
        seconds_per_time_step: float = 3600.0,
    ) -> "BatteryParams":
        """Build from CityLearn-style arrays; curves have shape (N, 2, K)."""
        eff_slope, eff_icpt, eff_breaks = _segments(np.asarray(power_efficiency_curve, dtype=np.float64))
        pow_slope, pow_icpt, pow_breaks = _segments(np.asarray(capacity_power_curve, dtype=np.float64))
        f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
        return cls(
            capacity=f64(capacity),
            nominal_power=f64(nominal_power),
            capacity_loss_coefficient=f64(capacity_loss_coefficient),
            loss_coefficient=f64(loss_coefficient) * max(seconds_per_time_step / 3600.0, 0.0),
            depth_of_discharge=f64(depth_of_discharge),
            efficiency_slope=eff_slope,
            efficiency_intercept=eff_icpt,
            efficiency_breaks=eff_breaks,
            power_slope=pow_slope,
            power_intercept=pow_icpt,
            power_breaks=pow_breaks,
            seconds_per_time_step=float(seconds_per_time_step),
        )

    def take(self, index: np.ndarray) -> "BatteryParams":
        """Parameters for a selection of batteries (e.g. one row per agent)."""
        fields = {
            name: getattr(self, name)[index]
            for name in self.__dataclass_fields__
            if name != "seconds_per_time_step"
        }
        return BatteryParams(**fields, seconds_per_time_step=self.seconds_per_time_step)


def _segments(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slope and intercept of each linear piece of (N, 2, K) curves.

    CityLearn picks piece ``idx = min(K-2, max(0, searchsorted(x, v, 'left') - 1))``
    and evaluates ``y[idx] + (v - x[idx]) * (y[idx+1] - y[idx]) / (x[idx+1] - x[idx])``;
    the inner breakpoints ``x[1:K-1]`` decide the piece.
    """
    if curve.ndim != 3 or curve.shape[1] != 2 or curve.shape[2] < 2:
        raise ValueError(f"battery curve must have shape (N, 2, K>=2), got {curve.shape}")
    x, y = curve[:, 0, :], curve[:, 1, :]
    dx = x[:, 1:] - x[:, :-1]
    if np.any(dx <= 0):
        raise ValueError("battery curve x values must be strictly increasing")
    slope = (y[:, 1:] - y[:, :-1]) / dx
    intercept = y[:, :-1] - slope * x[:, :-1]
    return np.ascontiguousarray(slope), np.ascontiguousarray(intercept), np.ascontiguousarray(x[:, 1:-1])


def piecewise_linear(value: np.ndarray, slope: np.ndarray, intercept: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    """Evaluate per-row piecewise-linear curves the way CityLearn indexes them."""
    piece = np.zeros(value.shape, dtype=np.intp)
    for k in range(breaks.shape[1]):
        piece += breaks[:, k] < value
    if slope.shape[1] == 1:
        return intercept[:, 0] + slope[:, 0] * value
    rows = np.arange(value.shape[0])
    return intercept[rows, piece] + slope[rows, piece] * value


def max_power(energy_init: np.ndarray, p: BatteryParams) -> np.ndarray:
    """Charge/discharge power limit [kW] from the capacity-power curve."""
    soc = energy_init / np.maximum(p.capacity, ZERO_DIVISION_PLACEHOLDER)
    limit = p.nominal_power * piecewise_linear(soc, p.power_slope, p.power_intercept, p.power_breaks)
    return np.maximum(limit, 0.0)


def efficiency_at(energy: np.ndarray, p: BatteryParams) -> np.ndarray:
    """Technical efficiency at the average power of moving ``energy`` in one step."""
    power = np.abs(energy) / p.step_hours
    normalized = np.clip(power / np.maximum(p.nominal_power, ZERO_DIVISION_PLACEHOLDER), 0.0, 1.0)
    return piecewise_linear(normalized, p.efficiency_slope, p.efficiency_intercept, p.efficiency_breaks)


def energy_init(soc: np.ndarray, p: BatteryParams) -> np.ndarray:
    """Stored energy [kWh] seen at the start of an operation (CityLearn's ``energy_init``)."""
    return np.maximum(p.minimum_energy, soc.astype(np.float64) * p.capacity)


def charge_limit(request: np.ndarray, e0: np.ndarray, degraded: np.ndarray, p: BatteryParams):
    """Accepted charge [kWh] for non-negative requests, and the efficiency used."""
    max_energy = max_power(e0, p) * p.step_hours
    limited = np.minimum(request, max_energy)
    headroom = np.maximum(degraded - e0, 0.0)
    for _ in range(2):
        eff = efficiency_at(limited, p)
        limited = np.minimum(np.minimum(request, max_energy), headroom / np.maximum(np.sqrt(eff), ZERO_DIVISION_PLACEHOLDER))
    return limited, eff


def discharge_limit(request: np.ndarray, e0: np.ndarray, p: BatteryParams):
    """Accepted discharge [kWh, positive] for non-negative output requests, and the efficiency used."""
    max_energy = max_power(e0, p) * p.step_hours
    limited = np.minimum(request, max_energy)
    above_floor = np.maximum(e0 - p.minimum_energy, 0.0)
    for _ in range(2):
        eff = efficiency_at(limited, p)
        limited = np.minimum(np.minimum(request, max_energy), above_floor * np.sqrt(eff))
    return limited, eff


def apply_energy(energy: np.ndarray, eff: np.ndarray, e0: np.ndarray, degraded: np.ndarray, p: BatteryParams):
    """CityLearn's ``_charge`` plus capacity fade: new float32 SOC, float32 balance, new degraded capacity."""
    rte = np.sqrt(eff)
    charged = np.minimum(e0 + energy * rte, p.capacity)
    discharged = np.maximum(p.minimum_energy, e0 + energy / rte)
    final = np.where(energy >= 0.0, charged, discharged)
    soc = (final / np.maximum(p.capacity, ZERO_DIVISION_PLACEHOLDER)).astype(np.float32)
    delta = final - e0
    balance = np.where(delta >= 0.0, delta / rte, delta * rte).astype(np.float32)
    fade = p.capacity_loss_coefficient * p.capacity * np.abs(balance.astype(np.float64))
    fade /= 2.0 * np.maximum(degraded, ZERO_DIVISION_PLACEHOLDER)
    return soc, balance, np.maximum(degraded - fade, 0.0)


def charge(soc: np.ndarray, degraded: np.ndarray, request: np.ndarray, p: BatteryParams):
    """One ``Battery.charge(request)`` call for every battery (request > 0 charges, < 0 discharges).

    Returns ``(soc, balance, degraded)``: float32 state of charge, float32 energy
    balance [kWh] (positive = energy drawn into the battery, negative = energy
    delivered), float64 degraded capacity.
    """
    e0 = energy_init(soc, p)
    charging = request >= 0.0
    charge_energy, charge_eff = charge_limit(np.where(charging, request, 0.0), e0, degraded, p)
    discharge_energy, discharge_eff = discharge_limit(np.where(charging, 0.0, -request), e0, p)
    energy = np.where(charging, charge_energy, -discharge_energy)
    eff = np.where(charging, charge_eff, discharge_eff)
    return apply_energy(energy, eff, e0, degraded, p)


def charge_only(soc, degraded, request, p: BatteryParams):
    """``charge`` specialised to non-negative requests (one branch: half the work)."""
    e0 = energy_init(soc, p)
    energy, eff = charge_limit(request, e0, degraded, p)
    return apply_energy(energy, eff, e0, degraded, p)


def discharge_only(soc, degraded, output, p: BatteryParams):
    """``charge(-output)`` specialised to non-negative output requests."""
    e0 = energy_init(soc, p)
    energy, eff = discharge_limit(output, e0, p)
    return apply_energy(-energy, eff, e0, degraded, p)


def available_discharge(soc: np.ndarray, p: BatteryParams) -> np.ndarray:
    """Energy [kWh] the battery would deliver this step if asked for its nominal power."""
    e0 = energy_init(soc, p)
    energy, _ = discharge_limit(p.nominal_power * p.step_hours, e0, p)
    return energy


def standby_loss(soc: np.ndarray, p: BatteryParams) -> np.ndarray:
    """SOC carried to the next step (CityLearn's ``next_time_step``)."""
    return np.clip(soc.astype(np.float64) * (1.0 - p.loss_coefficient), p.minimum_soc, 1.0).astype(np.float32)
