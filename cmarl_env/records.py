"""Pieces every result record shares: the backlog-slope metric, package versions, atomic writes, JSON cleaning.

Run folders (execution runs, training runs, grid-search trials, benchmark
runs) are written with these, so their metrics mean the same everywhere and a
reader never sees a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping

import numpy as np

PACKAGES = ("cmarl-env", "numpy", "scipy", "numba", "torch", "tianshou", "ray", "citylearn", "pettingzoo",
            "gymnasium", "networkx", "matplotlib")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Python and package versions (None for a package that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], *, binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file in the same folder, flush it to disk, then ``os.replace``.

    A reader (or a run interrupted half-way) never sees a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def clean_json(value: Any) -> Any:
    """numpy values, dataclasses and paths as plain JSON values; non-finite floats as None."""
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        return clean_json(asdict(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dump_json(value: Any) -> str:
    return json.dumps(clean_json(value), indent=2, default=str, allow_nan=False)


def write_json(path: str | os.PathLike, value: Any) -> None:
    atomic_write_text(path, dump_json(value))
