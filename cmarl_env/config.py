"""Typed, validated configuration of the demand-response environment."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

DEFAULT_DATASET = "citylearn_challenge_2022_phase_all"
TRAIN_HOURS = (0, 3000)
SPLITS = ("train", "test", "all")
REWARDS = ("objective", "lagrangian")
MULTIPLIER_MODES = ("fixed", "sampled")
RENDER_MODES = (None, "human", "ansi", "rgb_array")
MAX_AGENTS = 10_000_000
MAX_HOURS = 10**7


class FieldTypeError(TypeError, ValueError):
    """A config value or an argument of the wrong type (a string where a number belongs, ...).

    Both a ``TypeError`` and a ``ValueError``: code that catches either sees it.
    The message names the field, the value and what is allowed, on one line.
    """


class ConfigBase:
    """Shared behaviour of the project's frozen config dataclasses.

    ``replace`` and ``from_dict`` reject unknown fields by name; ``to_dict``
    gives JSON-friendly values (tuples as lists) and ``from_dict`` turns lists
    back into tuples for tuple-typed fields, so a config survives a JSON round trip.
    """

    def replace(self, **changes: Any):
        self._check_fields(changes)
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        cls._check_fields(values)
        return cls(**{k: _tuples(v) if "tuple" in str(cls.__dataclass_fields__[k].type) else v for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _lists(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def _check_fields(cls, values: Mapping[str, Any]) -> None:
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; allowed: {allowed}")


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_lists(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _lists(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


@dataclass(frozen=True)
class EnvConfig(ConfigBase):
    """Everything that defines one demand-response scenario.

    The defaults are the paper's main scenario: 7 agents on the two-clusters
    graph, the first agent of each cluster with double demand, a grid limit of
    27 % of the aggregate peak, 80-hour episodes on the training hours.

    An episode never runs past the end of its data window: a start hour or an
    ``episode_length`` that would need hours beyond ``window`` (or the split's
    hours) raises ``ValueError`` naming the start hour, the length and the
    window. ``wrap_data=True`` allows such episodes explicitly (the data then
    repeats from the window's first hour); it is off by default and recorded by
    ``DemandResponseCore.describe()`` (``facts.json`` of a run folder). Agents
    beyond the buildings replay building profiles at per-agent time offsets
    inside the window whatever ``wrap_data`` is: that replay is the layout,
    not an episode running past its window.
    """

    n_agents: int = 7
    dataset: str | Mapping[str, Any] = DEFAULT_DATASET
    buildings: tuple[int, ...] | None = None
    demand_scales: tuple[float, ...] | float | None = None
    graph: Any = "two_clusters"
    graph_params: Mapping[str, Any] = field(default_factory=dict)
    constraint_fraction: float = 0.27
    episode_length: int = 80
    split: str = "train"
    window: tuple[int, int] | None = None
    start_hour: int | None = None
    augment: bool = False
    reward: str = "objective"
    multiplier_mode: str = "fixed"
    lambda_range: tuple[float, float] = (0.0, 15.0)
    nu_range: tuple[float, float] = (-20.0, 20.0)
    initial_soc: float | None = None
    seed: int = 0
    render_mode: str | None = None
    wrap_data: bool = False

    def __post_init__(self) -> None:
        check_int("n_agents", self.n_agents, 1, MAX_AGENTS)
        check_int("episode_length", self.episode_length, 1, MAX_HOURS)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_real("constraint_fraction", self.constraint_fraction, 0.0, 1.0, low_open=True)
        if not (isinstance(self.dataset, str) and self.dataset) and not isinstance(self.dataset, Mapping):
            raise FieldTypeError(f"dataset={self.dataset!r} must be a dataset name or schema path (non-empty str) "
                                 "or a mapping of arrays")
        if not isinstance(self.graph, str) and not hasattr(self.graph, "edges"):
            raise FieldTypeError(f"graph={self.graph!r} must be a graph name (str) or a networkx.Graph")
        if not isinstance(self.graph_params, Mapping):
            raise FieldTypeError(f"graph_params={self.graph_params!r} must be a mapping of graph parameters")
        for name in ("split", "reward", "multiplier_mode"):
            if not isinstance(getattr(self, name), str):
                raise FieldTypeError(f"{name}={getattr(self, name)!r} must be a str; choose one of "
                                     f"{dict(split=SPLITS, reward=REWARDS, multiplier_mode=MULTIPLIER_MODES)[name]}")
        if self.render_mode is not None and not isinstance(self.render_mode, str):
            raise FieldTypeError(f"render_mode={self.render_mode!r} must be None or a str; choose one of {RENDER_MODES}")
        if self.split not in SPLITS:
            raise ValueError(f"split={self.split!r} is not allowed; choose one of {SPLITS}")
        if self.reward not in REWARDS:
            raise ValueError(f"reward={self.reward!r} is not allowed; choose one of {REWARDS}")
        if self.multiplier_mode not in MULTIPLIER_MODES:
            raise ValueError(f"multiplier_mode={self.multiplier_mode!r} is not allowed; choose one of {MULTIPLIER_MODES}")
        if self.render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode={self.render_mode!r} is not allowed; choose one of {RENDER_MODES}")
        for name in ("augment", "wrap_data"):
            if not isinstance(getattr(self, name), bool):
                raise FieldTypeError(f"{name}={getattr(self, name)!r} must be a bool (True or False)")
        if self.multiplier_mode == "sampled" and not self.augment:
            raise ValueError("multiplier_mode='sampled' needs augment=True: a policy cannot see multipliers it is not given")
        check_range("lambda_range", self.lambda_range, lower=0.0)
        check_range("nu_range", self.nu_range)
        if self.window is not None:
            if (not isinstance(self.window, (tuple, list)) or len(self.window) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in self.window)):
                raise FieldTypeError(f"window={self.window!r} must be a pair of ints (first_hour, end_hour)")
            if not 0 <= self.window[0] < self.window[1] <= MAX_HOURS:
                raise ValueError(f"window={self.window!r} must satisfy 0 <= first_hour < end_hour <= {MAX_HOURS}")
        if self.start_hour is not None:
            check_int("start_hour", self.start_hour, 0, MAX_HOURS)
        if self.window is not None:
            check_fits(self.start_hour, self.episode_length, tuple(self.window), wrap=self.wrap_data)
        if self.initial_soc is not None:
            check_real("initial_soc", self.initial_soc, 0.0, 1.0)
        if self.buildings is not None:
            if not isinstance(self.buildings, (tuple, list)):
                raise FieldTypeError(f"buildings={self.buildings!r} must be a tuple of building indices or None")
            if len(self.buildings) == 0:
                raise ValueError("buildings=() is empty; give at least one building index or leave it None")
            for b in self.buildings:
                check_int("buildings[...]", b, 0, 10**6)
        scales = self.demand_scales
        if isinstance(scales, (tuple, list)):
            if len(scales) != self.n_agents:
                raise ValueError(
                    f"demand_scales has {len(scales)} entries but n_agents={self.n_agents}; give one per agent or a single number"
                )
            for s in scales:
                check_real("demand_scales[...]", s, 0.0, 1000.0, low_open=True)
        elif scales is not None:
            check_real("demand_scales", scales, 0.0, 1000.0, low_open=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "EnvConfig":
        values = dict(values)
        if isinstance(values.get("graph"), Mapping):
            import networkx as nx

            graph = nx.Graph()
            graph.add_nodes_from(range(int(values["graph"]["n"])))
            graph.add_edges_from(map(tuple, values["graph"]["edges"]))
            values["graph"] = graph
        if isinstance(values.get("demand_scales"), list):
            values["demand_scales"] = tuple(values["demand_scales"])
        return super().from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (a custom networkx graph is written as its edge list)."""
        out = super().to_dict()
        if not isinstance(self.graph, str):
            out["graph"] = {"edges": [list(map(int, e)) for e in self.graph.edges()], "n": self.graph.number_of_nodes()}
        return out


def paper_demand_scales(n_agents: int) -> tuple[float, ...]:
    """Double demand for the first agent of each two-clusters cluster (agents 0 and ceil(n/2)).

    A single agent has normal demand.
    """
    scales = [1.0] * n_agents
    if n_agents > 1:
        scales[0] = 2.0
        scales[math.ceil(n_agents / 2)] = 2.0
    return tuple(scales)


def check_fits(start_hour: int | None, length: int, window: tuple[int, int], *, wrap: bool = False) -> None:
    """An episode of ``length`` hours from ``start_hour`` (any start when None) must stay inside ``window``.

    Raises ``ValueError`` naming the start hour, the length and the window unless ``wrap`` (``EnvConfig.wrap_data``,
    off by default) allows the data to repeat from the window's first hour.
    """
    lo, hi = window
    if start_hour is not None and not lo <= start_hour < hi:
        raise ValueError(f"start_hour={start_hour} is outside the data window [{lo}, {hi}); "
                         f"allowed: {lo} <= start_hour < {hi}")
    if wrap:
        return
    if length > hi - lo:
        raise ValueError(f"episode_length={length} hours does not fit in the data window [{lo}, {hi}) of "
                         f"{hi - lo} hours; allowed: episode_length <= {hi - lo} (or wrap_data=True to repeat the data)")
    if start_hour is not None and start_hour + length > hi:
        raise ValueError(f"start_hour={start_hour} + episode length {length} = {start_hour + length} runs past the "
                         f"end of the data window [{lo}, {hi}); allowed: start_hour <= {hi - length} "
                         "(or wrap_data=True to repeat the data)")


def check_int(name: str, value: Any, low: int, high: int) -> None:
    """Raise naming ``name`` unless ``value`` is an integer in [low, high] (bools are not).

    A wrong type raises ``FieldTypeError`` (a ``TypeError`` and a ``ValueError``), a wrong value ``ValueError``.
    """
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise FieldTypeError(f"{name}={value!r} must be an integer in [{low}, {high}]")
    if not low <= int(value) <= high:
        raise ValueError(f"{name}={value!r} is out of range; allowed: [{low}, {high}]")


def check_real(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    """Raise naming ``name`` unless ``value`` is a finite real number in [low, high] ((low, high] if low_open).

    Strings, bytes, bools and complex numbers are wrong types (``FieldTypeError``), even when ``float()``
    would accept them; integers too large for a float are out of range.
    """
    bracket = "(" if low_open else "["
    if isinstance(value, (bool, str, bytes, complex)) or not isinstance(value, (int, float)) and not _is_real(value):
        raise FieldTypeError(f"{name}={value!r} must be a real number in {bracket}{low}, {high}]")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        raise FieldTypeError(f"{name}={value!r} must be a real number in {bracket}{low}, {high}]") from None
    bad_low = v <= low if low_open else v < low
    if not math.isfinite(v) or bad_low or v > high:
        raise ValueError(f"{name}={value!r} is out of range; allowed: {bracket}{low}, {high}]")


def _is_real(value: Any) -> bool:
    """numpy real scalars (and 0-d arrays of them) count as real numbers; complex and strings do not."""
    import numpy as np

    return isinstance(value, (np.integer, np.floating)) or (
        isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf")


def check_range(name: str, value: Sequence[float], lower: float | None = None) -> None:
    """A finite (low, high) pair of real numbers with low < high (and low >= ``lower`` when given)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise FieldTypeError(f"{name}={value!r} must be a pair (low, high) of real numbers")
    for v in value:
        if isinstance(v, (bool, str, bytes, complex)) or not (isinstance(v, (int, float)) or _is_real(v)):
            raise FieldTypeError(f"{name}={value!r} must be a pair (low, high) of real numbers")
    try:
        lo, hi = (float(v) for v in value)
    except OverflowError:
        raise ValueError(f"{name}={value!r} must be finite with low < high") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}={value!r} must be finite with low < high")
    if lower is not None and lo < lower:
        raise ValueError(f"{name}={value!r}: low must be >= {lower}")
