"""Real CityLearn building data as plain arrays.

``load_dataset`` builds a real ``citylearn.citylearn.CityLearnEnv`` from a
CityLearn 3 schema and reads demand, PV, prices, carbon intensity and the
battery and PV parameters from its ``Building`` objects, so the numbers are
exactly the ones CityLearn simulates with. Named datasets are fetched offline
from the ``citylearn==2.1.2`` wheel (see ``_citylearn_fetch``) and their
extracted arrays are cached as one compressed ``.npz``, so later loads need
neither CityLearn's 2-3 s import nor the environment construction.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import importlib.metadata
import inspect
import io
import json
import logging
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs

from cmarl_env import _citylearn_fetch as fetch

LOGGER = logging.getLogger(__name__)

CACHE_ENV_VAR = "CMARL_CACHE_DIR"
ARRAYS_NAME = "cmarl_arrays.npz"
ARRAYS_META_NAME = "cmarl_arrays.json"
ARRAYS_FORMAT_VERSION = 1

SchemaSource = str | os.PathLike[str] | Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class BuildingData:
    """Per-building time series and device parameters of one CityLearn dataset.

    Arrays are read-only (shared between environments); B buildings, T steps.
    ``battery_loss_coefficient`` is the per-time-step standby loss CityLearn's
    Battery reports; ``power_efficiency_curve`` and ``capacity_power_curve`` are
    CityLearn's (2, K) arrays (row 0: x, row 1: y) for every building.
    """

    name: str
    building_names: tuple[str, ...]
    demand_kwh: np.ndarray
    solar_kwh: np.ndarray
    price: np.ndarray
    carbon_intensity: np.ndarray
    hour: np.ndarray
    pv_nominal_power: np.ndarray
    battery_capacity: np.ndarray
    battery_nominal_power: np.ndarray
    battery_efficiency: np.ndarray
    battery_capacity_loss_coefficient: np.ndarray
    battery_loss_coefficient: np.ndarray
    battery_depth_of_discharge: np.ndarray
    battery_initial_soc: np.ndarray
    power_efficiency_curve: np.ndarray
    capacity_power_curve: np.ndarray
    seconds_per_time_step: float
    schema: dict[str, Any]
    license_notice: str

    def __post_init__(self) -> None:
        b, t = self.demand_kwh.shape
        expected = {
            "solar_kwh": (b, t), "price": (b, t), "carbon_intensity": (b, t), "hour": (t,),
            **{name: (b,) for name in _PARAMETER_FIELDS},
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {shape}")
        for name in ("power_efficiency_curve", "capacity_power_curve"):
            curve = getattr(self, name)
            if curve.ndim != 3 or curve.shape[:2] != (b, 2):
                raise ValueError(f"{name} has shape {curve.shape}, expected ({b}, 2, K)")
        if len(self.building_names) != b:
            raise ValueError(f"{len(self.building_names)} building names for {b} buildings")
        for name in _ARRAY_FIELDS:
            view = np.asarray(getattr(self, name)).view()
            view.setflags(write=False)
            object.__setattr__(self, name, view)

    @property
    def n_buildings(self) -> int:
        return int(self.demand_kwh.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.demand_kwh.shape[1])


_PARAMETER_FIELDS = (
    "pv_nominal_power", "battery_capacity", "battery_nominal_power", "battery_efficiency",
    "battery_capacity_loss_coefficient", "battery_loss_coefficient", "battery_depth_of_discharge",
    "battery_initial_soc",
)
_ARRAY_FIELDS = tuple(
    f.name for f in fields(BuildingData)
    if f.name not in ("name", "building_names", "seconds_per_time_step", "schema", "license_notice")
)


def list_datasets() -> list[str]:
    """Names ``load_dataset`` can fetch without GitHub, the default first.

    The 2022 challenge sets have time-of-use prices; the 2020 and 2021 ones
    have none (their ``price`` is all zeros, as in CityLearn).
    """
    return list(fetch.DATASETS)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Cache folder: ``cache_dir``, else ``$CMARL_CACHE_DIR``, else the user cache dir."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_cache_dir("cmarl_env"))


def load_dataset(
    source: SchemaSource = fetch.DEFAULT_DATASET,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> BuildingData:
    """Load building data through CityLearn 3.

    ``source`` is a dataset name from ``list_datasets()``, a path to a
    CityLearn 3 ``schema.json`` (or its folder), or a schema dict whose
    ``root_directory`` points at the csv folder. Every building's arrays cover
    the schema's whole simulation period (episode splitting is switched off).
    Named datasets are cached under ``cache_root(cache_dir)/datasets/<name>``;
    schema paths and dicts are read afresh on every call.
    """
    if isinstance(source, Mapping):
        schema = copy.deepcopy(dict(source))
        if schema.get("root_directory") is None:
            raise ValueError("a schema dict needs a 'root_directory' pointing at its csv folder")
        root = Path(schema["root_directory"]).expanduser().resolve()
        schema["root_directory"] = str(root)
        return _load_from_schema(schema, name=root.name, notice=_notice_for(root))
    if isinstance(source, str) and source in fetch.DATASETS:
        return _load_named(source, cache_root(cache_dir))
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "schema.json"
    if path.is_file():
        return _load_schema_path(path)
    if isinstance(source, str) and not (source.endswith(".json") or os.sep in source):
        raise ValueError(f"unknown dataset {source!r}; known datasets: {', '.join(fetch.DATASETS)}")
    raise FileNotFoundError(f"schema file not found: {path}")


def _load_schema_path(path: Path, *, name: str | None = None) -> BuildingData:
    """Load a schema file; a relative ``root_directory`` is relative to the file, as in CityLearn."""
    path = path.resolve()
    schema = json.loads(path.read_text())
    root = schema.get("root_directory")
    root_path = (path.parent if root is None else path.parent / Path(root).expanduser()).resolve()
    schema["root_directory"] = str(root_path)
    return _load_from_schema(schema, name=name or path.parent.name, notice=_notice_for(root_path))


def _notice_for(root: Path) -> str:
    license_path = root / fetch.LICENSE_NAME
    license_text = license_path.read_text() if license_path.is_file() else fetch.CITYLEARN_MIT_LICENSE
    return f"{fetch.CITYLEARN_CITATION}\nCityLearn license:\n\n{license_text}"


def _load_named(name: str, root: Path) -> BuildingData:
    directory = fetch.ensure_dataset(name, root)
    schema_path = directory / "schema.json"
    key = {
        "format_version": ARRAYS_FORMAT_VERSION,
        "dataset_manifest_sha256": fetch.sha256_file(directory / fetch.MANIFEST_NAME),
        "citylearn_version": _citylearn_version(),
    }
    cached = _read_arrays(directory, key)
    if cached is not None:
        return cached
    data = _load_schema_path(schema_path, name=name)
    try:
        _write_arrays(directory, data, key)
    except OSError as exc:
        LOGGER.warning("Could not cache arrays in %s (%s); the next load will rebuild them.", directory, exc)
    return data


def _citylearn_version() -> str:
    return importlib.metadata.version("citylearn")


def _read_arrays(directory: Path, key: Mapping[str, Any]) -> BuildingData | None:
    """The cached arrays, or None (with a warning if a cache existed but was stale or corrupt)."""
    npz_path = directory / ARRAYS_NAME
    meta_path = directory / ARRAYS_META_NAME
    if not meta_path.is_file() and not npz_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != dict(key):
            LOGGER.info("Array cache in %s is from another version; rebuilding it.", directory)
            return None
        actual = fetch.sha256_file(npz_path)
        if actual != meta["npz_sha256"]:
            raise fetch.DataIntegrityError(
                f"{npz_path}: expected sha256 {meta['npz_sha256']}, got {actual}"
            )
        with np.load(npz_path, allow_pickle=False) as arrays:
            values: dict[str, Any] = {name: arrays[name] for name in _ARRAY_FIELDS}
        return BuildingData(
            name=meta["name"],
            building_names=tuple(meta["building_names"]),
            seconds_per_time_step=float(meta["seconds_per_time_step"]),
            schema=meta["schema"],
            license_notice=meta["license_notice"],
            **values,
        )
    except (OSError, ValueError, KeyError, TypeError, fetch.DataIntegrityError) as exc:
        LOGGER.warning("Array cache in %s is unusable (%s); rebuilding it from CityLearn.", directory, exc)
        return None


def _write_arrays(directory: Path, data: BuildingData, key: Mapping[str, Any]) -> None:
    """Write the npz and then its metadata (with the npz hash), each atomically."""
    staging = directory / f".arrays-{uuid.uuid4().hex}"
    with open(staging, "wb") as handle:
        np.savez_compressed(handle, **{name: getattr(data, name) for name in _ARRAY_FIELDS})
    os.replace(staging, directory / ARRAYS_NAME)
    meta = {
        "key": dict(key),
        "npz_sha256": fetch.sha256_file(directory / ARRAYS_NAME),
        "name": data.name,
        "building_names": list(data.building_names),
        "seconds_per_time_step": data.seconds_per_time_step,
        "schema": data.schema,
        "license_notice": data.license_notice,
    }
    staging.write_text(json.dumps(meta, indent=1))
    os.replace(staging, directory / ARRAYS_META_NAME)


@contextlib.contextmanager
def _quiet_citylearn() -> Iterator[None]:
    """Silence CityLearn's prints, warnings and log records, and undo its changes to the root logger.

    Importing ``citylearn.data`` calls ``logging.basicConfig(level=INFO)`` and every
    ``CityLearnEnv`` sets the root logger to INFO; neither should leak into the caller.
    """
    root_logger = logging.getLogger()
    level, handlers = root_logger.level, list(root_logger.handlers)
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
        root_logger.setLevel(level)
        for handler in list(root_logger.handlers):
            if handler not in handlers:
                root_logger.removeHandler(handler)


def _required_columns() -> dict[str, tuple[str, ...]]:
    """Columns CityLearn 3 needs per schema file role, read from its constructors' signatures."""
    from citylearn.data import CarbonIntensity, EnergySimulation, Pricing, Weather

    def required(cls: type) -> tuple[str, ...]:
        return tuple(
            p.name for p in inspect.signature(cls).parameters.values()
            if p.default is inspect.Parameter.empty and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        )

    return {
        "energy_simulation": required(EnergySimulation),
        "weather": required(Weather),
        "pricing": required(Pricing),
        "carbon_intensity": required(CarbonIntensity),
    }


