"""Pieces every result record shares: the backlog-slope metric, package versions, atomic writes, JSON cleaning.

Run folders (execution runs, training runs, grid-search trials, benchmark
runs) are written with these, so their metrics mean the same everywhere and a
reader never sees a half-written file.
"""

from __future__ import annotations

import errno
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


# ------------------------------------------------------------------ output folders
LOCK_NAME = ".lock"


class OutputPathError(ValueError):
    """An output path that cannot be written (an existing file, a read-only or missing parent); one line."""


class FolderLockedError(RuntimeError):
    """Another process holds the folder's lock file: it is writing there right now."""


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check, before any work starts, that ``path`` can be a results folder; return it as a ``Path``.

    Refused with ``OutputPathError`` (naming ``flag`` and the path): an existing file, a parent that is a
    file, a folder (or nearest existing parent) where no file can be created (read-only, no permission).
    The folder itself is not created.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise OutputPathError(f"{flag} {path!r} must be a non-empty folder path")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {str(path)!r} exists and is not a folder; give a folder path (new or existing)")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"{flag} {str(path)!r}: {str(probe)!r} is a file, so the folder cannot be created there")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".cmarl-write-check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise OutputPathError(f"{flag} {str(path)!r}: cannot write in {str(probe)!r} "
                              f"({errno.errorcode.get(err.errno, err.errno)}: {err.strerror})") from None
    return path


class FolderLock:
    """An exclusive lock on a results folder while this process writes it (``flock`` on ``FOLDER/.lock``).

    A second process (or a second lock in this one) is refused at once with ``FolderLockedError`` naming the
    folder, the lock file and the holder's pid; the kernel releases the lock when its holder exits, even
    after SIGKILL, so a lock is never stale. The lock file stays (it holds the last holder's pid). When this
    lock created the folder and the work fails before anything else is written, the folder is removed again.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "results folder"):
        self.folder = Path(folder)
        self.what = what
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> "FolderLock":
        import fcntl

        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self._created = missing[-1] if missing else None  # the highest folder this lock creates
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise FolderLockedError(
                f"{self.what} {str(self.folder)!r} is being written by another process (pid {holder}, lock file "
                f"{str(self.path)!r}); wait for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self, *, failed: bool = False) -> None:
        if self._fd is None:
            return
        import fcntl

        if failed and self._created is not None:
            left = [p.name for p in self.folder.iterdir()] if self.folder.is_dir() else []
            if left == [LOCK_NAME]:
                self.path.unlink(missing_ok=True)
                for folder in (self.folder, *self.folder.parents):
                    try:
                        folder.rmdir()
                    except OSError:
                        break
                    if folder == self._created:
                        break
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(failed=exc_type is not None)


def publish_folder(staging: str | os.PathLike, out: str | os.PathLike, last: str = "metrics.json") -> Path:
    """Move every file of ``staging`` into ``out``, ``last`` at the very end, then remove ``staging``.

    ``out``'s old ``last`` file is removed first, so a folder is complete exactly when ``last`` is there:
    a process killed half-way leaves a folder without it (never new files beside an old ``last``).
    """
    staging, out = Path(staging), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / last).unlink(missing_ok=True)
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    for p in sorted(files, key=lambda p: p.relative_to(staging).as_posix() == last):
        target = out / p.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, target)
    import shutil

    shutil.rmtree(staging, ignore_errors=True)
    return out


def write_trajectory_csv(path: str | os.PathLike, traj: Mapping[str, np.ndarray], *, max_agents: int = 20,
                         step_column: bool = True) -> None:
    """Per-step trajectories as CSV: every 1-D series, and the first ``max_agents`` columns of each per-agent one
    (``lambda_0`` ...), in the dict's order; series of another length are left out."""
    steps = max(np.asarray(v).shape[0] for v in traj.values())
    cols: list[tuple[str, np.ndarray]] = []
    for k, v in traj.items():
        v = np.asarray(v)
        if v.shape[0] != steps:
            continue
        if v.ndim == 1:
            cols.append((k, v))
        elif v.ndim == 2:
            for i in range(min(v.shape[1], max_agents)):
                cols.append((f"{k}_{i}", v[:, i]))
    if step_column:
        cols.insert(0, ("step", np.arange(steps)))
    header = ",".join(c for c, _ in cols)
    table = np.column_stack([c for _, c in cols])
    lines = [header] + [",".join(f"{x:.6g}" for x in row) for row in table]
    atomic_write_text(path, "\n".join(lines) + "\n")
