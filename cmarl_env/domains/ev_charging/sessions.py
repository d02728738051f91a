"""Charging sessions sampled from the ElaadNL distributions, vectorized over all ports.

Every port always holds one session, the car that is there or the next one to
come. When a car leaves, the port's next session is drawn:

* its day: the first day after the departure day, plus a geometric number of
  idle days (a free port gets a car on a day with probability ``daily_use``);
  workplace sites have no weekend arrivals in ElaadNL, so a workplace session
  that falls on a Saturday or Sunday moves to the Monday;
* its arrival time: a 15-minute slot drawn from that day's ElaadNL arrival
  distribution (weekday or weekend, the site's category), uniform inside the slot;
* its connection time and requested energy: drawn independently from the
  ElaadNL distributions of the site's category, by linear interpolation of the
  tabulated percentiles (a piecewise-linear quantile function);
* the car model: drawn with weights = the Dutch registrations in ev2gym's
  ``ev_specs.json``; it sets the battery capacity and the AC power limit.

The energy the car asks for is the sampled energy, capped by what it can take:
its battery capacity and the charger's power over its stay (``min(charger,
car AC limit) x connection time``), so that every request can be met by
charging at full power from arrival. The uncapped draw is kept for the
fidelity checks (``energy_sampled``).

The day is chosen before the slot is drawn, so the arrival time of day of
every session is an exact draw from the source distribution of its day type.
Sessions do not depend on the actions: the same seed gives the same cars for
every controller (the clairvoyant LP reads them with :func:`episode_sessions`).

Times are hours from local midnight of the episode's first day (floats).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cmarl_env.domains.ev_charging.data import CATEGORIES, SLOTS_PER_DAY, EVTables

SLOT_H = 24.0 / SLOTS_PER_DAY


class Draw(NamedTuple):
    """New sessions for some ports (arrays of the same length)."""

    arrival: np.ndarray         # [h from the episode's first local midnight]
    departure: np.ndarray       # [h]
    requested: np.ndarray       # [kWh] what the car asks for (capped as above)
    power: np.ndarray           # [kW] min(charger, car AC limit)
    energy_sampled: np.ndarray  # [kWh] the ElaadNL draw before the cap
    duration: np.ndarray        # [h] connection time
    slot: np.ndarray            # 15-minute slot of the arrival, 0..95
    weekend: np.ndarray         # bool: the arrival day is a Saturday or Sunday
    model: np.ndarray           # index into EVTables.ev_model


def exceedance_quantile(table: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Value exceeded by a fraction ``u`` of sessions: linear interpolation of ``table[rows, 100 u]``.

    ``table`` is (categories, 101), ``table[c, p]`` = the value p % of sessions exceed.
    """
    p = 100.0 * u
    k = np.minimum(p.astype(np.int64), 99)
    frac = p - k
    lo = table[rows, k]
    return lo + frac * (table[rows, k + 1] - lo)


class SessionSampler:
    """Draws sessions for the ports of an episode; one ``numpy.random.Generator`` stream."""

    def __init__(self, tables: EVTables, port_category: np.ndarray, charger_kw: float, daily_use: float):
        self.tables = tables
        self.category = np.asarray(port_category, dtype=np.int64)
        self.charger_kw = float(charger_kw)
        self.daily_use = float(daily_use)
        pmf = tables.arrival_pmf.reshape(len(CATEGORIES) * 2, SLOTS_PER_DAY)
        cdf = np.cumsum(pmf, axis=1)
        cdf[cdf[:, -1] > 0] /= cdf[cdf[:, -1] > 0, -1:]
        # rows offset by their index: one monotone array, searched once for all groups
        self._cdf_flat = (cdf + np.arange(cdf.shape[0])[:, None]).ravel()
        self._model_cdf = np.cumsum(tables.ev_weights)
        self._model_cdf[-1] = 1.0
        self._conn = tables.connection_time_h
        self._energy = tables.energy_demand_kwh
        self._power = np.minimum(self.charger_kw, tables.ev_max_ac_kw)
        self._battery = tables.ev_battery_kwh
        self._workplace = CATEGORIES.index("workplace")

    def draw(self, rng: np.random.Generator, ports: np.ndarray, earliest_day: np.ndarray, first_day: int) -> Draw:
        """Next sessions of ``ports`` (ascending indices), on day ``earliest_day`` or later.

        ``first_day`` is the absolute day index (day 0 = 2015-01-02) of the
        episode's first day, for the day of the week.
        """
        n = ports.size
        cat = self.category[ports]
        day = np.asarray(earliest_day, dtype=np.int64) + (rng.geometric(self.daily_use, size=n) - 1)
        wd = self.tables.weekday(first_day + day)
        move = (cat == self._workplace) & (wd >= 5)
        day = np.where(move, day + 7 - wd, day)
        weekend = self.tables.weekday(first_day + day) >= 5
        u = rng.random((5, n))
        group = 2 * cat + weekend
        slot = np.searchsorted(self._cdf_flat, group + u[0], side="right") - SLOTS_PER_DAY * group
        slot = np.clip(slot, 0, SLOTS_PER_DAY - 1)
        arrival = 24.0 * day + SLOT_H * (slot + u[1])
        duration = exceedance_quantile(self._conn, cat, u[2])
        energy = exceedance_quantile(self._energy, cat, u[3])
        model = np.minimum(np.searchsorted(self._model_cdf, u[4], side="right"), self._model_cdf.size - 1)
        power = self._power[model]
        requested = np.minimum(np.minimum(energy, self._battery[model]), power * duration)
        return Draw(arrival, arrival + duration, requested, power, energy, duration, slot, weekend, model)


class Sessions(NamedTuple):
    """Every session of an episode that arrives before its end (arrays of the same length, in draw order)."""

    port: np.ndarray
    arrival: np.ndarray
    departure: np.ndarray
    requested: np.ndarray
    power: np.ndarray
    energy_sampled: np.ndarray
    duration: np.ndarray
    slot: np.ndarray
    weekend: np.ndarray
    model: np.ndarray

    @property
    def size(self) -> int:
        return int(self.port.size)


def concat_draws(parts: list[tuple[np.ndarray, Draw]]) -> Sessions:
    if not parts:
        empty = np.zeros(0)
        return Sessions(np.zeros(0, np.int64), *(empty,) * 6, np.zeros(0, np.int64), np.zeros(0, bool),
                        np.zeros(0, np.int64))
    ports = np.concatenate([p for p, _ in parts])
    fields = [np.concatenate([getattr(d, f) for _, d in parts]) for f in Draw._fields]
    return Sessions(ports, *fields)
