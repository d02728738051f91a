"""Tests for cmarl_env.data.

Base tests (every job): the embedded default dataset loads offline, without
CityLearn, with its checksum verified; every other source names the
``[citylearn]`` extra when CityLearn is missing.

CityLearn tests (the CityLearn job of ``make test``): the shipped arrays are
re-derived from the ``citylearn==2.1.2`` wheel and must be identical; the
named-dataset cache, schema sources and CityLearn's own dataset API. The
wheel is fetched once per machine into the real user cache (``cache_root()``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cmarl_env import _citylearn_fetch as fetch
from cmarl_env import data as data_module
from cmarl_env.data import BuildingData, cache_root, citylearn_available, list_datasets, load_dataset

DEFAULT = "citylearn_challenge_2022_phase_all"
EXTRA = 'pip install "cmarl-env[citylearn]"'
needs_citylearn = pytest.mark.skipif(
    not citylearn_available(), reason="needs the [citylearn] extra (runs in the CityLearn job: make test-citylearn)"
)


@pytest.fixture(scope="session")
def default_data() -> BuildingData:
    return load_dataset()


def _forbid_network_and_citylearn(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(dest_dir: Path) -> Path:
        raise AssertionError("download attempted")

    def no_env(schema: dict) -> None:
        raise AssertionError("CityLearnEnv constructed")

    monkeypatch.setattr(fetch, "download_wheel", no_download)
    monkeypatch.setattr(data_module, "_build_env", no_env)


def _assert_same(a: BuildingData, b: BuildingData) -> None:
    assert a.building_names == b.building_names
    for field in data_module._ARRAY_FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape, field
        np.testing.assert_array_equal(x, y, err_msg=field)
    assert a.seconds_per_time_step == b.seconds_per_time_step


# ------------------------------------------------------------------ embedded default
def test_default_dataset_matches_design(default_data: BuildingData) -> None:
    d = default_data
    assert d.name == DEFAULT
    assert (d.n_buildings, d.n_steps) == (17, 8760)
    assert d.building_names == tuple(f"Building_{i}" for i in range(1, 18))
    np.testing.assert_allclose(d.battery_capacity, 6.4)
    np.testing.assert_allclose(d.battery_nominal_power, 5.0)
    np.testing.assert_allclose(d.battery_efficiency, 0.9)
    np.testing.assert_allclose(d.battery_capacity_loss_coefficient, 1e-5)
    np.testing.assert_allclose(d.battery_loss_coefficient, 0.0)
    np.testing.assert_allclose(d.battery_depth_of_discharge, 1.0)
    np.testing.assert_allclose(d.battery_initial_soc, 0.0)
    assert set(d.pv_nominal_power) <= {4.0, 5.0}
    assert d.power_efficiency_curve.shape == (17, 2, 5)
    assert d.capacity_power_curve.shape == (17, 2, 3)
    assert np.all(d.demand_kwh >= 0) and np.all(d.demand_kwh.mean(axis=1) > 0.5)
    assert np.count_nonzero(d.demand_kwh == 0) == 28  # a few hours of zero load in Buildings 5-7
    assert np.all(d.solar_kwh >= 0) and d.solar_kwh.max() > 1.0
    assert d.hour.dtype == np.int64 and d.hour.min() == 1 and d.hour.max() == 24
    assert d.demand_kwh.dtype == np.float64
    assert d.seconds_per_time_step == 3600.0
    assert np.ptp(d.price, axis=0).max() == 0.0  # one time-of-use tariff for the whole community
    assert len(np.unique(d.price)) > 1
    assert "MIT License" in d.license_notice and "doi:10.1145/3360322.3360998" in d.license_notice
    assert d.schema["root_directory"] is None and len(d.schema["buildings"]) == 17
    json.dumps(d.schema)


def test_embedded_files_carry_licence_notice_and_provenance() -> None:
    files = data_module.embedded_files()
    assert set(files) == {f"{DEFAULT}.npz", f"{DEFAULT}.json", "LICENSE", "NOTICE"}
    assert "Permission is hereby granted" in files["LICENSE"].read_text()
    assert "CityLearn" in files["NOTICE"].read_text()
    meta = json.loads(files[f"{DEFAULT}.json"].read_text())
    assert meta["derived_from"]["wheel"] == "citylearn==2.1.2"
    assert meta["derived_from"]["wheel_sha256"] == fetch.CITYLEARN_WHEEL_SHA256
    assert meta["derived_from"]["read_with"] == "citylearn==3.0.2"
    assert meta["arrays_sha256"] == data_module.arrays_sha256(load_dataset())
    size = files[f"{DEFAULT}.npz"].stat().st_size if hasattr(files[f"{DEFAULT}.npz"], "stat") else None
    assert size is None or size < 2_000_000


def test_building_data_is_immutable_and_calls_do_not_share_the_schema(default_data: BuildingData) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        default_data.name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        default_data.demand_kwh[0, 0] = 1.0
    other = load_dataset(DEFAULT)
    other.schema["buildings"].clear()
    assert len(load_dataset().schema["buildings"]) == 17
    _assert_same(other, default_data)


def test_embedded_load_needs_no_network_nor_citylearn(default_data: BuildingData, monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_network_and_citylearn(monkeypatch)
    monkeypatch.setattr(data_module, "_EMBEDDED_CACHE", {})
    _assert_same(load_dataset(), default_data)


def test_fresh_process_starts_offline_without_citylearn(tmp_path: Path) -> None:
    """Sockets refuse to connect and CityLearn cannot be imported; reset and step still work."""
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise OSError('network disabled by the test')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "sys.modules['citylearn'] = None\n"
        "from cmarl_env import demand_response_v0\n"
        "env = demand_response_v0.parallel_env()\n"
        "obs, infos = env.reset(seed=0)\n"
        "env.step({a: env.action_space(a).sample() for a in env.agents})\n"
        "loaded = [m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in\n"
        "          ('citylearn', 'torch', 'platformdirs', 'matplotlib', 'pandas')]\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    env = dict(os.environ, CMARL_CACHE_DIR=str(tmp_path / "cache"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "xdg" / "cmarl_env").exists()


@pytest.mark.parametrize("damage", ["flip_byte", "missing_file"])
def test_embedded_checksum_is_verified(damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = data_module.embedded_files()
    for name, resource in files.items():
        (tmp_path / name).write_bytes(resource.read_bytes())
    npz = tmp_path / f"{DEFAULT}.npz"
    if damage == "flip_byte":
        blob = bytearray(npz.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        npz.write_bytes(bytes(blob))
    else:
        npz.unlink()
    monkeypatch.setattr(data_module, "embedded_files", lambda: {name: tmp_path / name for name in files})
    monkeypatch.setattr(data_module, "_EMBEDDED_CACHE", {})
    with pytest.raises(fetch.DataIntegrityError) as info:
        load_dataset()
    message = str(info.value)
    assert f"{DEFAULT}.npz" in message
    assert ("expected sha256" in message) if damage == "flip_byte" else ("missing" in message)


def test_list_datasets_starts_with_default() -> None:
    names = list_datasets()
    assert names[0] == DEFAULT
    assert {"citylearn_challenge_2022_phase_1", "citylearn_challenge_2022_phase_2",
            "citylearn_challenge_2022_phase_3"} <= set(names)


@pytest.mark.parametrize("source", ["citylearn_challenge_2022_phase_1", "citylearn_challenge_2099_unknown", "schema", "dict"])
def test_other_sources_without_citylearn_name_the_extra(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_module, "citylearn_available", lambda: False)
    if source == "schema":
        source = tmp_path / "schema.json"
        source.write_text("{}")
    elif source == "dict":
        source = {"root_directory": str(tmp_path), "buildings": {}}
    with pytest.raises(ModuleNotFoundError) as info:
        load_dataset(source)
    assert info.value.name == "citylearn"
    assert "[citylearn]" in str(info.value) and EXTRA in str(info.value)
    assert DEFAULT in str(info.value)  # says what works without it


def test_missing_schema_file() -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_dataset("/nowhere/nowhere.json")


def test_cache_root_without_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CMARL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "platformdirs", None)
    assert cache_root() == tmp_path / "cmarl_env"
    monkeypatch.setenv("CMARL_CACHE_DIR", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x"
    assert cache_root(tmp_path / "y") == tmp_path / "y"


# ------------------------------------------------------------------ converter (pure functions)
def test_conversion_missing_old_column_names_file_and_column() -> None:
    old = b"Month,Hour,Day Type\n7,24,7\n"
    with pytest.raises(ValueError) as info:
        fetch.convert_csv(old, fetch._ENERGY_SIMULATION_COLUMNS, "phase_x/Building_9.csv")
    assert "phase_x/Building_9.csv" in str(info.value)
    assert "Daylight Savings Status" in str(info.value)


def test_conversion_renames_header_and_keeps_values() -> None:
    old = (
        b"Electricity Pricing [$/kWh],6h Prediction Electricity Pricing [$/kWh],"
        b"12h Prediction Electricity Pricing [$/kWh],24h Prediction Electricity Pricing [$/kWh]\r\n"
        b"0.22,0.22,0.54,0.22\r\n"
    )
    new = fetch.convert_csv(old, fetch._PRICING_COLUMNS, "pricing.csv")
    assert new == (
        b"electricity_pricing,electricity_pricing_predicted_1,electricity_pricing_predicted_2,"
        b"electricity_pricing_predicted_3\n0.22,0.22,0.54,0.22\n"
    )


def test_checksum_mismatch_names_both_hashes(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"not the wheel")
    with pytest.raises(fetch.DataIntegrityError) as info:
        fetch.verify_sha256(path, fetch.CITYLEARN_WHEEL_SHA256)
    assert fetch.CITYLEARN_WHEEL_SHA256 in str(info.value)
    assert fetch.sha256_file(path) in str(info.value)


def test_pip_failure_reports_stderr_and_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-index"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(RuntimeError) as info:
        fetch.download_wheel(tmp_path / "out")
    message = str(info.value)
    assert "citylearn==2.1.2" in message
    assert "No matching distribution" in message or "ERROR" in message
    assert "CMARL_CACHE_DIR" in message


# ------------------------------------------------------------------ CityLearn job
@pytest.fixture(scope="session")
def default_dir() -> Path:
    """The default dataset converted from the wheel into CityLearn 3 csv files (user cache)."""
    return fetch.ensure_dataset(DEFAULT, cache_root())


@needs_citylearn
def test_embedded_arrays_rederived_from_the_wheel_are_identical(default_data: BuildingData, tmp_path: Path) -> None:
    derived = data_module.derive_dataset()
    _assert_same(derived, default_data)
    assert derived.license_notice == default_data.license_notice
    schema = dict(derived.schema, root_directory=None)
    assert schema == default_data.schema
    hashes = data_module.write_embedded(derived, tmp_path)
    assert data_module.compare_embedded(tmp_path) == []
    meta = f"{DEFAULT}.json"
    assert hashes[meta] == data_module.EMBEDDED_SHA256[meta]


@needs_citylearn
def test_derive_command_checks_identity() -> None:
    out = subprocess.run([sys.executable, "-m", "cmarl_env.datasets", "check"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "identical" in out.stdout


@needs_citylearn
def test_embedded_arrays_match_the_converted_csv_files(default_data: BuildingData, default_dir: Path) -> None:
    import pandas as pd

    d = default_data
    pricing = pd.read_csv(default_dir / "pricing.csv")
    np.testing.assert_allclose(d.price, np.tile(pricing["electricity_pricing"].to_numpy(), (17, 1)), rtol=1e-6)
    carbon = pd.read_csv(default_dir / "carbon_intensity.csv")["carbon_intensity"].to_numpy()
    np.testing.assert_allclose(d.carbon_intensity[3], carbon, rtol=1e-6)
    building = pd.read_csv(default_dir / "Building_4.csv")
    np.testing.assert_allclose(d.demand_kwh[3], building["non_shiftable_load"], rtol=1e-6)
    np.testing.assert_allclose(d.solar_kwh[3], building["solar_generation"] * 5.0 / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(d.hour, building["hour"].astype(int))


@needs_citylearn
def test_cache_dir_holds_license_notice_and_manifest(default_dir: Path) -> None:
    assert "Permission is hereby granted" in (default_dir / "LICENSE").read_text()
    assert "CityLearn" in (default_dir / "NOTICE").read_text()
    assert fetch.dataset_problem(default_dir) is None


def _copy_cache(default_dir: Path, root: Path) -> Path:
    shutil.copytree(default_dir, root / "datasets" / DEFAULT)
    shutil.copytree(cache_root() / "wheels", root / "wheels")
    return root / "datasets" / DEFAULT


@needs_citylearn
def test_named_cache_second_call_needs_no_network_nor_citylearn(
    default_data: BuildingData, default_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_cache(default_dir, tmp_path)
    _assert_same(data_module._load_named(DEFAULT, tmp_path), default_data)
    _forbid_network_and_citylearn(monkeypatch)
    _assert_same(data_module._load_named(DEFAULT, tmp_path), default_data)


@needs_citylearn
@pytest.mark.parametrize("damage", ["truncate_csv", "remove_marker"])
def test_corrupt_dataset_is_detected_and_rebuilt(
    damage: str,
    default_data: BuildingData,
    default_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = _copy_cache(default_dir, tmp_path)
    if damage == "truncate_csv":
        csv_path = directory / "Building_3.csv"
        csv_path.write_bytes(csv_path.read_bytes()[:5000])
    else:
        (directory / fetch.MARKER_NAME).unlink()
    monkeypatch.setattr(fetch, "download_wheel", lambda dest_dir: pytest.fail("wheel is cached"))
    with caplog.at_level(logging.WARNING, logger="cmarl_env"):
        rebuilt = data_module._load_named(DEFAULT, tmp_path)
    expected = "Building_3.csv" if damage == "truncate_csv" else "marker"
    assert any(expected in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert fetch.dataset_problem(directory) is None
    _assert_same(rebuilt, default_data)


@needs_citylearn
def test_corrupt_array_cache_is_rebuilt_without_refetch(
    default_data: BuildingData,
    default_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = _copy_cache(default_dir, tmp_path)
    data_module._load_named(DEFAULT, tmp_path)
    npz = directory / data_module.ARRAYS_NAME
    npz.write_bytes(npz.read_bytes()[:1000])
    monkeypatch.setattr(fetch, "download_wheel", lambda dest_dir: pytest.fail("dataset is intact"))
    with caplog.at_level(logging.WARNING, logger="cmarl_env"):
        rebuilt = data_module._load_named(DEFAULT, tmp_path)
    assert any("Array cache" in r.getMessage() for r in caplog.records)
    _assert_same(rebuilt, default_data)
    _forbid_network_and_citylearn(monkeypatch)
    _assert_same(data_module._load_named(DEFAULT, tmp_path), default_data)


@needs_citylearn
def test_other_named_dataset_loads_through_the_wheel(default_dir: Path) -> None:
    phase_1 = load_dataset("citylearn_challenge_2022_phase_1")
    assert phase_1.name == "citylearn_challenge_2022_phase_1"
    assert phase_1.building_names == tuple(f"Building_{i}" for i in range(1, 6))
    np.testing.assert_allclose(phase_1.battery_capacity, 6.4)


@needs_citylearn
def test_schema_path_and_dict_sources(default_data: BuildingData, default_dir: Path) -> None:
    level = logging.getLogger().level
    from_path = load_dataset(default_dir / "schema.json")
    from_str_dir = load_dataset(str(default_dir))
    schema = json.loads((default_dir / "schema.json").read_text())
    schema["root_directory"] = str(default_dir)
    from_dict = load_dataset(schema)
    for loaded in (from_path, from_str_dir, from_dict):
        _assert_same(loaded, default_data)
        assert loaded.schema["root_directory"] == str(default_dir.resolve())
    assert logging.getLogger().level == level


@needs_citylearn
def test_schema_episode_split_is_ignored(default_dir: Path) -> None:
    schema = json.loads((default_dir / "schema.json").read_text())
    schema.update(root_directory=str(default_dir), episode_time_steps=24, rolling_episode_split=True)
    assert load_dataset(schema).n_steps == 8760


@needs_citylearn
def test_schema_dict_without_root_is_rejected(default_dir: Path) -> None:
    schema = json.loads((default_dir / "schema.json").read_text())
    with pytest.raises(ValueError, match="root_directory"):
        load_dataset(schema)


@needs_citylearn
def test_missing_column_names_file_and_column(default_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    copy = tmp_path / "broken"
    shutil.copytree(default_dir, copy)
    csv_path = copy / "Building_1.csv"
    pd.read_csv(csv_path).drop(columns=["non_shiftable_load"]).to_csv(csv_path, index=False)
    with pytest.raises(ValueError) as info:
        load_dataset(copy / "schema.json")
    assert "Building_1.csv" in str(info.value) and "non_shiftable_load" in str(info.value)


@needs_citylearn
def test_other_names_go_to_citylearns_dataset_api(
    default_data: BuildingData, default_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import citylearn.data

    asked: list[str] = []

    def get_dataset(self, name: str, directory=None) -> str:
        asked.append(name)
        if name == "citylearn_no_such_dataset":
            raise FileNotFoundError("not on GitHub")
        return str(default_dir / "schema.json")

    monkeypatch.setattr(citylearn.data.DataSet, "get_dataset", get_dataset)
    loaded = load_dataset("citylearn_challenge_2023_phase_1")
    assert asked == ["citylearn_challenge_2023_phase_1"] and loaded.name == "citylearn_challenge_2023_phase_1"
    _assert_same(loaded, default_data)
    with pytest.raises(ValueError) as info:
        load_dataset("citylearn_no_such_dataset")
    assert "citylearn_no_such_dataset" in str(info.value) and DEFAULT in str(info.value)
