"""PettingZoo ``ParallelEnv`` adapter around the vectorized core.

The adapter only converts between agent-keyed dicts and the core's (N, ...)
arrays; all dynamics live in :mod:`cmarl_env.dynamics`.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from cmarl_env import graphs
from cmarl_env.config import EnvConfig
from cmarl_env.core import ActionTypeError, DemandResponseCore, NonFiniteActionError
from cmarl_env.data import BuildingData
from cmarl_env.render import EpisodeHistory, render_ansi, render_rgb

INFO_KEYS = (
    "demand", "solar", "solar_to_battery", "curtailed", "e_bat", "e_grid", "backlog",
    "r0", "r2", "price", "cost", "lambda", "nu", "lagrangian_reward",
)
_ALL_INFO_KEYS = INFO_KEYS + ("grid_share", "action_clipped", "clipped_actions")


class AgentIndexed:
    """What the parallel envs over a vectorized core share: agents named ``<agent_prefix>_<i>`` with one
    observation space and one action space (``_observation_space``, ``_action_space``), the name lookup, and a core
    step that reports the core's non-finite-action error (``_non_finite_error``) by agent name."""

    agent_prefix = "agent"

    def observation_space(self, agent: str) -> spaces.Box:
        self._index(agent)
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Box:
        self._index(agent)
        return self._action_space

    def _step_core(self, batch: np.ndarray):
        """One core step; a non-finite action (the core's ``NonFiniteActionError``) is reported by agent name."""
        try:
            return self.core.step(batch)
        except self._non_finite_error as err:
            names = [self.possible_agents[i] for i in err.agents]
            raise ValueError(f"non-finite (NaN or infinite) action for agent(s) {names}; "
                             "actions must be finite numbers in [0, 1]") from None

    def _index(self, agent: str) -> int:
        try:
            return self.agent_name_mapping[agent]
        except KeyError:
            last = len(self.agent_name_mapping) - 1
            raise ValueError(f"unknown agent {agent!r}; agents are {self.agent_prefix}_0 .. "
                             f"{self.agent_prefix}_{last}") from None


