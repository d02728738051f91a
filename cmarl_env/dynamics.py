"""Pure array functions of the demand-response dynamics (DESIGN.md section 4)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from numba import prange

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



def _step_kernel(soc, degraded, backlog, demand, solar, price, actions, lam, nu, share, model,
                 tab, ex, ey, es, px, py, ps,
                 soc_out, degraded_out, solar_out, e_bat_out, e_grid_out, backlog_out, r0_out, r2_out, lagr_out, clipped_out):
    non_finite = 0
    for i in prange(soc.shape[0]):
        a_bat = actions[i, 0]
        a_grid = actions[i, 1]
        if not (np.isfinite(a_bat) and np.isfinite(a_grid)):
            clipped_out[i] = False
            non_finite += 1
            continue
        clipped_out[i] = a_bat < 0.0 or a_bat > 1.0 or a_grid < 0.0 or a_grid > 1.0
        a_bat = min(max(a_bat, 0.0), 1.0)
        a_grid = min(max(a_grid, 0.0), 1.0)
        m = model[i]
        s = soc[i]
        deg = degraded[i]
        solar_out[i] = 0.0
        if solar[i] > 0.0:
            s, bal, deg = battery._charge(s, deg, solar[i], m, tab, ex, ey, es, px, py, ps)
            solar_out[i] = np.float64(bal)
        to_serve = demand[i] + backlog[i]
        e_bat = 0.0
        if a_bat > 0.0 and to_serve > 0.0:
            e0 = battery._energy_init(s, tab, m)
            max_energy = battery._max_energy(e0, tab, px, py, ps, m)
            request = a_bat * min(battery._available(e0, max_energy, m, tab, ex, ey, es), to_serve)
            if request > 0.0:
                s, bal, deg = battery._discharge_from(e0, max_energy, deg, request, m, tab, ex, ey, es)
                e_bat = min(-np.float64(bal), to_serve)
        unserved = to_serve - e_bat
        e_grid = a_grid * unserved
        r0 = -price[i] * e_grid
        r2 = demand[i] - e_grid - e_bat
        e_bat_out[i] = e_bat
        e_grid_out[i] = e_grid
        backlog_out[i] = unserved - e_grid
        r0_out[i] = r0
        r2_out[i] = r2
        lagr_out[i] = r0 + lam[i] * (share - e_grid) + nu[i] * r2
        soc_out[i] = battery._standby(s, m, tab)
        degraded_out[i] = deg
    return non_finite


_step_serial, _step_parallel = battery.compile_kernel(_step_kernel)


class StepResult(NamedTuple):
    soc: np.ndarray
    degraded: np.ndarray
    signals: StepSignals
    lagrangian: np.ndarray
    clipped: np.ndarray
    non_finite: int


def step(soc, degraded, backlog, demand, solar, price, actions, lam, nu, share, model, params: BatteryParams) -> StepResult:
    """Advance N agents by one hour with (N, 2) actions ``[a_bat, a_grid]``.

    1. solar charges the battery first (CityLearn semantics), the rest is curtailed;
    2. the battery delivers ``a_bat * min(available discharge, demand to serve)``;
    3. the grid delivers ``a_grid`` of what is still unserved;
    4. whatever is left is postponed to the next hour;
    then the battery's standby loss carries its charge into the next hour.
    Actions outside [0, 1] are clipped (``clipped`` marks those agents);
    ``non_finite`` counts rows with NaN or infinities, whose outputs are meaningless.
    Also returns the Lagrangian reward ``r0 + lam * (share - e_grid) + nu * r2``.
    """
    n = soc.shape[0]
    soc_out = np.empty(n, dtype=np.float32)
    out = list(np.empty((8, n)))
    clipped = np.empty(n, dtype=np.bool_)
    kernel = _step_parallel if n >= battery.PARALLEL_THRESHOLD else _step_serial
    non_finite = kernel(soc, degraded, backlog, demand, solar, price, actions, lam, nu, float(share), model,
                        *params.kernel_args, soc_out, *out, clipped)
    degraded_out, solar_to_battery, e_bat, e_grid, new_backlog, r0, r2, lagrangian = out
    signals = StepSignals(demand, solar, solar_to_battery, e_bat, e_grid, new_backlog, r0, r2, price)
    return StepResult(soc_out, degraded_out, signals, lagrangian, clipped, non_finite)


def _observe_kernel(t, phase, row, width, demand_tab, solar_tab, price_tab, sin_tab, cos_tab, scale,
                    backlog, soc, lam, nu, norms, augment, demand_out, solar_out, price_out, obs):
    inv_demand, inv_solar, inv_price, lam_lo, inv_lam_span, nu_lo, inv_nu_span = norms
    for i in prange(phase.shape[0]):
        col = (phase[i] + t) % width
        idx = row[i] + col
        d = demand_tab[idx] * scale[i]
        demand_out[i] = d
        solar_out[i] = solar_tab[idx]
        price_out[i] = price_tab[idx]
        obs[i, 0] = d * inv_demand
        obs[i, 1] = backlog[i] * inv_demand
        obs[i, 2] = soc[i]
        obs[i, 3] = solar_tab[idx] * inv_solar
        obs[i, 4] = price_tab[idx] * inv_price
        obs[i, 5] = sin_tab[col]
        obs[i, 6] = cos_tab[col]
        if augment:
            obs[i, 7] = (lam[i] - lam_lo) * inv_lam_span
            obs[i, 8] = (nu[i] - nu_lo) * inv_nu_span


_observe_serial, _observe_parallel = battery.compile_kernel(_observe_kernel)


def gather_and_observe(t, phase, row, width, tables, scale, backlog, soc, lam, nu, norms, augment, obs_dim):
    """This hour's (demand, solar, price) for every agent and the (N, obs_dim) float32 observation.

    Agent i reads column ``(phase[i] + t) % width`` of row ``row[i]`` of the
    flattened (building, hour) tables; ``norms`` holds the reciprocal scales.
    """
    n = phase.shape[0]
    demand, solar, price = np.empty(n), np.empty(n), np.empty(n)
    obs = np.empty((n, obs_dim), dtype=np.float32)
    kernel = _observe_parallel if n >= battery.PARALLEL_THRESHOLD else _observe_serial
    kernel(t, phase, row, width, *tables, scale, backlog, soc, lam, nu, norms, augment, demand, solar, price, obs)
    return demand, solar, price, obs


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
