"""Real CityLearn building data as plain arrays.

The default dataset, CityLearn's ``citylearn_challenge_2022_phase_all``, ships
inside the package as converted arrays (``cmarl_env/datasets/``, with
CityLearn's MIT licence and notice beside them): ``load_dataset()`` needs
neither the network nor CityLearn, and it checks the files' sha256 against
``EMBEDDED_SHA256`` before using them.

Every other source goes through CityLearn 3 itself (the ``[citylearn]``
extra): ``load_dataset`` builds a real ``citylearn.citylearn.CityLearnEnv``
from a CityLearn 3 schema and reads demand, PV, prices, carbon intensity and
the battery and PV parameters from its ``Building`` objects, so the numbers
are exactly the ones CityLearn simulates with. The other named datasets of
``list_datasets()`` are converted offline from the ``citylearn==2.1.2`` wheel
(see ``_citylearn_fetch``) and their extracted arrays are cached as one
compressed ``.npz``; any other name goes to CityLearn's own dataset API.

The embedded arrays were made the same way, and are re-derived (and compared)
with ``python -m cmarl_env.datasets check`` in an environment with the
``[citylearn]`` extra.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import inspect
import io
import json
import logging
import os
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from cmarl_env import _citylearn_fetch as fetch

LOGGER = logging.getLogger(__name__)

CACHE_ENV_VAR = "CMARL_CACHE_DIR"
ARRAYS_NAME = "cmarl_arrays.npz"
ARRAYS_META_NAME = "cmarl_arrays.json"
ARRAYS_FORMAT_VERSION = 1

DEFAULT_DATASET = fetch.DEFAULT_DATASET
CITYLEARN_EXTRA = 'pip install "cmarl-env[citylearn]"'

# The files of the embedded default dataset (cmarl_env/datasets/) and their sha256,
# as printed by `python -m cmarl_env.datasets derive --out cmarl_env/datasets`.
EMBEDDED_NPZ = f"{DEFAULT_DATASET}.npz"
EMBEDDED_META = f"{DEFAULT_DATASET}.json"
EMBEDDED_SHA256: dict[str, str] = {
    EMBEDDED_NPZ: "7fa0be41fe8558c620cbc0e421af14a1dc16a58bf4a4d1f9128e258cc7e1886d",
    EMBEDDED_META: "be4160b65db3abdc940d8fd55ebb52f0b1e39995c9a48b48ef6270a7120b8d3d",
    fetch.LICENSE_NAME: "cf8ca9083bab22bae2f2fa07e64827c0fbb71f0ebb73a21420455c0b11ef4ed4",
    fetch.NOTICE_NAME: "25fa33d14ac35b3108841c294dd6c9afe45a300c4eaf11b3a49d7048d763eaef",
}
EMBEDDED_FORMAT_VERSION = 1

SchemaSource = str | os.PathLike[str] | Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class BuildingData:
    """Per-building time series and device parameters of one CityLearn dataset.

    Arrays are read-only (shared between environments); B buildings, T steps.
    ``battery_loss_coefficient`` is the per-time-step standby loss CityLearn's
    Battery reports; ``power_efficiency_curve`` and ``capacity_power_curve`` are
    CityLearn's (2, K) arrays (row 0: x, row 1: y) for every building.
    ``schema`` is the CityLearn 3 schema the arrays were read with; for the
    embedded default its ``root_directory`` is None (no csv files are shipped).
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
    """Names ``load_dataset`` knows without GitHub, the embedded default first.

    Only the default is embedded; the others are converted from the
    ``citylearn==2.1.2`` wheel and need the ``[citylearn]`` extra. The 2022
    challenge sets have time-of-use prices; the 2020 and 2021 ones have none
    (their ``price`` is all zeros, as in CityLearn).
    """
    return list(fetch.DATASETS)


def citylearn_available() -> bool:
    """True when CityLearn 3 (the ``[citylearn]`` extra) can be imported."""
    return importlib.util.find_spec("citylearn") is not None


