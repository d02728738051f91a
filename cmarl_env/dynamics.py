"""Pure array functions of the demand-response dynamics (DESIGN.md section 4)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numba import njit, prange

from cmarl_env import battery
from cmarl_env.battery import BatteryParams


class StepSignals(NamedTuple):
    """Per-agent signals of one hourly step, each an array of shape (N,)."""

    demand: np.ndarray
    solar: np.ndarray
    solar_to_battery: np.ndarray
    e_bat: np.ndarray
    e_grid: np.ndarray
    backlog: np.ndarray
    r0: np.ndarray
    r2: np.ndarray
    price: np.ndarray

    @property
    def curtailed(self) -> np.ndarray:
        return self.solar - self.solar_to_battery

    @property
    def cost(self) -> np.ndarray:
        """Safety-gymnasium style cost: the global-constraint signal ``e_grid``."""
        return self.e_grid


def _step_kernel(soc, degraded, backlog, demand, solar, price, a_bat, a_grid, model, tab, ex, ey, es, px, py, ps,
                 soc_out, degraded_out, solar_out, e_bat_out, e_grid_out, backlog_out, r0_out, r2_out):
    for i in prange(soc.shape[0]):
        m = model[i]
        s = soc[i]
        deg = degraded[i]
        solar_out[i] = 0.0
        if solar[i] > 0.0:
            s, bal, deg = battery._charge(s, deg, solar[i], m, tab, ex, ey, es, px, py, ps)
            solar_out[i] = np.float64(bal)
        to_serve = demand[i] + backlog[i]
        e_bat = 0.0
        if a_bat[i] > 0.0 and to_serve > 0.0:
            request = a_bat[i] * min(battery._available(s, m, tab, ex, ey, es, px, py, ps), to_serve)
            s, bal, deg = battery._discharge(s, deg, request, m, tab, ex, ey, es, px, py, ps)
            e_bat = min(-np.float64(bal), to_serve)
        unserved = to_serve - e_bat
        e_grid = a_grid[i] * unserved
        e_bat_out[i] = e_bat
        e_grid_out[i] = e_grid
        backlog_out[i] = unserved - e_grid
        r0_out[i] = -price[i] * e_grid
        r2_out[i] = demand[i] - e_grid - e_bat
        soc_out[i] = battery._standby(s, m, tab)
        degraded_out[i] = deg


_step_serial = njit(cache=True)(_step_kernel)
_step_parallel = njit(cache=True, parallel=True)(_step_kernel)


def step(
    soc: np.ndarray,
    degraded: np.ndarray,
    backlog: np.ndarray,
    demand: np.ndarray,
    solar: np.ndarray,
    price: np.ndarray,
    a_bat: np.ndarray,
    a_grid: np.ndarray,
    model: np.ndarray,
    params: BatteryParams,
) -> tuple[np.ndarray, np.ndarray, StepSignals]:
    """Advance N agents by one hour; returns (soc, degraded capacity, signals).

    1. solar charges the battery first (CityLearn semantics), the rest is curtailed;
    2. the battery delivers ``a_bat * min(available discharge, demand to serve)``;
    3. the grid delivers ``a_grid`` of what is still unserved;
    4. whatever is left is postponed to the next hour;
    then the battery's standby loss carries its charge into the next hour.
    """
    n = soc.shape[0]
    soc_out = np.empty(n, dtype=np.float32)
    out = [np.empty(n) for _ in range(7)]
    kernel = _step_parallel if n >= battery.PARALLEL_THRESHOLD else _step_serial
    kernel(soc, degraded, backlog, demand, solar, price, a_bat, a_grid, model, *params.kernel_args, soc_out, *out)
    degraded_out, solar_to_battery, e_bat, e_grid, new_backlog, r0, r2 = out
    signals = StepSignals(demand, solar, solar_to_battery, e_bat, e_grid, new_backlog, r0, r2, price)
    return soc_out, degraded_out, signals


def lagrangian_reward(r0, e_grid, r2, lam, nu, share):
    """``r_L = r0 + lambda * (c/N - e_grid) + nu * r2`` (DESIGN.md section 5)."""
    return r0 + lam * (share - e_grid) + nu * r2


def aggregate_profile(demand: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Aggregate demand over a window when agents replay buildings with time offsets.

    ``demand`` is (B, W) per-building demand over the window, ``weights`` is (B, W)
    where ``weights[b, o]`` sums the demand scales of agents on building ``b`` with
    offset ``o``. Returns ``A[t] = sum_b sum_o weights[b, o] * demand[b, (t + o) % W]``,
    a circular cross-correlation computed by FFT in O(B W log W) whatever N is.
    """
    width = demand.shape[1]
    spectrum = np.conj(np.fft.rfft(weights, axis=1)) * np.fft.rfft(demand, axis=1)
    return np.fft.irfft(spectrum.sum(axis=0), n=width)
