"""Fetch CityLearn's 2022 challenge data offline and convert it to the CityLearn 3 format.

CityLearn 3 downloads its datasets from GitHub, which is not always reachable.
The same data ships inside the ``citylearn==2.1.2`` wheel on the package
index, with the old (2.x) column names. This module downloads that wheel with
pip, checks its pinned sha256, extracts one dataset, renames its columns and
schema keys to what CityLearn 3 reads, and stores the result atomically in a
cache folder guarded by a per-file sha256 manifest and a completion marker.

It is the first half of the converter that made the embedded default dataset
(``cmarl_env/datasets``; ``python -m cmarl_env.datasets derive``) and the
route for the other named datasets; both need the ``[citylearn]`` extra to
read the converted schema with CityLearn 3. Nothing here runs when the
embedded default is loaded.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

CITYLEARN_WHEEL_VERSION = "2.1.2"
CITYLEARN_WHEEL_SHA256 = "95730b1deed73b1f5a4d17eb8334be3c99efa4aef8677822378d62d8359511dd"
PIP_TIMEOUT_SECONDS = 900

# The wheel's datasets in CityLearn 2.x csv format. Its baeda_3dem and 2023
# datasets need occupant and thermal-dynamics models and are not converted.
# The 2020/2021 ones have no electricity prices (CityLearn reads them as 0).
DATASETS: tuple[str, ...] = (
    "citylearn_challenge_2022_phase_all",
    "citylearn_challenge_2022_phase_1",
    "citylearn_challenge_2022_phase_2",
    "citylearn_challenge_2022_phase_3",
    "citylearn_challenge_2020_climate_zone_1",
    "citylearn_challenge_2020_climate_zone_2",
    "citylearn_challenge_2020_climate_zone_3",
    "citylearn_challenge_2020_climate_zone_4",
    "citylearn_challenge_2021",
)
DEFAULT_DATASET = DATASETS[0]

# CityLearn 3 draws battery efficiency curves from the schema's seed when the
# schema gives none; the 2.1.2 schemas have no seed, CityLearn 3's own copies
# of the 2022 datasets use 2022.
DEFAULT_RANDOM_SEED = 2022

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MARKER_NAME = ".complete"
LICENSE_NAME = "LICENSE"
NOTICE_NAME = "NOTICE"

CITYLEARN_CITATION = """\
The building data set comes from CityLearn (https://github.com/intelligent-environments-lab/CityLearn),
MIT-licensed, as shipped in the citylearn==2.1.2 wheel and converted to the CityLearn 3 format by cmarl_env.
If you use it, please cite:

  J. R. Vazquez-Canteli, J. Kampf, G. Henze, Z. Nagy. "CityLearn v1.0: An OpenAI Gym Environment for
  Demand Response with Deep Reinforcement Learning." Proceedings of the 6th ACM International Conference on
  Systems for Energy-Efficient Buildings, Cities, and Transportation (BuildSys '19), pp. 356-357, 2019.
  doi:10.1145/3360322.3360998

  K. Nweye et al. "CityLearn v2: energy-flexible, resilient, occupant-centric, and carbon-aware management
  of grid-interactive communities." Journal of Building Performance Simulation, 2024.
"""

CITYLEARN_MIT_LICENSE = """\
MIT License

Copyright (c) 2020 Jose Ramon Vazquez-Canteli, Intelligent Environments Laboratory

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

_HORIZONS = (("6h", 1), ("12h", 2), ("24h", 3))

# CityLearn 3 column name -> accepted CityLearn 2.x column names, per file role.
_ENERGY_SIMULATION_COLUMNS: dict[str, tuple[str, ...]] = {
    "month": ("Month",),
    "hour": ("Hour",),
    "day_type": ("Day Type",),
    "daylight_savings_status": ("Daylight Savings Status",),
    "indoor_dry_bulb_temperature": ("Indoor Temperature [C]",),
    "average_unmet_cooling_setpoint_difference": ("Average Unmet Cooling Setpoint Difference [C]",),
    "indoor_relative_humidity": ("Indoor Relative Humidity [%]",),
    "non_shiftable_load": ("Equipment Electric Power [kWh]",),
    "dhw_demand": ("DHW Heating [kWh]",),
    "cooling_demand": ("Cooling Load [kWh]",),
    "heating_demand": ("Heating Load [kWh]",),
    "solar_generation": ("Solar Generation [W/kW]",),
}
_WEATHER_COLUMNS: dict[str, tuple[str, ...]] = {
    "outdoor_dry_bulb_temperature": ("Outdoor Drybulb Temperature [C]",),
    "outdoor_relative_humidity": ("Relative Humidity [%]", "Outdoor Relative Humidity [%]"),
    "diffuse_solar_irradiance": ("Diffuse Solar Radiation [W/m2]",),
    "direct_solar_irradiance": ("Direct Solar Radiation [W/m2]",),
    **{
        f"outdoor_dry_bulb_temperature_predicted_{i}": (f"{h} Prediction Outdoor Drybulb Temperature [C]",)
        for h, i in _HORIZONS
    },
    **{
        f"outdoor_relative_humidity_predicted_{i}": (
            f"{h} Prediction Relative Humidity [%]",
            f"{h} Prediction Outdoor Relative Humidity [%]",
        )
        for h, i in _HORIZONS
    },
    **{
        f"diffuse_solar_irradiance_predicted_{i}": (f"{h} Prediction Diffuse Solar Radiation [W/m2]",)
        for h, i in _HORIZONS
    },
    **{
        f"direct_solar_irradiance_predicted_{i}": (f"{h} Prediction Direct Solar Radiation [W/m2]",)
        for h, i in _HORIZONS
    },
}
_PRICING_COLUMNS: dict[str, tuple[str, ...]] = {
    "electricity_pricing": ("Electricity Pricing [$/kWh]",),
    **{
        f"electricity_pricing_predicted_{i}": (f"{h} Prediction Electricity Pricing [$/kWh]",)
        for h, i in _HORIZONS
    },
}
_CARBON_INTENSITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "carbon_intensity": ("kg_CO2/kWh",),
}

# Observations CityLearn 3 knows that the 2.x schemas lack; added inactive.
_NEW_OBSERVATIONS: dict[str, dict[str, bool]] = {
    "hvac_mode": {"active": False, "shared_in_central_agent": False},
    "comfort_band": {"active": False, "shared_in_central_agent": False},
}


class DataIntegrityError(RuntimeError):
    """A downloaded or cached file does not have the expected content hash."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large wheels stay cheap."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise DataIntegrityError naming both hashes when ``path`` does not match."""
    actual = sha256_file(path)
    if actual != expected:
        raise DataIntegrityError(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}"
        )


