"""Vectorized core: N agents stepped with array operations only.

The core owns the per-agent layout (which building profile each agent
replays, with which time offset and demand scale), the battery parameters,
the state (state of charge, degraded capacity, backlog) and the multipliers
of the state augmentation. ``reset`` and ``step`` work on (N, ...) arrays; the
PettingZoo and Gymnasium views in this package are thin adapters around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cmarl_env import dynamics
from cmarl_env.battery import BatteryParams
from cmarl_env.config import TRAIN_HOURS, EnvConfig, FieldTypeError, check_fits, check_int, paper_demand_scales
from cmarl_env.data import BuildingData, load_dataset

BASE_FEATURES = ("demand", "backlog", "soc", "solar", "price", "hour_sin", "hour_cos")
MULTIPLIER_FEATURES = ("lambda", "nu")


def observation_layout(augment: bool) -> tuple[str, ...]:
    """Names of the observation columns, in order."""
    return BASE_FEATURES + (MULTIPLIER_FEATURES if augment else ())


@dataclass(frozen=True)
class AgentLayout:
    """Which data each agent replays; all arrays have shape (N,)."""

    building: np.ndarray
    offset: np.ndarray
    scale: np.ndarray

    @property
    def types(self) -> np.ndarray:
        """Agent type index: agents with equal demand scale share a type."""
        return np.unique(self.scale, return_inverse=True)[1]


class ActionTypeError(FieldTypeError):
    """Actions that are not real numbers (strings, complex numbers, objects); ``agents`` holds the offending indices."""

    def __init__(self, agents: list, example: object):
        self.agents = agents
        self.example = example
        super().__init__(
            f"actions of agent(s) {agents} are not real numbers (e.g. {example!r}); "
            "actions must be finite real numbers, (N, 2) = (agents, [battery, grid]) in [0, 1]"
        )


class NonFiniteActionError(ValueError):
    """An action contained NaN or an infinity; ``agents`` holds the offending indices."""

    def __init__(self, agents: list[int]):
        self.agents = agents
        super().__init__(
            f"non-finite (NaN, infinite or beyond the float range) action for agent index(es) {agents}; "
            "actions must be finite numbers in [0, 1]"
        )


def _real_array(value, name: str, allowed: str) -> np.ndarray:
    """``value`` as a float64 array when it holds real numbers only; strings, complex and objects raise naming ``name``."""
    raw = value if isinstance(value, np.ndarray) else None
    if raw is None:
        if isinstance(value, (str, bytes, complex)):
            raise FieldTypeError(f"{name}={value!r} must be {allowed}")
        try:
            raw = np.asarray(value)
        except ValueError:
            raise FieldTypeError(f"{name}={value!r} must be {allowed}") from None
    if raw.dtype.kind in "iuf":
        return raw.astype(np.float64, copy=False)
    if raw.dtype.kind == "O" and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                                     for v in raw.ravel()):
        return np.array([float(v) if abs(v) < 1e308 else (np.inf if v > 0 else -np.inf) for v in raw.ravel()]
                        ).reshape(raw.shape)
    raise FieldTypeError(f"{name}={value!r} must be {allowed}")


class CoreStep(NamedTuple):
    obs: np.ndarray
    signals: dynamics.StepSignals
    reward: np.ndarray
    lagrangian: np.ndarray
    clipped: np.ndarray
    truncated: bool


def observation_norms(data: BuildingData) -> tuple[float, float, float]:
    """Fixed observation scales of a dataset: maxima of demand, solar and price over the training hours.

    They do not depend on the scenario's window, so a policy sees the same
    scaling in training, on other windows and on held-out hours (where a value
    may exceed 1).
    """
    end = min(TRAIN_HOURS[1], data.n_steps)
    return (
        max(float(data.demand_kwh[:, :end].max()), 1e-9),
        max(float(data.solar_kwh[:, :end].max()), 1e-9),
        max(float(data.price[:, :end].max()), 1e-9),
    )


def resolve_window(config: EnvConfig, n_steps: int) -> tuple[int, int]:
    """Data hours [first, end) the scenario draws from."""
    if config.window is not None:
        lo, hi = config.window
    elif config.split == "train":
        lo, hi = TRAIN_HOURS
    elif config.split == "test":
        lo, hi = TRAIN_HOURS[1], n_steps
    else:
        lo, hi = 0, n_steps
    if hi > n_steps:
        raise ValueError(f"window=({lo}, {hi}) exceeds the dataset's {n_steps} hours; allowed end_hour <= {n_steps}")
    if lo >= hi:
        raise ValueError(f"split={config.split!r} leaves no hours of the dataset's {n_steps} (window [{lo}, {hi}))")
    check_fits(config.start_hour, config.episode_length, (lo, hi), wrap=config.wrap_data)
    return lo, hi


def build_layout(config: EnvConfig, data: BuildingData, width: int) -> AgentLayout:
    """Agents 0..B-1 replay the chosen buildings as they are; later agents reuse them with seeded time offsets."""
    n = config.n_agents
    chosen = np.arange(data.n_buildings) if config.buildings is None else np.asarray(config.buildings)
    if chosen.max() >= data.n_buildings:
        raise ValueError(
            f"buildings={config.buildings!r} names building {int(chosen.max())}, "
            f"but {data.name} has {data.n_buildings} buildings (allowed indices 0..{data.n_buildings - 1})"
        )
    building = chosen[np.arange(n) % chosen.size].astype(np.int64)
    offset = np.zeros(n, dtype=np.int64)
    if n > chosen.size:
        rng = np.random.default_rng([config.seed, 0x0FF5E7])
        offset[chosen.size :] = rng.integers(0, width, size=n - chosen.size)
    scales = config.demand_scales
    if scales is None:
        scale = np.asarray(paper_demand_scales(n), dtype=np.float64)
    else:
        scale = np.broadcast_to(np.asarray(scales, dtype=np.float64), (n,)).copy()
    return AgentLayout(building=building, offset=offset, scale=scale)


class DemandResponseCore:
    """N-agent demand-response dynamics on CityLearn data, with array in/array out."""

    domain = "demand_response"  # its adapter to the domain seam: cmarl_env.domains.demand_response.domain

    def __init__(self, config: EnvConfig | None = None, data: BuildingData | None = None):
        self.config = config = config or EnvConfig()
        self.data = data if data is not None else load_dataset(config.dataset)
        self.window = resolve_window(config, self.data.n_steps)
        self.width = self.window[1] - self.window[0]
        self.layout = build_layout(config, self.data, self.width)
        self.n_agents = config.n_agents
        self.layout_names = observation_layout(config.augment)
        self.obs_dim = len(self.layout_names)

        d = self.data
        lo, hi = self.window
        b = self.layout.building
        angle = 2.0 * np.pi * (np.asarray(d.hour[lo:hi], dtype=np.float64) % 24.0) / 24.0
        self._tables = (
            np.ascontiguousarray(d.demand_kwh[:, lo:hi]).ravel(),
            np.ascontiguousarray(d.solar_kwh[:, lo:hi]).ravel(),
            np.ascontiguousarray(d.price[:, lo:hi]).ravel(),
            np.sin(angle),
            np.cos(angle),
        )
        self._row = b * self.width
        self._offset = self.layout.offset
        self._scale = self.layout.scale
        self._lagrangian_reward = config.reward == "lagrangian"
        self.params = BatteryParams.from_arrays(
            capacity=d.battery_capacity,
            nominal_power=d.battery_nominal_power,
            capacity_loss_coefficient=d.battery_capacity_loss_coefficient,
            loss_coefficient=d.battery_loss_coefficient,
            depth_of_discharge=d.battery_depth_of_discharge,
            power_efficiency_curve=d.power_efficiency_curve,
            capacity_power_curve=d.capacity_power_curve,
            seconds_per_time_step=d.seconds_per_time_step,
        )
        self._model = b
        self._capacity = self.params.capacity[b]
        soc0 = d.battery_initial_soc[b] if config.initial_soc is None else np.full(self.n_agents, config.initial_soc)
        self._initial_soc = np.maximum(soc0, self.params.minimum_soc[b]).astype(np.float32)

        weights = np.zeros((d.n_buildings, self.width))
        np.add.at(weights, (b, self.layout.offset), self._scale)
        self.aggregate_demand = dynamics.aggregate_profile(d.demand_kwh[:, lo:hi], weights)
        self.peak_demand = float(self.aggregate_demand.max())
        self.grid_limit = config.constraint_fraction * self.peak_demand
        self.share = self.grid_limit / self.n_agents

        self.demand_norm, self.solar_norm, self.price_norm = observation_norms(d)
        self.lambda_range = tuple(map(float, config.lambda_range))
        self.nu_range = tuple(map(float, config.nu_range))
        self._norms = np.array([
            1.0 / self.demand_norm, 1.0 / self.solar_norm, 1.0 / self.price_norm,
            self.lambda_range[0], 1.0 / (self.lambda_range[1] - self.lambda_range[0]),
            self.nu_range[0], 1.0 / (self.nu_range[1] - self.nu_range[0]),
        ])

        self.np_random = np.random.default_rng(config.seed)
        self.lam = np.zeros(self.n_agents)
        self.nu = np.zeros(self.n_agents)
        self.t = 0
        self.start_hour = lo
        self._hours_left = 10**18 if config.wrap_data else self.width
        self._phase = self._offset.copy()
        self.soc = self._initial_soc.copy()
        self.degraded = self._capacity.copy()
        self.backlog = np.zeros(self.n_agents)
        self._load(0)

    # ----------------------------------------------------------------- episode
    def reset(self, seed: int | None = None, start_hour=None, per_agent_start: bool = False,
              steps: int | None = None) -> np.ndarray:
        """Start an episode: fresh batteries and backlog, a start hour, multipliers per the config.

        ``start_hour`` is an int, an (N,) array of per-agent start hours, or None
        for the config's start hour (random when that is None too, drawn so that
        the episode fits in the window; one draw per agent with
        ``per_agent_start=True``). The episode's hours ``[start_hour, start_hour +
        steps)`` (``steps`` defaults to ``episode_length``) must lie inside the data
        window, else ``ValueError`` names the start hour, the length and the
        window, unless the config's ``wrap_data`` allows the data to repeat.
        """
        if seed is not None:
            check_int("seed", seed, 0, 2**63 - 1)
        length = self.config.episode_length if steps is None else steps
        check_int("steps", length, 1, 10**7)
        lo, hi = self.window
        if start_hour is None:
            start_hour = self.config.start_hour
        if start_hour is None:
            check_fits(None, length, (lo, hi), wrap=self.config.wrap_data)
            if seed is not None:
                self.np_random = np.random.default_rng(seed)
            last = hi - 1 if self.config.wrap_data else hi - length
            size = self.n_agents if per_agent_start else None
            start_hour = self.np_random.integers(lo, last + 1, size=size)
        elif seed is not None:
            self.np_random = np.random.default_rng(seed)
        start = self._checked_start(start_hour, length)
        self.start_hour = int(start) if start.ndim == 0 else start
        self._hours_left = 10**18 if self.config.wrap_data else int(hi - start.max())
        self._phase = np.ascontiguousarray(start - lo + self._offset, dtype=np.int64)
        self.t = 0
        self.soc = self._initial_soc.copy()
        self.degraded = self._capacity.copy()
        self.backlog = np.zeros(self.n_agents)
        if self.config.multiplier_mode == "sampled":
            self.sample_multipliers()
        return self._load(0)

    def _checked_start(self, start_hour, length: int) -> np.ndarray:
        """Start hour(s) as int64, checked: integers, one per agent or one for all, inside the window with room."""
        lo, hi = self.window
        raw = np.asarray(start_hour)
        if raw.dtype.kind not in "iu" or raw.dtype == bool:
            raise FieldTypeError(f"start_hour={start_hour!r} must be an integer hour (or one per agent) in [{lo}, {hi})")
        if raw.ndim > 1 or (raw.ndim == 1 and raw.shape != (self.n_agents,)):
            raise ValueError(f"start_hour must be an int or have shape ({self.n_agents},), got {raw.shape}")
        start = raw.astype(np.int64)
        if start.size:
            first, last = int(start.min()), int(start.max())
            check_fits(first, length, (lo, hi), wrap=self.config.wrap_data)
            check_fits(last, length, (lo, hi), wrap=self.config.wrap_data)
        return start

    def sample_multipliers(self) -> None:
        """Draw each agent's (lambda, nu) uniformly from the configured ranges."""
        self.lam = self.np_random.uniform(*self.lambda_range, size=self.n_agents)
        self.nu = self.np_random.uniform(*self.nu_range, size=self.n_agents)

    def set_multipliers(self, lam=None, nu=None) -> None:
        """Set multipliers (scalar or one per agent); values outside the ranges raise."""
        if lam is not None:
            self.lam = self._checked_multiplier("lambda", lam, self.lambda_range)
        if nu is not None:
            self.nu = self._checked_multiplier("nu", nu, self.nu_range)

    def _checked_multiplier(self, name, value, bounds) -> np.ndarray:
        arr = _real_array(value, name, f"a real number (or one per agent) in {list(bounds)}")
        if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != self.n_agents):
            raise ValueError(f"{name} must be a scalar or have shape ({self.n_agents},), got {arr.shape}")
        if not np.all(np.isfinite(arr)) or arr.min() < bounds[0] or arr.max() > bounds[1]:
            bad = np.flatnonzero(~np.isfinite(np.broadcast_to(arr, (self.n_agents,)))
                                 | (np.broadcast_to(arr, (self.n_agents,)) < bounds[0])
                                 | (np.broadcast_to(arr, (self.n_agents,)) > bounds[1]))[:10].tolist()
            raise ValueError(f"{name} values must lie in {list(bounds)}; got min {arr.min()}, max {arr.max()} "
                             f"(agent index(es) {bad})")
        return np.broadcast_to(arr, (self.n_agents,)).copy()

    # ------------------------------------------------------------------- steps
    def _load(self, t: int) -> np.ndarray:
        """Gather hour ``t``'s data for every agent and return the observation."""
        self.demand, self.solar, self.price, obs = dynamics.gather_and_observe(
            t, self._phase, self._row, self.width, self._tables, self._scale, self.backlog, self.soc,
            self.lam, self.nu, self._norms, self.config.augment, self.obs_dim,
        )
        return obs

    def observe(self) -> np.ndarray:
        """Observation matrix (N, obs_dim), float32; columns follow ``observation_layout``."""
        return self._load(self.t)

    def step(self, actions) -> CoreStep:
        """Apply (N, 2) actions (battery fraction, grid fraction); values outside [0, 1] are clipped.

        Raises ``NonFiniteActionError`` (a ``ValueError``) naming the agents whose
        action holds NaN or an infinity; the state is then left unchanged.
        """
        a = self.check_actions(actions)
        if self.t >= self._hours_left:
            lo, hi = self.window
            start = self.start_hour if np.ndim(self.start_hour) == 0 else int(np.max(self.start_hour))
            raise ValueError(f"step {self.t} of the episode from start_hour={start} would read hour {start + self.t}, "
                             f"past the end of the data window [{lo}, {hi}); reset() first (episode length "
                             f"{self.config.episode_length}), or set wrap_data=True to repeat the data")
        res = dynamics.step(
            self.soc, self.degraded, self.backlog, self.demand, self.solar, self.price, a,
            self.lam, self.nu, self.share, self._model, self.params,
        )
        if res.non_finite:
            raise NonFiniteActionError(np.flatnonzero(~np.isfinite(a).all(axis=1))[:10].tolist())
        sig = res.signals
        self.soc, self.degraded, self.backlog = res.soc, res.degraded, sig.backlog
        reward = res.lagrangian if self._lagrangian_reward else sig.r0
        self.t += 1
        obs = self._load(self.t)
        truncated = self.t >= self.config.episode_length
        return CoreStep(obs, sig, reward, res.lagrangian, res.clipped, truncated)

    def check_actions(self, actions) -> np.ndarray:
        """(N, 2) float64 actions; strings, complex numbers and other objects raise naming the agents."""
        shape = (self.n_agents, 2)
        if isinstance(actions, np.ndarray) and actions.dtype.kind in "biuf":
            raw = actions
        else:
            try:
                raw = np.asarray(actions)
            except ValueError:  # ragged nested sequences
                raise ValueError(f"actions must have shape {shape} = (agents, [battery, grid]); "
                                 f"got a ragged {type(actions).__name__}") from None
        if raw.shape != shape:
            raise ValueError(f"actions must have shape {shape} = (agents, [battery, grid]), got {raw.shape}")
        kind = raw.dtype.kind
        if kind in "biuf":
            return np.ascontiguousarray(raw, dtype=np.float64)
        if kind != "O":  # strings, bytes, complex, datetimes, ...
            if isinstance(actions, np.ndarray):
                raise ActionTypeError(list(range(min(self.n_agents, 10))), raw[0, 0])
            raw = np.array(actions, dtype=object)  # find the agents whose entries are not numbers
        out = np.empty(shape)
        bad_type: list[int] = []
        for i in range(self.n_agents):
            for j in range(2):
                v = raw[i, j]
                if isinstance(v, (bool, np.bool_)) or isinstance(v, (int, float, np.integer, np.floating)):
                    try:
                        out[i, j] = float(v)
                    except OverflowError:
                        out[i, j] = np.inf if v > 0 else -np.inf
                else:
                    if not bad_type:
                        example = v
                    bad_type.append(i)
        if bad_type:
            raise ActionTypeError(sorted(set(bad_type))[:10], example)
        return out

    # ------------------------------------------------------------------- facts
    @property
    def agent_types(self) -> np.ndarray:
        return self.layout.types

    @property
    def type_scales(self) -> np.ndarray:
        return np.unique(self.layout.scale)

    def state(self) -> np.ndarray:
        """Global state: every agent's observation, stacked (N * obs_dim,)."""
        return self.observe().ravel().copy()

    def describe(self) -> dict:
        """JSON-friendly facts a run folder records."""
        return {
            "n_agents": self.n_agents,
            "dataset": self.data.name,
            "window": list(self.window),
            "peak_aggregate_demand_kwh": self.peak_demand,
            "grid_limit_kwh": self.grid_limit,
            "share_kwh": self.share,
            "episode_length": self.config.episode_length,
            "wrap_data": self.config.wrap_data,
            "observation_layout": list(self.layout_names),
            "type_scales": self.type_scales.tolist(),
            "demand_norm": self.demand_norm,
            "solar_norm": self.solar_norm,
            "price_norm": self.price_norm,
        }

