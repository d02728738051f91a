"""What a user installs: the wheel's dependencies, extras and embedded data.

Built from this checkout with ``pip wheel --no-deps --no-build-isolation``
(needs setuptools in the test environment; skipped otherwise). The sizes and
times of real installs are measured by ``python -m benchmarks.install_size``.
"""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "results", "runs", "__pycache__", ".pytest_cache"
)
HEAVY = ("torch", "citylearn", "tianshou", "ray", "matplotlib", "tqdm", "platformdirs", "pandas", "openstudio")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "cmarl-env"
    shutil.copytree(ROOT, source, ignore=SOURCE_IGNORE)  # no stale build/ or egg-info from the checkout
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build without isolation here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("cmarl_env-*.whl")
    return path


@pytest.fixture(scope="module")
def metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode())


def _requirements(metadata, extra: str | None) -> dict[str, str]:
    """name -> specifier of the unconditional requirements (extra=None) or of one extra."""
    out = {}
    for line in metadata.get_all("Requires-Dist"):
        requirement, _, marker = line.partition(";")
        if (extra is None) != (not marker) or (extra is not None and f'extra == "{extra}"' not in marker):
            continue
        name = re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", requirement.strip()).group(0)
        out[re.sub(r"\[.*\]", "", name).lower()] = requirement.strip()[len(name):].strip()
    return out


def test_base_dependencies_are_the_runtime_ones(metadata):
    base = _requirements(metadata, None)
    assert set(base) == {"numpy", "scipy", "networkx", "numba", "gymnasium", "pettingzoo"}
    assert not set(base) & set(HEAVY)


def test_version_ranges(metadata):
    base = _requirements(metadata, None)
    specs = {name: set(spec.replace(" ", "").split(",")) for name, spec in base.items()}
    assert specs["gymnasium"] == {">=0.28.1", "<2"}
    assert specs["pettingzoo"] == {">=1.24.3", "<1.28"}
    assert specs["numpy"] == {">=1.26", "<3"}
    assert metadata["Requires-Python"].replace(" ", "") in {">=3.11,<3.14", "<3.14,>=3.11"}


def test_extras(metadata):
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"plot", "learn", "scale", "bench", "citylearn", "test", "test-base", "all"} <= extras
    learn = _requirements(metadata, "learn")
    assert learn["tianshou"] == "==2.0.1" and set(learn["torch"].split(",")) == {">=2.13", "<2.15"}
    assert _requirements(metadata, "citylearn")["citylearn"] == "==3.0.2"
    assert {"ray", "pyarrow", "numpy"} <= set(_requirements(metadata, "scale"))
    assert {"torchrl", "supersuit"} <= set(_requirements(metadata, "test"))
    assert {"pytest", "hypothesis"} <= set(_requirements(metadata, "test-base"))
    (own,) = [line for line in metadata.get_all("Requires-Dist") if line.startswith("cmarl-env[") and '"all"' in line]
    assert set(own[len("cmarl-env["):own.index("]")].split(",")) == {"plot", "learn", "scale", "bench", "test"}  # not citylearn


def test_embedded_dataset_and_licence_are_in_the_wheel(wheel: Path):
    from cmarl_env.data import EMBEDDED_SHA256

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in EMBEDDED_SHA256:
            assert f"cmarl_env/datasets/{name}" in names, name
        assert "cmarl_env/datasets/README.md" in names
        npz = archive.getinfo("cmarl_env/datasets/citylearn_challenge_2022_phase_all.npz")
        assert npz.file_size < 2_000_000
    assert wheel.stat().st_size < 5_000_000