def _check_columns(schema: Mapping[str, Any]) -> None:
    """Name the file and column up front instead of CityLearn's bare TypeError deep in loading."""
    required = _required_columns()
    root = Path(schema["root_directory"])
    checked: set[tuple[str, str]] = set()
    for building_name, building in schema.get("buildings", {}).items():
        if not building.get("include", True):
            continue
        for role, columns in required.items():
            filename = building.get(role)
            if filename is None or (filename, role) in checked:
                continue
            checked.add((filename, role))
            path = root / filename
            if not path.is_file():
                raise FileNotFoundError(f"{building_name}: {role} file {path} does not exist")
            if path.suffix.lower() != ".csv":
                continue
            with open(path, newline="", encoding="utf-8-sig") as handle:
                header = next(csv.reader(handle), [])
            missing = [column for column in columns if column not in header]
            if missing:
                raise ValueError(f"{path}: missing column {missing[0]!r} (all missing: {missing})")


def _build_env(schema: dict[str, Any]) -> Any:
    """Construct the real CityLearnEnv quietly, offline, over the schema's whole simulation period."""
    with _quiet_citylearn():
        from citylearn.citylearn import CityLearnEnv

        return CityLearnEnv(schema, offline=True)


def _load_from_schema(schema: dict[str, Any], *, name: str, notice: str) -> BuildingData:
    schema = dict(schema)
    schema["episode_time_steps"] = None
    schema["rolling_episode_split"] = False
    schema["random_episode_split"] = False
    with _quiet_citylearn():
        _check_columns(schema)
    env = _build_env(schema)
    return _extract(env, schema, name=name, notice=notice)


