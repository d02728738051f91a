"""The method registry: every method the benchmarks know, each registered once with everything about it.

A method is one module (``benchmarks/methods/*.py`` for the shipped ones, or
a user's own) plus one :func:`register` call carrying its kind, label,
parameters, default training budget and plot colour, and how to prepare it
for a run. Nothing else in the package lists method kinds: the suite parser,
the runner, the leaderboard and the figures ask this registry.

``prepare(spec, ctx)`` does whatever a method needs before its roll-outs
(load checkpoints, train, tune a rule) and returns a :class:`Prepared`: a
factory of fresh :class:`cmarl_env.evaluation.Controller` objects (one per
roll-out), or, for a method that is not a controller (the clairvoyant LP), a
function that produces the :class:`~cmarl_env.evaluation.Rollout` itself.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

BUDGETS = ("pretrained", "short", "full", "none")


@dataclass
class RunContext:
    """What a method's ``prepare`` may use: the run's work folder, a shared cache, the dataset."""

    workdir: Path
    cache_dir: Path | None = None
    _data: Any = None

    def data(self, dataset: str):
        if self._data is None or self._data.name != dataset:
            from cmarl_env.data import load_dataset

            self._data = load_dataset(dataset)
        return self._data


@dataclass
class Prepared:
    """A method ready to roll out: ``controller()`` builds a fresh controller, or ``rollout(core, start, steps)``
    returns the roll-out directly (methods that are not controllers)."""

    controller: Callable[[], Any] | None = None
    rollout: Callable[[Any, int, int], Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.controller is None) == (self.rollout is None):
            raise ValueError("Prepared needs exactly one of controller (a factory) or rollout (a function)")


@dataclass(frozen=True)
class MethodDef:
    """Everything the benchmarks know about one method kind."""

    kind: str
    label: str
    prepare: Callable[[Any, RunContext], Prepared]
    params: tuple[str, ...] = ()
    validate: Callable[[Mapping[str, Any]], None] | None = None  # raises ValueError naming the bad parameter
    check_scenario: Callable[[Any], str | None] | None = None   # a reason the method cannot run a scenario
    budget: str = "none"        # default training budget shown in the tables
    colour: str = "tab:gray"
    reference: bool = False     # a clairvoyant bound: listed, never ranked
    seeded: bool = False        # results depend on the run seed (training, randomness); else one seed is run
    trains: bool = False        # trains during the run (scheduled first, shown with its training curve)
    family: str = "baseline"    # "ours", "baseline", "reference"
    # files whose contents determine the result (checkpoints): hashed into the run's spec hash, so a retrained
    # policy makes finished runs stale instead of silently reusing them
    inputs: Callable[[Mapping[str, Any]], list[Path]] | None = None
    # the values the kind uses for the parameters a suite leaves out (code defaults, e.g. Algorithm 1's step
    # sizes): hashed into the run's spec hash, so changing a default makes finished runs stale as well
    defaults: Callable[[], Mapping[str, Any]] | None = None

    def default_params(self) -> dict[str, Any]:
        """``defaults()`` as a plain dict ({} when the kind declares none)."""
        return {} if self.defaults is None else dict(self.defaults())

    def input_files(self, params: Mapping[str, Any]) -> list[Path]:
        """The files a run of this method with ``params`` reads: ``inputs(params)`` if given, else the
        ``checkpoint`` parameter and the values of a ``policies`` mapping (the shared convention)."""
        if self.inputs is not None:
            return list(self.inputs(params))
        return checkpoint_params(params)

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"method {self.kind!r}: budget={self.budget!r} is not one of {BUDGETS}")


def checkpoint_params(params: Mapping[str, Any]) -> list[Path]:
    """Checkpoint paths named by a method's parameters: ``checkpoint`` and the values of ``policies``."""
    out = []
    if isinstance(params.get("checkpoint"), str):
        out.append(Path(params["checkpoint"]))
    if isinstance(params.get("policies"), Mapping):
        out += [Path(v) for _, v in sorted(params["policies"].items(), key=lambda kv: str(kv[0])) if isinstance(v, str)]
    return out


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 (16 hex digits) of a file's contents, or ``"missing"`` (the run itself then fails with the reason)."""
    try:
        st = Path(path).stat()
    except OSError:
        return "missing"
    return _file_digest(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


_REGISTRY: dict[str, MethodDef] = {}
_BUILTIN_LOADED = False


def register(mdef: MethodDef, *, replace: bool = False) -> MethodDef:
    """Add a method kind. Registering an existing kind again raises unless ``replace=True``."""
    if mdef.kind in _REGISTRY and not replace and _REGISTRY[mdef.kind] is not mdef:
        raise ValueError(f"method kind {mdef.kind!r} is already registered; pass replace=True to override it")
    _REGISTRY[mdef.kind] = mdef
    return mdef


def _load_builtin() -> None:
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        importlib.import_module("benchmarks.methods")  # an error here propagates: never a silently empty registry
        _BUILTIN_LOADED = True


def get(kind: str) -> MethodDef:
    _load_builtin()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"method kind {kind!r} is not registered; known kinds: {sorted(_REGISTRY)}") from None


def kinds() -> tuple[str, ...]:
    _load_builtin()
    return tuple(_REGISTRY)


def all_methods() -> dict[str, MethodDef]:
    _load_builtin()
    return dict(_REGISTRY)
