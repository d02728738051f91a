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

    def __post_init__(self) -> None:
        check_int("n_agents", self.n_agents, 1, MAX_AGENTS)
        check_int("episode_length", self.episode_length, 1, 10**7)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_real("constraint_fraction", self.constraint_fraction, 0.0, 1.0, low_open=True)
        if not isinstance(self.graph, str) and not hasattr(self.graph, "edges"):
            raise ValueError(f"graph={self.graph!r} must be a graph name (str) or a networkx.Graph")
        if self.split not in SPLITS:
            raise ValueError(f"split={self.split!r} is not allowed; choose one of {SPLITS}")
        if self.reward not in REWARDS:
            raise ValueError(f"reward={self.reward!r} is not allowed; choose one of {REWARDS}")
        if self.multiplier_mode not in MULTIPLIER_MODES:
            raise ValueError(f"multiplier_mode={self.multiplier_mode!r} is not allowed; choose one of {MULTIPLIER_MODES}")
        if self.render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode={self.render_mode!r} is not allowed; choose one of {RENDER_MODES}")
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment={self.augment!r} must be a bool")
        if self.multiplier_mode == "sampled" and not self.augment:
            raise ValueError("multiplier_mode='sampled' needs augment=True: a policy cannot see multipliers it is not given")
        check_range("lambda_range", self.lambda_range, lower=0.0)
        check_range("nu_range", self.nu_range)
        if self.window is not None:
            if len(self.window) != 2 or not all(isinstance(v, int) for v in self.window):
                raise ValueError(f"window={self.window!r} must be a pair of ints (first_hour, end_hour)")
            if not 0 <= self.window[0] < self.window[1]:
                raise ValueError(f"window={self.window!r} must satisfy 0 <= first_hour < end_hour")
        if self.start_hour is not None:
            check_int("start_hour", self.start_hour, 0, 10**7)
        if self.initial_soc is not None:
            check_real("initial_soc", self.initial_soc, 0.0, 1.0)
        if self.buildings is not None:
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


def check_int(name: str, value: Any, low: int, high: int) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an integer in [low, high] (bools are not)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name}={value!r} must be an integer in [{low}, {high}]")
    if not low <= int(value) <= high:
        raise ValueError(f"{name}={value!r} is out of range; allowed: [{low}, {high}]")


def check_real(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a finite number in [low, high] ((low, high] if low_open)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be a number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number") from None
    bad_low = v <= low if low_open else v < low
    if not math.isfinite(v) or bad_low or v > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name}={value!r} is out of range; allowed: {bracket}{low}, {high}]")


def check_range(name: str, value: Sequence[float], lower: float | None = None) -> None:
    """A finite (low, high) pair with low < high (and low >= ``lower`` when given)."""
    if len(value) != 2:
        raise ValueError(f"{name}={value!r} must be a pair (low, high)")
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}={value!r} must be finite with low < high")
    if lower is not None and lo < lower:
        raise ValueError(f"{name}={value!r}: low must be >= {lower}")