def require_citylearn(what: str) -> None:
    """Raise ``ModuleNotFoundError`` naming the ``[citylearn]`` extra unless CityLearn is installed."""
    if not citylearn_available():
        raise ModuleNotFoundError(
            f"{what} needs CityLearn 3, which is not installed. Install the [citylearn] extra "
            f"({CITYLEARN_EXTRA}); CityLearn pins gymnasium<=0.28.1 and numpy<2, so give it its own "
            f"virtual environment. The embedded default dataset ({DEFAULT_DATASET}, load_dataset()) "
            "needs neither CityLearn nor the network.",
            name="citylearn",
        )


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Cache folder: ``cache_dir``, else ``$CMARL_CACHE_DIR``, else the user cache dir.

    Only the CityLearn routes of ``load_dataset`` write there; the embedded default never does.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    try:
        import platformdirs
    except ImportError:  # platformdirs comes with the [citylearn] extra; XDG layout otherwise
        return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "cmarl_env"
    return Path(platformdirs.user_cache_dir("cmarl_env"))


def load_dataset(
    source: SchemaSource = DEFAULT_DATASET,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> BuildingData:
    """Load building data: the embedded default, or anything else through CityLearn 3.

    ``source`` is a dataset name, a path to a CityLearn 3 ``schema.json`` (or
    its folder), or a schema dict whose ``root_directory`` points at the csv
    folder. The default name loads the arrays shipped with the package
    (checksum-verified, offline, no CityLearn). Everything else needs the
    ``[citylearn]`` extra (``ModuleNotFoundError`` naming it otherwise): the
    other names of ``list_datasets()`` are converted from the
    ``citylearn==2.1.2`` wheel and cached under
    ``cache_root(cache_dir)/datasets/<name>``; any other name is fetched with
    CityLearn's own ``DataSet.get_dataset``; schema paths and dicts are read
    afresh on every call. Every building's arrays cover the schema's whole
    simulation period (episode splitting is switched off).
    """
    if isinstance(source, str) and source == DEFAULT_DATASET:
        return load_embedded()
    if isinstance(source, Mapping):
        require_citylearn("Loading a CityLearn schema dict")
        schema = copy.deepcopy(dict(source))
        if schema.get("root_directory") is None:
            raise ValueError("a schema dict needs a 'root_directory' pointing at its csv folder")
        root = Path(schema["root_directory"]).expanduser().resolve()
        schema["root_directory"] = str(root)
        return _load_from_schema(schema, name=root.name, notice=_notice_for(root))
    if isinstance(source, str) and source in fetch.DATASETS:
        require_citylearn(f"Dataset {source!r} (not the embedded default)")
        return _load_named(source, cache_root(cache_dir))
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "schema.json"
    if path.is_file():
        require_citylearn(f"Loading the CityLearn schema {path}")
        return _load_schema_path(path)
    if isinstance(source, str) and not (source.endswith(".json") or os.sep in source):
        return _load_citylearn_named(source)
    raise FileNotFoundError(f"schema file not found: {path}")


def _load_citylearn_named(name: str) -> BuildingData:
    """A dataset by CityLearn 3's own name, through ``citylearn.data.DataSet`` (which downloads from GitHub)."""
    known = ", ".join(fetch.DATASETS)
    if not citylearn_available():
        raise ModuleNotFoundError(
            f"unknown dataset {name!r}: it is not the embedded default and not one of the datasets "
            f"converted from the citylearn==2.1.2 wheel ({known}). Other CityLearn datasets load through "
            f"CityLearn's own dataset API, which needs the [citylearn] extra ({CITYLEARN_EXTRA}).",
            name="citylearn",
        )
    with _quiet_citylearn():
        from citylearn.data import DataSet

        try:
            schema_path = DataSet().get_dataset(name)
        except Exception as exc:
            raise ValueError(
                f"CityLearn could not provide dataset {name!r} ({type(exc).__name__}: {exc}). Datasets "
                f"available without GitHub: {known}."
            ) from exc
    return _load_schema_path(Path(schema_path), name=name)


# ------------------------------------------------------------ embedded default
_EMBEDDED_CACHE: dict[str, Any] = {}


def embedded_files() -> dict[str, Any]:
    """The embedded dataset's files (``importlib.resources`` traversables) by name."""
    folder = importlib.resources.files("cmarl_env") / "datasets"
    return {name: folder / name for name in EMBEDDED_SHA256}


def load_embedded() -> BuildingData:
    """The default dataset from the arrays shipped in ``cmarl_env/datasets`` (no network, no CityLearn).

    The files are checked against ``EMBEDDED_SHA256`` the first time in a
    process (``fetch.DataIntegrityError`` on a mismatch); every call returns a
    new ``BuildingData`` over the same read-only arrays with its own schema copy.
    """
    if not _EMBEDDED_CACHE:
        contents: dict[str, bytes] = {}
        for name, resource in embedded_files().items():
            try:
                blob = resource.read_bytes()
            except OSError as exc:
                raise fetch.DataIntegrityError(
                    f"the embedded dataset file {name} is missing from the installed package ({exc}); "
                    "reinstall cmarl-env"
                ) from exc
            actual = hashlib.sha256(blob).hexdigest()
            if actual != EMBEDDED_SHA256[name]:
                raise fetch.DataIntegrityError(
                    f"embedded dataset file {name}: expected sha256 {EMBEDDED_SHA256[name]}, got {actual}; "
                    "the installed package is damaged, reinstall cmarl-env"
                )
            contents[name] = blob
        meta = json.loads(contents[EMBEDDED_META])
        with np.load(io.BytesIO(contents[EMBEDDED_NPZ]), allow_pickle=False) as arrays:
            values = {name: arrays[name] for name in _ARRAY_FIELDS}
        notice = _format_notice(contents[fetch.NOTICE_NAME].decode("utf-8"), contents[fetch.LICENSE_NAME].decode("utf-8"))
        data = BuildingData(
            name=meta["name"],
            building_names=tuple(meta["building_names"]),
            seconds_per_time_step=float(meta["seconds_per_time_step"]),
            schema=meta["schema"],
            license_notice=notice,
            **values,
        )
        _EMBEDDED_CACHE["data"] = data
    data = _EMBEDDED_CACHE["data"]
    return BuildingData(**{f.name: getattr(data, f.name) for f in fields(BuildingData)} | {"schema": copy.deepcopy(data.schema)})


def arrays_sha256(data: BuildingData) -> str:
    """sha256 over every array's name, dtype, shape and bytes: identical iff the arrays are bit-identical."""
    digest = hashlib.sha256()
    for name in _ARRAY_FIELDS:
        array = np.ascontiguousarray(getattr(data, name))
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def derive_dataset(name: str = DEFAULT_DATASET, *, cache_dir: str | os.PathLike[str] | None = None) -> BuildingData:
    """Convert ``name`` afresh from the ``citylearn==2.1.2`` wheel and read it through CityLearn 3.

    This is how the embedded default was made. Nothing converted before is
    reused (the csv files are written to a temporary folder); only the wheel
    (22 MB, sha256-pinned) is kept in ``cache_root(cache_dir)/wheels`` and
    downloaded with pip when it is not there. Needs the ``[citylearn]`` extra.
    The returned schema's ``root_directory`` names the temporary folder, which
    no longer exists.
    """
    require_citylearn("Deriving a dataset from the citylearn==2.1.2 wheel")
    if name not in fetch.DATASETS:
        raise ValueError(f"unknown dataset {name!r}; the wheel has: {', '.join(fetch.DATASETS)}")
    wheel = fetch.cached_wheel(cache_root(cache_dir))
    with tempfile.TemporaryDirectory(prefix="cmarl-derive-") as tmp:
        directory = Path(tmp) / name
        fetch.build_dataset(name, wheel, directory)
        return _load_schema_path(directory / "schema.json", name=name)


def deterministic_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez_compressed`` without timestamps: the same arrays always give the same bytes (per zlib)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def write_embedded(data: BuildingData, directory: str | os.PathLike[str]) -> dict[str, str]:
    """Write ``data`` in the embedded format (npz, json, LICENSE, NOTICE) into ``directory``; return the files' sha256.

    The schema is stored without its machine-specific ``root_directory``; the
    LICENSE is the licence text in ``data.license_notice`` (CityLearn's, from the wheel).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    schema = copy.deepcopy(data.schema)
    schema["root_directory"] = None
    license_text = data.license_notice.split(_LICENSE_HEADING, 1)[1]
    deterministic_npz(out / EMBEDDED_NPZ, {name: getattr(data, name) for name in _ARRAY_FIELDS})
    meta = {
        "format_version": EMBEDDED_FORMAT_VERSION,
        "name": data.name,
        "building_names": list(data.building_names),
        "seconds_per_time_step": data.seconds_per_time_step,
        "arrays_sha256": arrays_sha256(data),
        "derived_from": {
            "wheel": f"citylearn=={fetch.CITYLEARN_WHEEL_VERSION}",
            "wheel_sha256": fetch.CITYLEARN_WHEEL_SHA256,
            "read_with": f"citylearn=={_citylearn_version()}",
            "command": "python -m cmarl_env.datasets derive --out cmarl_env/datasets",
        },
        "schema": schema,
    }
    (out / EMBEDDED_META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (out / fetch.LICENSE_NAME).write_text(license_text, encoding="utf-8")
    (out / fetch.NOTICE_NAME).write_text(fetch.CITYLEARN_CITATION, encoding="utf-8")
    return {name: fetch.sha256_file(out / name) for name in EMBEDDED_SHA256}


def compare_embedded(derived: str | os.PathLike[str]) -> list[str]:
    """Differences between a folder written by ``write_embedded`` and the shipped files (empty: identical).

    Arrays are compared bit for bit (not the npz container, whose compressed
    bytes may depend on the zlib build); metadata, LICENSE and NOTICE byte for byte.
    """
    folder = Path(derived)
    problems: list[str] = []
    shipped = embedded_files()
    with np.load(folder / EMBEDDED_NPZ, allow_pickle=False) as new, \
            np.load(io.BytesIO(shipped[EMBEDDED_NPZ].read_bytes()), allow_pickle=False) as old:
        if sorted(new.files) != sorted(old.files):
            problems.append(f"array names differ: derived {sorted(new.files)}, shipped {sorted(old.files)}")
        for name in sorted(set(new.files) & set(old.files)):
            a, b = new[name], old[name]
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                problems.append(f"array {name} differs (derived {a.dtype}{a.shape}, shipped {b.dtype}{b.shape})")
    for name in (EMBEDDED_META, fetch.LICENSE_NAME, fetch.NOTICE_NAME):
        if (folder / name).read_bytes() != shipped[name].read_bytes():
            problems.append(f"{name} differs from the shipped copy")
    return problems


_LICENSE_HEADING = "\nCityLearn license:\n\n"


def _format_notice(citation: str, license_text: str) -> str:
    return f"{citation}{_LICENSE_HEADING}{license_text}"


def _license_text(root: Path) -> str:
    license_path = root / fetch.LICENSE_NAME
    return license_path.read_text() if license_path.is_file() else fetch.CITYLEARN_MIT_LICENSE


# ------------------------------------------------------------ CityLearn routes
def _load_schema_path(path: Path, *, name: str | None = None) -> BuildingData:
    """Load a schema file; a relative ``root_directory`` is relative to the file, as in CityLearn."""
    path = path.resolve()
    schema = json.loads(path.read_text())
    root = schema.get("root_directory")
    root_path = (path.parent if root is None else path.parent / Path(root).expanduser()).resolve()
    schema["root_directory"] = str(root_path)
    return _load_from_schema(schema, name=name or path.parent.name, notice=_notice_for(root_path))


def _notice_for(root: Path) -> str:
    return _format_notice(fetch.CITYLEARN_CITATION, _license_text(root))


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

