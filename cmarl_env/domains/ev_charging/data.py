"""The embedded EV tables (ElaadNL distributions, EV specifications, Dutch day-ahead prices from ev2gym 2.0.0).

``load_tables()`` reads ``cmarl_env/datasets/ev/elaadnl_ev2gym.npz``, checks its
sha256 (and that of the LICENSE beside it) against :data:`EV_DATA_SHA256`, and
returns an :class:`EVTables` with the distributions as sampling-ready arrays.
``derive_data.py`` in this folder re-derives the npz from the ev2gym wheel.

Time: the model's clock is Central European Time without daylight saving
(UTC+1 all year). Day 0 is 2015-01-02 (its local midnight is 2015-01-01 23:00
UTC); the price of local hour h of day d is the day-ahead price of UTC hour
``24 d + h + 23`` counted from 2015-01-01 00:00 UTC. The series has 3,652 whole
days (2015-01-02 to 2024-12-31).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

EV_DATA_DIR = Path(__file__).resolve().parents[2] / "datasets" / "ev"
EV_NPZ = "elaadnl_ev2gym.npz"
EV_DATA_SHA256 = {
    EV_NPZ: "161a9a189d45d84083c3b48881b295031c8904824df79d6ca8fc0fa37b4c3e54",
    "LICENSE": "a09393aa9ea7ffb17c1e5cab01ca340b9f7544273fef513da216f9c1601e225e",
}
CATEGORIES = ("private", "public", "workplace")
UTC_OFFSET_H = 1            # the clock: CET, no daylight saving
FIRST_DAY = dt.date(2015, 1, 2)  # day 0 of the local price series
SLOTS_PER_DAY = 96          # the arrival tables have 15-minute slots


@dataclass(frozen=True)
class EVTables:
    """The shipped arrays plus sampling helpers (all read-only)."""

    arrays: dict

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.arrays["categories"])

    @cached_property
    def arrival_pmf(self) -> np.ndarray:
        """(3 categories, 2 day types [weekday, weekend], 96 slots): share of arrivals per 15-minute slot, sums to 1.

        Workplace has no weekend row in the source (no arrivals): its weekend row is all zeros.
        """
        out = np.zeros((len(CATEGORIES), 2, SLOTS_PER_DAY))
        for k, key in enumerate(("arrival_weekday_pct", "arrival_weekend_pct")):
            pct = self.arrays[key].T  # (3, 96)
            total = pct.sum(axis=1, keepdims=True)
            out[:, k] = np.divide(pct, total, out=np.zeros_like(pct), where=total > 0)
        return out

    @property
    def connection_time_h(self) -> np.ndarray:
        """(3, 101): the connection time [h] that p % of sessions exceed, p = 0..100."""
        return self.arrays["connection_time_h"].T

    @property
    def energy_demand_kwh(self) -> np.ndarray:
        """(3, 101): the energy [kWh] that p % of sessions exceed, p = 0..100."""
        return self.arrays["energy_demand_kwh"].T

    @property
    def ev_model(self) -> tuple[str, ...]:
        return tuple(str(m) for m in self.arrays["ev_model"])

    @cached_property
    def ev_weights(self) -> np.ndarray:
        r = self.arrays["ev_registrations"].astype(np.float64)
        return r / r.sum()

    @property
    def ev_battery_kwh(self) -> np.ndarray:
        return self.arrays["ev_battery_kwh"]

    @property
    def ev_max_ac_kw(self) -> np.ndarray:
        return self.arrays["ev_max_ac_kw"]

    @cached_property
    def price_eur_per_kwh(self) -> np.ndarray:
        """Hourly day-ahead price on the local clock: element 24 d + h is local hour h of day d (day 0 = 2015-01-02)."""
        utc = self.arrays["price_centi_eur_per_mwh"].astype(np.float64) / 100.0 / 1000.0
        first = 24 - UTC_OFFSET_H  # UTC hour of local midnight of day 0
        return utc[first:]

    @property
    def n_days(self) -> int:
        return self.price_eur_per_kwh.shape[0] // 24

    def weekday(self, day) -> np.ndarray:
        """Day of the week (Monday = 0) of day index ``day`` (array or int)."""
        return (np.asarray(day) + FIRST_DAY.weekday()) % 7

    def day_index(self, date: dt.date) -> int:
        return (date - FIRST_DAY).days


_CACHE: dict[str, EVTables] = {}


def load_tables(directory: str | Path | None = None) -> EVTables:
    """The embedded tables, sha256-checked (``ValueError`` naming the file on a mismatch)."""
    key = str(directory or EV_DATA_DIR)
    if key not in _CACHE:
        folder = Path(key)
        contents = {}
        for name, expected in EV_DATA_SHA256.items():
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(f"EV data file {path} is missing; reinstall cmarl-env "
                                        "(or re-derive it: python -m cmarl_env.domains.ev_charging.derive_data)")
            blob = path.read_bytes()
            actual = hashlib.sha256(blob).hexdigest()
            if actual != expected:
                raise ValueError(f"EV data file {name}: expected sha256 {expected}, got {actual}; the file was "
                                 "modified (re-derive it with python -m cmarl_env.domains.ev_charging.derive_data)")
            contents[name] = blob
        with np.load(io.BytesIO(contents[EV_NPZ]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        for v in arrays.values():
            v.setflags(write=False)
        _CACHE[key] = EVTables(arrays)
    return _CACHE[key]