def _hint() -> str:
    return (
        "Hint: without access to the package index, set CMARL_CACHE_DIR to a folder that already "
        "holds a converted dataset (its datasets/<name>/ subfolder, e.g. copied from another machine's "
        f"cmarl_env cache), or pass cache_dir= to load_dataset; or put {_wheel_name()} into that "
        "folder's wheels/ subfolder."
    )


def download_wheel(dest_dir: Path) -> Path:
    """Download the pinned citylearn wheel into ``dest_dir`` with pip and verify its sha256."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
        f"citylearn=={CITYLEARN_WHEEL_VERSION}", "-d", str(dest_dir),
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"pip download of citylearn=={CITYLEARN_WHEEL_VERSION} timed out after "
            f"{PIP_TIMEOUT_SECONDS} s. {_hint()}"
        ) from exc
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise RuntimeError(
            f"pip download of citylearn=={CITYLEARN_WHEEL_VERSION} failed (exit {result.returncode}):\n"
            f"{tail}\n{_hint()}"
        )
    wheels = [p for p in dest_dir.iterdir() if p.name.lower() == _wheel_name().lower()]
    if not wheels:
        raise RuntimeError(
            f"pip download reported success but no {_wheel_name()} is in {dest_dir}. {_hint()}"
        )
    verify_sha256(wheels[0], CITYLEARN_WHEEL_SHA256)
    return wheels[0]


def _wheel_name() -> str:
    return f"CityLearn-{CITYLEARN_WHEEL_VERSION}-py3-none-any.whl"


def cached_wheel(root: Path) -> Path:
    """The verified wheel under ``root/wheels``, downloaded once and reused for every dataset."""
    wheel_dir = root / "wheels"
    target = wheel_dir / _wheel_name()
    if target.is_file():
        try:
            verify_sha256(target, CITYLEARN_WHEEL_SHA256)
            return target
        except DataIntegrityError as exc:
            LOGGER.warning("Cached wheel is corrupt, downloading it again: %s", exc)
            target.unlink()
    wheel_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheel_dir, prefix=".download-") as tmp:
        downloaded = download_wheel(Path(tmp))
        os.replace(downloaded, target)
    return target


def convert_csv(data: bytes, columns: Mapping[str, tuple[str, ...]], filename: str) -> bytes:
    """Rename a CityLearn 2.x csv header to CityLearn 3 names; data rows keep their exact text (LF endings)."""
    header_end = data.find(b"\n")
    if header_end < 0:
        raise ValueError(f"{filename}: no header line")
    header = next(csv.reader([data[:header_end].decode("utf-8-sig").rstrip("\r")]))
    renames: dict[str, str] = {}
    for new, olds in columns.items():
        found = [old for old in olds if old in header]
        if not found:
            raise ValueError(
                f"{filename}: missing column {olds[0]!r} (needed for CityLearn 3 column {new!r}); "
                f"columns present: {header}"
            )
        renames[found[0]] = new
    unknown = [column for column in header if column not in renames]
    if unknown:
        raise ValueError(f"{filename}: columns {unknown} have no CityLearn 3 equivalent in this converter")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([renames[column] for column in header])
    return buffer.getvalue().encode("utf-8") + data[header_end:].replace(b"\r\n", b"\n")


def _rename_observation(name: str) -> str:
    for horizon, index in _HORIZONS:
        suffix = f"_predicted_{horizon}"
        if name.endswith(suffix):
            return name[: -len(suffix)] + f"_predicted_{index}"
    return name


def convert_schema(old: Mapping[str, Any]) -> dict[str, Any]:
    """CityLearn 3 schema from a CityLearn 2.x one.

    Adds a fixed seed, renames the forecast observations (``_predicted_6h`` ->
    ``_predicted_1``), shares a community-wide price with the central agent as
    CityLearn 3's own copies do, and runs one episode over the whole period.
    """
    schema: dict[str, Any] = {"random_seed": old.get("random_seed", DEFAULT_RANDOM_SEED)}
    for key, value in old.items():
        if key == "random_seed":
            continue
        if key == "observations":
            value = {_rename_observation(name): copy.deepcopy(obs) for name, obs in value.items()}
            for name, obs in _NEW_OBSERVATIONS.items():
                value.setdefault(name, dict(obs))
            if len({b.get("pricing") for b in old["buildings"].values()}) == 1:
                for name, obs in value.items():
                    if name.startswith("electricity_pricing"):
                        obs["shared_in_central_agent"] = True
        schema[key] = copy.deepcopy(value)
    schema["root_directory"] = None
    schema["episode_time_steps"] = None
    schema["rolling_episode_split"] = False
    schema["random_episode_split"] = False
    return schema


def _file_roles(schema: Mapping[str, Any]) -> dict[str, Mapping[str, tuple[str, ...]]]:
    roles: dict[str, Mapping[str, tuple[str, ...]]] = {}
    for building in schema["buildings"].values():
        for key, columns in (
            ("energy_simulation", _ENERGY_SIMULATION_COLUMNS),
            ("weather", _WEATHER_COLUMNS),
            ("pricing", _PRICING_COLUMNS),
            ("carbon_intensity", _CARBON_INTENSITY_COLUMNS),
        ):
            filename = building.get(key)
            if filename is None:
                continue
            if roles.get(filename, columns) is not columns:
                raise ValueError(f"{filename} is used for two different roles in the schema")
            roles[filename] = columns
    return roles


def _write_manifest(directory: Path) -> None:
    files = {
        path.name: sha256_file(path)
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name not in (MANIFEST_NAME, MARKER_NAME)
    }
    manifest = {"format_version": FORMAT_VERSION, "wheel_sha256": CITYLEARN_WHEEL_SHA256, "files": files}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (directory / MARKER_NAME).write_text(sha256_file(directory / MANIFEST_NAME) + "\n")


def build_dataset(name: str, wheel: Path, dest: Path) -> None:
    """Extract dataset ``name`` from the 2.1.2 wheel into ``dest`` in CityLearn 3 format."""
    prefix = f"citylearn/data/{name}/"
    with zipfile.ZipFile(wheel) as archive:
        members = {m[len(prefix):]: m for m in archive.namelist() if m.startswith(prefix) and m != prefix}
        if "schema.json" not in members:
            raise ValueError(f"the citylearn {CITYLEARN_WHEEL_VERSION} wheel has no dataset {name!r}")
        old_schema = json.loads(archive.read(members["schema.json"]))
        roles = _file_roles(old_schema)
        dest.mkdir(parents=True, exist_ok=True)
        for filename, columns in roles.items():
            if filename not in members:
                raise ValueError(f"{name}: schema refers to {filename}, which the wheel does not contain")
            converted = convert_csv(archive.read(members[filename]), columns, f"{name}/{filename}")
            (dest / filename).write_bytes(converted)
        license_member = f"CityLearn-{CITYLEARN_WHEEL_VERSION}.dist-info/LICENSE"
        license_text = archive.read(license_member).decode("utf-8")
    (dest / "schema.json").write_text(json.dumps(convert_schema(old_schema), indent=2) + "\n")
    (dest / LICENSE_NAME).write_text(license_text)
    (dest / NOTICE_NAME).write_text(CITYLEARN_CITATION)
    _write_manifest(dest)


def dataset_problem(directory: Path) -> str | None:
    """Why the cached dataset in ``directory`` cannot be trusted, or None when it is complete and intact."""
    marker = directory / MARKER_NAME
    manifest_path = directory / MANIFEST_NAME
    if not directory.is_dir():
        return "missing"
    if not marker.is_file():
        return f"completion marker {marker} is missing (partial write?)"
    if not manifest_path.is_file():
        return f"manifest {manifest_path} is missing"
    if marker.read_text().strip() != sha256_file(manifest_path):
        return f"manifest {manifest_path} does not match the completion marker"
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return f"manifest {manifest_path} is unreadable"
    if manifest.get("format_version") != FORMAT_VERSION:
        return f"cache format {manifest.get('format_version')} is not the current {FORMAT_VERSION}"
    for filename, expected in files.items():
        path = directory / filename
        if not path.is_file():
            return f"{path} is missing"
        actual = sha256_file(path)
        if actual != expected:
            return f"{path} is corrupt: expected sha256 {expected}, got {actual}"
    return None


def ensure_dataset(name: str, root: Path) -> Path:
    """Path of a verified CityLearn 3 copy of ``name`` under ``root/datasets``, fetching it if needed."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    datasets_dir = root / "datasets"
    target = datasets_dir / name
    problem = dataset_problem(target)
    if problem is None:
        return target
    if target.exists():
        LOGGER.warning("Cached dataset %s is not usable (%s); fetching it again.", target, problem)
    else:
        LOGGER.info("Dataset %s is not cached; fetching the citylearn %s wheel.", name, CITYLEARN_WHEEL_VERSION)
    wheel = cached_wheel(root)
    datasets_dir.mkdir(parents=True, exist_ok=True)
    staging = datasets_dir / f".{name}.tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        build_dataset(name, wheel, staging)
        _install(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    problem = dataset_problem(target)
    if problem is not None:
        raise DataIntegrityError(f"dataset {target} failed verification right after conversion: {problem}")
    return target


def _install(staging: Path, target: Path) -> None:
    """Move a finished dataset into place; a concurrent writer's intact copy wins."""
    if target.exists():
        trash = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        if dataset_problem(target) is not None:
            raise
