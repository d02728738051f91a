"""Pure array functions of the demand-response dynamics (docs/model.md)."""

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


BLOCK = 64  # batteries per block: the block's gathered constants and intermediates stay in L1
BLOCKS_PER_SCRATCH = 32  # blocks sharing one allocation of scratch space
# Rows of the per-block intermediates.
_E0, _FIRST, _ROOM, _ENERGY, _RTE, _SOC, _DEGRADED, _DISCHARGE = range(8)


def _step_kernel(soc, degraded, backlog, demand, solar, price, actions, lam, nu, share, model, table, efficiency, power,
                 soc_out, degraded_out, solar_out, e_bat_out, e_grid_out, backlog_out, r0_out, r2_out, lagr_out, clipped_out):
    """Agents are taken in blocks of ``BLOCK``: the block's battery constants are gathered into
    contiguous rows, then each stage of the physics runs as its own short loop over the block.
    Short branch-free loops with unit-stride operands compile to AVX2 code, and the CPU overlaps
    many agents' long dependency chains (square roots, divisions, curve lookups) instead of
    waiting on one agent's."""
    n = soc.shape[0]
    n_blocks = (n + BLOCK - 1) // BLOCK
    n_chunks = (n_blocks + BLOCKS_PER_SCRATCH - 1) // BLOCKS_PER_SCRATCH
    non_finite = 0
    for chunk in prange(n_chunks):
        p = np.empty((battery._table_rows(efficiency, power), BLOCK))
        t = np.empty((8, BLOCK))
        bad = 0
        for block in range(chunk * BLOCKS_PER_SCRATCH, min((chunk + 1) * BLOCKS_PER_SCRATCH, n_blocks)):
            lo = block * BLOCK
            count = min(BLOCK, n - lo)
            for j in range(count):
                m = model[lo + j]
                for row in range(battery._table_rows(efficiency, power)):
                    p[row, j] = table[row, m]
            # solar charges the battery first: CityLearn's two efficiency passes, then the update
            for j in range(count):
                i = lo + j
                e0 = battery._energy_init(soc[i], p, j)
                first = battery._min(solar[i], battery._max_energy(e0, p, j, efficiency, power))
                room = battery._max(degraded[i] - e0, 0.0)
                t[_E0, j] = e0
                t[_FIRST, j] = first
                t[_ROOM, j] = room
                t[_ENERGY, j] = battery._charge_pass(first, room, first, p, j, efficiency)[0]
            for j in range(count):
                t[_ENERGY, j], t[_RTE, j] = battery._charge_pass(t[_FIRST, j], t[_ROOM, j], t[_ENERGY, j], p, j, efficiency)
            for j in range(count):
                i = lo + j
                s, balance, d = battery._apply(t[_ENERGY, j], t[_RTE, j], t[_E0, j], degraded[i], p, j)
                charged = solar[i] > 0.0
                t[_SOC, j] = np.float64(battery._select(charged, s, soc[i]))
                t[_DEGRADED, j] = battery._select(charged, d, degraded[i])
                solar_out[i] = battery._select(charged, np.float64(balance), 0.0)
            # the battery then delivers a_bat * min(available discharge, demand to serve)
            for j in range(count):
                i = lo + j
                a_bat = battery._min(battery._max(actions[i, 0], 0.0), 1.0)
                to_serve = demand[i] + backlog[i]
                e0 = battery._energy_init(t[_SOC, j], p, j)
                max_energy = battery._max_energy(e0, p, j, efficiency, power)
                request = a_bat * battery._min(battery._available(e0, max_energy, p, j, efficiency), to_serve)
                t[_E0, j] = e0
                t[_FIRST, j] = battery._min(request, max_energy)
                t[_ROOM, j] = battery._max(e0 - p[battery.MIN_ENERGY, j], 0.0)
                t[_DISCHARGE, j] = (a_bat > 0.0) & (to_serve > 0.0) & (request > 0.0)
            for j in range(count):
                first = t[_FIRST, j]
                above_floor = t[_ROOM, j]
                energy = battery._discharge_pass(first, above_floor, first, p, j, efficiency)[0]
                t[_ENERGY, j], t[_RTE, j] = battery._discharge_pass(first, above_floor, energy, p, j, efficiency)
            # the grid serves a_grid of the rest, the remainder is postponed
            for j in range(count):
                i = lo + j
                a_bat = actions[i, 0]
                a_grid = actions[i, 1]
                finite = np.isfinite(a_bat) & np.isfinite(a_grid)
                bad += not finite
                clipped_out[i] = finite & ((a_bat < 0.0) | (a_bat > 1.0) | (a_grid < 0.0) | (a_grid > 1.0))
                a_grid = battery._min(battery._max(a_grid, 0.0), 1.0)
                s, balance, d = battery._apply(-t[_ENERGY, j], t[_RTE, j], t[_E0, j], t[_DEGRADED, j], p, j)
                go = t[_DISCHARGE, j] != 0.0
                to_serve = demand[i] + backlog[i]
                e_bat = battery._select(go, battery._min(-np.float64(balance), to_serve), 0.0)
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
                soc_out[i] = battery._standby(battery._select(go, s, np.float32(t[_SOC, j])), p, j)
                degraded_out[i] = battery._select(go, d, t[_DEGRADED, j])
        non_finite += bad
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
    """``r_L = r0 + lambda * (c/N - e_grid) + nu * r2`` (docs/model.md)."""
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
