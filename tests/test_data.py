"""Tests for cmarl_env.data: real CityLearn 3 loading, offline fetch, cache integrity, errors.

The default dataset is fetched once per test run into the real user cache
(``cache_root()``), so only the first run on a machine downloads anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmarl_env import _citylearn_fetch as fetch
from cmarl_env import data as data_module
from cmarl_env.data import BuildingData, cache_root, list_datasets, load_dataset

DEFAULT = "citylearn_challenge_2022_phase_all"


@pytest.fixture(scope="session")
def default_data() -> BuildingData:
    return load_dataset()


@pytest.fixture(scope="session")
def default_dir(default_data: BuildingData) -> Path:
    fetch.cached_wheel(cache_root())
    return cache_root() / "datasets" / DEFAULT


def _forbid_network_and_citylearn(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(dest_dir: Path) -> Path:
        raise AssertionError("download attempted")

    def no_env(schema: dict) -> None:
        raise AssertionError("CityLearnEnv constructed")

    monkeypatch.setattr(fetch, "download_wheel", no_download)
    monkeypatch.setattr(data_module, "_build_env", no_env)


def _copy_cache(default_dir: Path, root: Path) -> Path:
    shutil.copytree(default_dir, root / "datasets" / DEFAULT)
    shutil.copytree(cache_root() / "wheels", root / "wheels")
    return root / "datasets" / DEFAULT


def _assert_same(a: BuildingData, b: BuildingData) -> None:
    assert a.building_names == b.building_names
    for field in data_module._ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.seconds_per_time_step == b.seconds_per_time_step


def test_default_dataset_matches_design(default_data: BuildingData, default_dir: Path) -> None:
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
    assert "MIT License" in d.license_notice and "doi:10.1145/3360322.3360998" in d.license_notice
    json.dumps(d.schema)

    pricing = pd.read_csv(default_dir / "pricing.csv")
    np.testing.assert_allclose(d.price, np.tile(pricing["electricity_pricing"].to_numpy(), (17, 1)), rtol=1e-6)
    carbon = pd.read_csv(default_dir / "carbon_intensity.csv")["carbon_intensity"].to_numpy()
    np.testing.assert_allclose(d.carbon_intensity[3], carbon, rtol=1e-6)
    building = pd.read_csv(default_dir / "Building_4.csv")
    np.testing.assert_allclose(d.demand_kwh[3], building["non_shiftable_load"], rtol=1e-6)
    np.testing.assert_allclose(d.solar_kwh[3], building["solar_generation"] * 5.0 / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(d.hour, building["hour"].astype(int))


def test_building_data_is_immutable(default_data: BuildingData) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        default_data.name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        default_data.demand_kwh[0, 0] = 1.0


def test_cache_dir_holds_license_notice_and_manifest(default_dir: Path) -> None:
    assert "Permission is hereby granted" in (default_dir / "LICENSE").read_text()
    assert "CityLearn" in (default_dir / "NOTICE").read_text()
    assert fetch.dataset_problem(default_dir) is None


def test_second_call_needs_no_network_nor_citylearn(
    default_data: BuildingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_network_and_citylearn(monkeypatch)
    _assert_same(load_dataset(), default_data)


def test_env_var_points_at_copied_cache(
    default_data: BuildingData, default_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(default_dir, tmp_path / "datasets" / DEFAULT)
    monkeypatch.setenv("CMARL_CACHE_DIR", str(tmp_path))
    _forbid_network_and_citylearn(monkeypatch)
    _assert_same(load_dataset(DEFAULT), default_data)


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
        rebuilt = load_dataset(cache_dir=tmp_path)
    expected = "Building_3.csv" if damage == "truncate_csv" else "marker"
    assert any(expected in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert fetch.dataset_problem(directory) is None
    _assert_same(rebuilt, default_data)


def test_corrupt_array_cache_is_rebuilt_without_refetch(
    default_data: BuildingData,
    default_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = _copy_cache(default_dir, tmp_path)
    npz = directory / data_module.ARRAYS_NAME
    npz.write_bytes(npz.read_bytes()[:1000])
    monkeypatch.setattr(fetch, "download_wheel", lambda dest_dir: pytest.fail("dataset is intact"))
    with caplog.at_level(logging.WARNING, logger="cmarl_env"):
        rebuilt = load_dataset(cache_dir=tmp_path)
    assert any("Array cache" in r.getMessage() for r in caplog.records)
    _assert_same(rebuilt, default_data)
    _forbid_network_and_citylearn(monkeypatch)
    _assert_same(load_dataset(cache_dir=tmp_path), default_data)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("citylearn_challenge_1999")
    message = str(info.value)
    assert "citylearn_challenge_1999" in message
    for name in list_datasets():
        assert name in message


def test_list_datasets_starts_with_default() -> None:
    names = list_datasets()
    assert names[0] == DEFAULT
    assert {"citylearn_challenge_2022_phase_1", "citylearn_challenge_2022_phase_2",
            "citylearn_challenge_2022_phase_3"} <= set(names)


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


def test_schema_episode_split_is_ignored(default_data: BuildingData, default_dir: Path) -> None:
    schema = json.loads((default_dir / "schema.json").read_text())
    schema.update(root_directory=str(default_dir), episode_time_steps=24, rolling_episode_split=True)
    assert load_dataset(schema).n_steps == 8760


def test_schema_dict_without_root_is_rejected(default_dir: Path) -> None:
    schema = json.loads((default_dir / "schema.json").read_text())
    with pytest.raises(ValueError, match="root_directory"):
        load_dataset(schema)


def test_missing_schema_file() -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_dataset("/nowhere/nowhere.json")


def test_missing_column_names_file_and_column(default_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "broken"
    shutil.copytree(default_dir, copy)
    csv_path = copy / "Building_1.csv"
    pd.read_csv(csv_path).drop(columns=["non_shiftable_load"]).to_csv(csv_path, index=False)
    with pytest.raises(ValueError) as info:
        load_dataset(copy / "schema.json")
    assert "Building_1.csv" in str(info.value) and "non_shiftable_load" in str(info.value)


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