class DemandResponseParallelEnv(AgentIndexed, ParallelEnv):
    """Constrained demand response: N buildings share a grid-capacity limit.

    Observations (per agent, float32): demand, backlog, state of charge, solar,
    price (each scaled to about unit range), hour of day as sin/cos and, with
    ``augment=True``, the agent's multipliers (lambda, nu) normalised to [0, 1]
    by their ranges. Actions: ``[battery fraction, grid fraction]`` in [0, 1]^2;
    out-of-range values are clipped to the space and counted in
    ``infos[agent]["clipped_actions"]``; NaN or infinite values raise.
    Reward: the objective ``r0 = -price * e_grid`` (or the Lagrangian reward
    with ``reward="lagrangian"``). ``infos[agent]`` carries every signal,
    including ``"cost"`` (the global-constraint signal ``e_grid``) and
    ``"grid_share"`` (c/N, the agent's share of the grid limit), from
    ``reset()`` on (flows are 0 there), so wrappers that build their specs
    from the reset infos see every key. The observation space is finite: see
    ``observation_bounds``. ``max_cycles`` (PettingZoo's name) is accepted as
    an alias of ``episode_length``. ``render_mode="human"`` prints one line
    at ``reset()`` and one per ``step()``; ``render()`` then returns None.
    """

    agent_prefix = "building"
    _non_finite_error = NonFiniteActionError

    metadata = {
        "name": "demand_response_v0",
        "render_modes": ["human", "ansi", "rgb_array"],
        "is_parallelizable": True,
        "render_fps": 4,
    }

    def __init__(
        self,
        config: EnvConfig | None = None,
        *,
        data: BuildingData | None = None,
        max_cycles: int | None = None,
        **overrides: Any,
    ):
        overrides = _max_cycles_alias(max_cycles, overrides)
        config = (config or EnvConfig()).replace(**overrides) if overrides else (config or EnvConfig())
        self.config = config
        self.render_mode = config.render_mode
        self.core = DemandResponseCore(config, data)
        if isinstance(config.graph, str):
            self.graph = graphs.make_graph(config.graph, config.n_agents, seed=config.seed, **dict(config.graph_params))
        else:
            self.graph = config.graph
        graphs.check_connected(self.graph, config.n_agents)
        self.possible_agents = [f"{self.agent_prefix}_{i}" for i in range(config.n_agents)]
        self.agent_name_mapping = {name: i for i, name in enumerate(self.possible_agents)}
        self.agents: list[str] = []
        self.history = EpisodeHistory()
        self._clip_counts = np.zeros(config.n_agents, dtype=np.int64)
        n, dim = config.n_agents, self.core.obs_dim
        self._obs_low, self._obs_high = observation_bounds(self.core)
        self.state_space = spaces.Box(
            np.tile(self._obs_low, n), np.tile(self._obs_high, n), shape=(n * dim,), dtype=np.float32
        )
        # One space object per env, shared by all agents (every agent has the same spaces). Not an
        # lru_cache on the methods: that would key on self and keep every environment alive.
        self._observation_space = spaces.Box(self._obs_low, self._obs_high, dtype=np.float32)
        self._action_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self._last_obs = self.core.observe()

    # ------------------------------------------------------------------ spaces

    # ------------------------------------------------------------------- API
    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None):
        """Options: ``start_hour`` (int) and ``multipliers`` ({"lambda": ..., "nu": ...})."""
        options = dict(options or {})
        obs = self.core.reset(seed=seed, start_hour=options.get("start_hour"))
        multipliers = options.get("multipliers")
        if multipliers:
            self.set_multipliers(lam=multipliers.get("lambda"), nu=multipliers.get("nu"))
            obs = self.core.observe()
        self.agents = list(self.possible_agents)
        self._clip_counts[:] = 0
        self.history = EpisodeHistory()
        if self.render_mode is not None:
            self.history.record_state(self.core)
        self._last_obs = obs
        if self.render_mode == "human":
            print(self.render_text())
        return {a: obs[i] for i, a in enumerate(self.agents)}, self._reset_infos()

    def _reset_infos(self) -> dict[str, dict[str, Any]]:
        """Infos with every key ``step`` reports and the same Python types: this hour's demand,
        solar and price, the current backlog and multipliers, and zero flows."""
        core, n = self.core, self.config.n_agents
        zeros = [0.0] * n
        columns = zip(
            core.demand.tolist(), core.solar.tolist(), zeros, zeros, zeros, zeros, core.backlog.tolist(),
            zeros, zeros, core.price.tolist(), zeros, core.lam.tolist(), core.nu.tolist(), zeros,
            [core.share] * n, [False] * n, self._clip_counts.tolist(),
        )
        return {a: dict(zip(_ALL_INFO_KEYS, row)) for a, row in zip(self.agents, columns)}

    def step(self, actions: Mapping[str, Any]):
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        out = self._step_core(self._stack_actions(actions))
        self._clip_counts += out.clipped
        sig = out.signals
        if self.render_mode is not None:
            self.history.record_step(self.core, sig)
        self._last_obs = out.obs
        n = len(self.agents)
        e_grid = sig.e_grid.tolist()  # reported twice: as "e_grid" and as the safety-gym "cost"
        columns = zip(
            sig.demand.tolist(), sig.solar.tolist(), sig.solar_to_battery.tolist(), sig.curtailed.tolist(),
            sig.e_bat.tolist(), e_grid, sig.backlog.tolist(), sig.r0.tolist(), sig.r2.tolist(),
            sig.price.tolist(), e_grid, self.core.lam.tolist(), self.core.nu.tolist(),
            out.lagrangian.tolist(), [self.core.share] * n, out.clipped.tolist(), self._clip_counts.tolist(),
        )
        agents = self.agents
        obs = dict(zip(agents, out.obs))
        infos = {a: dict(zip(_ALL_INFO_KEYS, row)) for a, row in zip(agents, columns)}
        reward = dict(zip(agents, out.reward.tolist()))
        terminations = dict.fromkeys(agents, False)
        truncations = dict.fromkeys(agents, out.truncated)
        if out.truncated:
            self.agents = []
        if self.render_mode == "human":
            print(self.render_text())
        return obs, reward, terminations, truncations, infos

    def _stack_actions(self, actions: Mapping[str, Any]) -> np.ndarray:
        if not isinstance(actions, Mapping):
            raise ValueError(f"actions must be a dict agent -> [battery, grid], got {type(actions).__name__}")
        if len(actions) != len(self.agents) or any(a not in actions for a in self.agents):
            missing = [a for a in self.agents if a not in actions]
            extra = [a for a in actions if a not in self.agent_name_mapping]
            raise ValueError(f"actions must cover exactly the live agents; missing {missing}, unknown {extra}")
        try:
            batch = self.core.check_actions([actions[a] for a in self.agents])
        except ActionTypeError as err:  # strings, complex numbers, objects: name the agents
            raise ActionTypeError([self.agents[i] for i in err.agents], err.example) from None
        except (ValueError, TypeError):
            batch = None
        if batch is None or batch.shape != (len(self.agents), 2):
            for a in self.agents:
                shape = np.shape(actions[a])
                if shape != (2,):
                    raise ValueError(f"action for agent {a!r} must have shape (2,) = [battery, grid], got shape {shape}")
            raise ValueError("actions must be numbers of shape (2,) = [battery, grid] per agent")
        return batch

    def state(self) -> np.ndarray:
        return self._last_obs.ravel().copy()

    def render(self):
        """``rgb_array``: a frame; ``ansi``: a status line; ``human``: None (``reset`` and ``step`` print)."""
        if self.render_mode is None or self.render_mode == "human":
            return None
        if self.render_mode == "rgb_array":
            return render_rgb(self.history, self.core)
        return self.render_text()

    def render_text(self) -> str:
        return render_ansi(self.history, self.core)

    def close(self) -> None:
        self.history = EpisodeHistory()

    # ------------------------------------------------------- augmentation API
    def set_multipliers(self, lam=None, nu=None) -> None:
        """Set (lambda, nu): a scalar, an array of shape (N,), or a dict agent -> value."""
        self.core.set_multipliers(lam=self._per_agent(lam, self.core.lam), nu=self._per_agent(nu, self.core.nu))
        self._last_obs = self.core.observe()

    def get_multipliers(self) -> dict[str, dict[str, float]]:
        """Current multipliers as ``{"lambda": {agent: value}, "nu": {agent: value}}``."""
        return {
            "lambda": dict(zip(self.possible_agents, self.core.lam.tolist())),
            "nu": dict(zip(self.possible_agents, self.core.nu.tolist())),
        }

    def _per_agent(self, value, current: np.ndarray):
        if value is None or not isinstance(value, Mapping):
            return value
        out = current.copy()
        for agent, v in value.items():
            out[self._index(agent)] = v
        return out

    @functools.cached_property
    def random_walk_matrix(self):
        """Sparse D^-1 A of the communication graph (for consensus)."""
        return graphs.random_walk_matrix(self.graph, self.config.n_agents)

    @property
    def grid_limit(self) -> float:
        return self.core.grid_limit

    @property
    def agent_types(self) -> dict[str, int]:
        return dict(zip(self.possible_agents, self.core.agent_types.tolist()))