def _extract(env: Any, schema: dict[str, Any], *, name: str, notice: str) -> BuildingData:
    """Read arrays and device parameters off the env's Building objects."""
    buildings = list(env.buildings)
    if not buildings:
        raise ValueError(f"schema for {name!r} includes no buildings")
    start = int(schema.get("simulation_start_time_step") or 0)
    end = schema.get("simulation_end_time_step")
    n_steps = int(env.time_steps) if end is None else int(end) - start + 1

    def series(building: Any, label: str, values: Any) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        if array.shape != (n_steps,):
            raise ValueError(
                f"{building.name}: {label} has {array.shape[0]} steps, expected {n_steps} "
                f"(simulation_start_time_step={start}, simulation_end_time_step={end})"
            )
        return array

    hour = series(buildings[0], "hour", buildings[0].energy_simulation.hour).astype(np.int64)
    for b in buildings[1:]:
        if not np.array_equal(series(b, "hour", b.energy_simulation.hour), hour):
            raise ValueError(f"{b.name}: hour column differs from {buildings[0].name}'s")
    storages = [b.electrical_storage for b in buildings]
    return BuildingData(
        name=name,
        building_names=tuple(str(b.name) for b in buildings),
        demand_kwh=np.stack([
            series(b, "non_shiftable_load", b.energy_simulation.non_shiftable_load) for b in buildings
        ]),
        solar_kwh=np.stack([
            series(b, "solar generation", b.pv.get_generation(b.energy_simulation.solar_generation))
            for b in buildings
        ]),
        price=np.stack([series(b, "electricity_pricing", b.pricing.electricity_pricing) for b in buildings]),
        carbon_intensity=np.stack([
            series(b, "carbon_intensity", b.carbon_intensity.carbon_intensity) for b in buildings
        ]),
        hour=hour,
        pv_nominal_power=np.array([b.pv.nominal_power for b in buildings], dtype=np.float64),
        battery_capacity=_attribute(storages, "capacity"),
        battery_nominal_power=_attribute(storages, "nominal_power"),
        battery_efficiency=_attribute(storages, "efficiency"),
        battery_capacity_loss_coefficient=_attribute(storages, "capacity_loss_coefficient"),
        battery_loss_coefficient=_attribute(storages, "loss_coefficient"),
        battery_depth_of_discharge=_attribute(storages, "depth_of_discharge"),
        battery_initial_soc=_attribute(storages, "initial_soc"),
        power_efficiency_curve=_stack_curves(storages, "power_efficiency_curve", buildings),
        capacity_power_curve=_stack_curves(storages, "capacity_power_curve", buildings),
        seconds_per_time_step=float(env.seconds_per_time_step),
        schema=_jsonable(schema),
        license_notice=notice,
    )


def _attribute(storages: list[Any], attribute: str) -> np.ndarray:
    return np.array([getattr(storage, attribute) for storage in storages], dtype=np.float64)


def _stack_curves(storages: list[Any], attribute: str, buildings: list[Any]) -> np.ndarray:
    curves = [np.asarray(getattr(storage, attribute), dtype=np.float64) for storage in storages]
    if len({curve.shape for curve in curves}) != 1:
        detail = ", ".join(f"{b.name}: {c.shape}" for b, c in zip(buildings, curves, strict=True))
        raise ValueError(f"{attribute} must have the same number of points in every building ({detail})")
    return np.stack(curves)


def _jsonable(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema as plain JSON types (numpy scalars and paths become numbers and strings)."""

    def default(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise TypeError(f"schema value {value!r} is not JSON-serialisable")

    result: dict[str, Any] = json.loads(json.dumps(schema, default=default))
    return result

