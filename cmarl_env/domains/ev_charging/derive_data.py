"""Re-derive the EV tables (``cmarl_env/datasets/ev/``) from the ``ev2gym==2.0.0`` wheel.

The wheel is read as a zip archive; ev2gym is never installed or imported (it
needs gurobipy). Get the wheel with::

    pip download --no-deps ev2gym==2.0.0 -d /tmp/ev2gym

and then::

    python -m cmarl_env.domains.ev_charging.derive_data --wheel /tmp/ev2gym/ev2gym-2.0.0-py3-none-any.whl --check
    python -m cmarl_env.domains.ev_charging.derive_data --wheel ... --out cmarl_env/datasets/ev   # rewrite

``--check`` derives the arrays afresh and requires them to equal the shipped
ones (array by array, exactly); ``--out`` writes the npz and the LICENSE and
prints the sha256 to put in ``cmarl_env.domains.ev_charging.data.EV_DATA_SHA256``.

What is derived from which file of the wheel (also in ``NOTICE``):

* ``ev2gym/data/distribution-of-arrival.csv`` (weekdays) and
  ``distribution-of-arrival-weekend.csv``: the share [%] of arrivals in each
  15-minute slot of the day, per site category (private, public, workplace;
  the weekend file has no workplace column: stored as zeros, no workplace
  arrivals on weekends, as ev2gym does). Copied as they are.
* ``distribution-of-connection-time.csv`` and ``distribution-of-energy-demand.csv``:
  for each "percentage of charging events" p = 0..100, the connection time [h]
  and the energy [kWh] that p % of the sessions exceed. Copied as they are.
* ``ev_specs.json``: for the 13 models, the name, the number of registrations
  (sampling weight), battery capacity [kWh] and maximum AC charging power [kW].
* ``Netherlands_day-ahead-2015-2024.csv``: the hourly Dutch day-ahead price,
  UTC hours 2015-01-01 00:00 to 2024-12-31 23:00 (87,672 hours). The file has
  two date formats, one empty row, January-September 2023 twice (both copies
  compared: the first is kept, as ev2gym's own lookup does) and two missing
  hours (2023-12-30 23:00 and 2024-12-30 23:00 UTC), which are filled with the
  mean of the neighbouring hours and listed in ``price_filled_hours``. Stored
  exactly as integer centi-EUR/MWh.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from cmarl_env.data import deterministic_npz

WHEEL_NAME = "ev2gym-2.0.0-py3-none-any.whl"
WHEEL_SHA256 = "b1f22280d9ae9da93bb26031730412d952845014cd2718f92bc030b78cddcb58"
CATEGORIES = ("private", "public", "workplace")
PRICE_FIRST = dt.datetime(2015, 1, 1, 0, 0)
PRICE_END = dt.datetime(2025, 1, 1, 0, 0)  # exclusive
NPZ_NAME = "elaadnl_ev2gym.npz"
SOURCE_FILES = {
    "arrival_weekday": "ev2gym/data/distribution-of-arrival.csv",
    "arrival_weekend": "ev2gym/data/distribution-of-arrival-weekend.csv",
    "connection_time": "ev2gym/data/distribution-of-connection-time.csv",
    "energy_demand": "ev2gym/data/distribution-of-energy-demand.csv",
    "ev_specs": "ev2gym/data/ev_specs.json",
    "prices": "ev2gym/data/Netherlands_day-ahead-2015-2024.csv",
    "license": "ev2gym-2.0.0.dist-info/licenses/LICENSE",
}


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))


def _table(text: str, first_header: str) -> tuple[list[str], np.ndarray, list[str]]:
    rows = _csv(text)
    header = rows[0]
    if header[0] != first_header:
        raise ValueError(f"unexpected header {header!r}")
    keys = [r[0] for r in rows[1:]]
    values = np.array([[float(v) if v != "" else np.nan for v in r[1:]] for r in rows[1:]], dtype=np.float64)
    return header[1:], values, keys


def _per_category(columns: list[str], values: np.ndarray) -> np.ndarray:
    out = np.zeros((values.shape[0], len(CATEGORIES)))
    for j, name in enumerate(CATEGORIES):
        if name in columns:
            out[:, j] = values[:, columns.index(name)]
    return out


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%d/%m/%Y %H:%M") if "/" in text else dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


def _prices(text: str) -> tuple[np.ndarray, np.ndarray, dict]:
    rows = _csv(text)
    if rows[0] != ["Country", "Datetime (UTC)", "Datetime (Local)", "Price (EUR/MWhe)"]:
        raise ValueError(f"unexpected price header {rows[0]!r}")
    n = int((PRICE_END - PRICE_FIRST).total_seconds() // 3600)
    centi = np.full(n, np.iinfo(np.int32).min, dtype=np.int64)
    empty = duplicates = disagreeing = 0
    for row in rows[1:]:
        if not row[1]:
            empty += 1
            continue
        t = _parse_time(row[1])
        if not PRICE_FIRST <= t < PRICE_END:
            continue
        k = int((t - PRICE_FIRST).total_seconds() // 3600)
        value = round(float(row[3]) * 100)
        if abs(value - float(row[3]) * 100) > 1e-6:
            raise ValueError(f"price {row[3]} has more than two decimals")
        if centi[k] != np.iinfo(np.int32).min:
            duplicates += 1
            disagreeing += int(centi[k] != value)
            continue  # the first occurrence is kept (ev2gym's lookup takes .iloc[0])
        centi[k] = value
    missing = np.flatnonzero(centi == np.iinfo(np.int32).min)
    for k in missing:
        if k == 0 or k == n - 1 or (k + 1) in missing or (k - 1) in missing:
            raise ValueError(f"cannot fill price hour {k}: neighbours missing")
        centi[k] = round((centi[k - 1] + centi[k + 1]) / 2)
    facts = {"empty_rows": empty, "duplicate_hours": duplicates, "duplicates_disagreeing": disagreeing,
             "filled_hours_utc": [str(PRICE_FIRST + dt.timedelta(hours=int(k))) for k in missing]}
    return centi.astype(np.int32), missing.astype(np.int64), facts


def derive(wheel: str | Path) -> tuple[dict[str, np.ndarray], dict, str]:
    """The arrays of the shipped npz, the facts of the derivation and the LICENSE text, from the wheel."""
    blob = Path(wheel).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != WHEEL_SHA256:
        raise ValueError(f"{wheel}: sha256 {digest} is not that of {WHEEL_NAME} ({WHEEL_SHA256})")
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        text = {k: archive.read(v).decode("utf-8") for k, v in SOURCE_FILES.items()}
    arrays: dict[str, np.ndarray] = {"categories": np.array(CATEGORIES)}
    for key in ("arrival_weekday", "arrival_weekend"):
        cols, values, slots = _table(text[key], "Arrival time")
        expected = [f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 15, 30, 45)]
        if slots != expected:
            raise ValueError(f"{SOURCE_FILES[key]}: slots are not the 96 quarter hours")
        arrays[key + "_pct"] = _per_category(cols, values)
    for key, name in (("connection_time", "connection_time_h"), ("energy_demand", "energy_demand_kwh")):
        cols, values, pct = _table(text[key], "Percentage of charging events")
        if [int(p) for p in pct] != list(range(101)):
            raise ValueError(f"{SOURCE_FILES[key]}: rows are not the percentages 0..100")
        arrays[name] = _per_category(cols, values)
    specs = json.loads(text["ev_specs"])
    arrays["ev_model"] = np.array(list(specs))
    arrays["ev_registrations"] = np.array([s["number_of_registrations"] for s in specs.values()], dtype=np.int64)
    arrays["ev_battery_kwh"] = np.array([s["battery_capacity"] for s in specs.values()], dtype=np.float64)
    arrays["ev_max_ac_kw"] = np.array([s["max_ac_charge_power"] for s in specs.values()], dtype=np.float64)
    centi, filled, facts = _prices(text["prices"])
    arrays["price_centi_eur_per_mwh"] = centi
    arrays["price_filled_hours"] = filled
    arrays["price_first_hour_utc"] = np.array([PRICE_FIRST.isoformat()])
    return arrays, facts | {"wheel_sha256": digest}, text["license"]


write_npz = deterministic_npz  # the demand-response embedding's writer: same bytes for the same arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", required=True, help=f"path of {WHEEL_NAME} (pip download --no-deps ev2gym==2.0.0)")
    parser.add_argument("--out", help="folder to write the npz and LICENSE into")
    parser.add_argument("--check", action="store_true", help="require the derived arrays to equal the shipped ones")
    args = parser.parse_args(argv)
    arrays, facts, license_text = derive(args.wheel)
    print(json.dumps(facts, indent=1))
    status = 0
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_npz(out / NPZ_NAME, arrays)
        (out / "LICENSE").write_text(license_text)
        for name in (NPZ_NAME, "LICENSE"):
            print(f"{name}: sha256 {hashlib.sha256((out / name).read_bytes()).hexdigest()}")
    if args.check:
        from cmarl_env.domains.ev_charging.data import load_tables

        shipped = load_tables().arrays
        bad = sorted(k for k in set(arrays) | set(shipped)
                     if k not in arrays or k not in shipped or not np.array_equal(arrays[k], shipped[k]))
        if bad:
            print(f"check FAILED: arrays differ from the shipped ones: {bad}")
            status = 1
        else:
            print(f"check ok: all {len(arrays)} arrays equal the shipped {NPZ_NAME}")
    return status


if __name__ == "__main__":
    sys.exit(main())