def _max_cycles_alias(max_cycles: int | None, overrides: dict[str, Any], name: str = "max_cycles") -> dict[str, Any]:
    """PettingZoo's ``max_cycles`` (or Gymnasium's ``max_episode_steps``) keyword as ``episode_length``."""
    if max_cycles is None:
        return overrides
    if "episode_length" in overrides and overrides["episode_length"] != max_cycles:
        raise ValueError(
            f"{name}={max_cycles!r} and episode_length={overrides['episode_length']!r} disagree; "
            f"{name} is an alias of episode_length, give one of them"
        )
    return {**overrides, "episode_length": max_cycles}


# Relative slack on the backlog bound: the backlog is a running float64 sum.
_BACKLOG_SLACK = 1e-6


def observation_bounds(core: DemandResponseCore) -> tuple[np.ndarray, np.ndarray]:
    """Finite float32 (low, high) of every observation column of ``core``'s scenario.

    Each bound is computed with the same arithmetic as the observation, from
    the data the core's agents replay (its window, buildings and demand
    scales): demand and solar and price at most their window maxima over the
    fixed scales; the backlog grows by at most one hour's demand per step, so
    it stays below ``episode_length`` hours of the largest scaled demand; the
    state of charge, hour and multiplier columns lie in [0, 1] or [-1, 1].
    """
    lo, hi = core.window
    buildings = np.unique(core.layout.building)
    d = core.data
    scale = float(core.layout.scale.max())

    def column(values: np.ndarray, factor: float, norm: float) -> tuple[float, float]:
        window = values[buildings, lo:hi]
        return min(0.0, float(window.min()) * factor * (1.0 / norm)), float(window.max()) * factor * (1.0 / norm)

    demand = column(d.demand_kwh, scale, core.demand_norm)
    bounds = {
        "demand": demand,
        "backlog": (0.0, core.config.episode_length * demand[1] * (1.0 + _BACKLOG_SLACK)),
        "soc": (0.0, 1.0),
        "solar": column(d.solar_kwh, 1.0, core.solar_norm),
        "price": column(d.price, 1.0, core.price_norm),
        "hour_sin": (-1.0, 1.0),
        "hour_cos": (-1.0, 1.0),
        "lambda": (0.0, 1.0),
        "nu": (0.0, 1.0),
    }
    names = core.layout_names
    low = np.array([bounds[n][0] for n in names], dtype=np.float32)
    high = np.array([bounds[n][1] for n in names], dtype=np.float32)
    return low, high
