"""Learner-facing views of the core.

The agents' dynamics are separable, so one agent's problem is an ordinary
MDP: ``SingleAgentEnv`` exposes it as a Gymnasium environment
(``gymnasium.make("cmarl/DemandResponseSingle-v0")``). ``BatchedEnv`` steps
many independent copies of one agent type as a single vectorized environment
(Gymnasium's ``VectorEnv`` API, one core step for all copies; also
``gymnasium.make_vec("cmarl/DemandResponseSingle-v0", num_envs=...)`` on
Gymnasium 1.x), each copy with its own episode start hour and, with
augmentation, its own multipliers sampled per episode; this is what
state-augmented training uses.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space

from cmarl_env.config import EnvConfig
from cmarl_env.core import DemandResponseCore
from cmarl_env.data import BuildingData
from cmarl_env.parallel_env import _max_cycles_alias, observation_bounds

SIGNAL_KEYS = ("demand", "solar", "solar_to_battery", "e_bat", "e_grid", "backlog", "r0", "r2", "price")
# Flows of a step: zero in the infos of a reset.
_FLOW_KEYS = ("solar_to_battery", "e_bat", "e_grid", "r0", "r2", "cost", "lagrangian_reward")

GYMNASIUM_1 = int(gym.__version__.split(".")[0]) >= 1
# The same-step autoreset keys of the installed Gymnasium's vector convention:
# 1.x ``final_obs`` / ``final_info`` (AutoresetMode.SAME_STEP), 0.28-0.29 ``final_observation`` / ``final_info``.
FINAL_OBS_KEY = "final_obs" if GYMNASIUM_1 else "final_observation"
_AUTORESET_MODE = getattr(getattr(gym.vector, "AutoresetMode", None), "SAME_STEP", None)


def _agent_config(config: EnvConfig, agent: int, core: DemandResponseCore) -> EnvConfig:
    """Config of a one-agent core that replays agent ``agent`` of ``config``."""
    if not 0 <= agent < config.n_agents:
        raise ValueError(f"agent={agent} is out of range; allowed: [0, {config.n_agents - 1}]")
    return config.replace(
        n_agents=1,
        buildings=(int(core.layout.building[agent]),),
        demand_scales=(float(core.layout.scale[agent]),),
        graph="complete",
        graph_params={},
    )


def _signals_info(signals, i: int | slice) -> dict[str, Any]:
    return {k: getattr(signals, k)[i] for k in SIGNAL_KEYS} | {"cost": signals.e_grid[i]}


def _reset_signals(core: DemandResponseCore) -> dict[str, np.ndarray]:
    """Every signal key at a reset, as (N,) arrays: this hour's demand, solar and price, the backlog, zero flows."""
    zeros = np.zeros(core.n_agents)
    values = {k: zeros for k in _FLOW_KEYS}
    values.update(demand=core.demand, solar=core.solar, price=core.price, backlog=core.backlog.astype(np.float64))
    return values


class SingleAgentEnv(gym.Env):
    """One agent's MDP (Gymnasium API); the grid share c/N is that of the full scenario.

    ``info`` carries every signal key (``cost``, ``r2``, ``lagrangian_reward``, ...)
    from ``reset()`` on. The episode ends by truncation after ``episode_length``
    steps; stepping again before ``reset()`` raises ``RuntimeError``.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: EnvConfig | None = None, agent: int = 0, *, data: BuildingData | None = None, **overrides):
        config = (config or EnvConfig()).replace(**overrides) if overrides else (config or EnvConfig())
        full = DemandResponseCore(config, data)
        self.core = DemandResponseCore(_agent_config(config, agent, full), full.data)
        self.core.share = full.share
        self.core.grid_limit = full.grid_limit
        low, high = observation_bounds(self.core)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self._truncated = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        obs = self.core.reset(seed=seed, start_hour=options.get("start_hour"))
        if "multipliers" in options:
            self.core.set_multipliers(options["multipliers"].get("lambda"), options["multipliers"].get("nu"))
            obs = self.core.observe()
        self._truncated = False
        info = {k: v[0] for k, v in _reset_signals(self.core).items()}
        info["action_clipped"] = False
        return obs[0], info

    def step(self, action):
        if self._truncated:
            raise RuntimeError("step() called after the episode was truncated; call reset() first")
        out = self.core.step(np.asarray(action).reshape(1, 2))  # the core rejects non-numbers
        info = _signals_info(out.signals, 0)
        info["lagrangian_reward"] = float(out.lagrangian[0])
        info["action_clipped"] = bool(out.clipped[0])
        self._truncated = out.truncated
        return out.obs[0], float(out.reward[0]), False, out.truncated, info

    def set_multipliers(self, lam=None, nu=None) -> None:
        self.core.set_multipliers(lam, nu)


class BatchedEnv(VectorEnv):
    """``num_envs`` independent copies of one agent type, stepped as one array.

    Copies replay the scenario's buildings (cycled) with the type's demand
    scale; each reset draws a start hour per copy and, when the config's
    ``multiplier_mode`` is ``"sampled"``, multipliers per copy.

    Infos follow Gymnasium's vector convention: a dict of (num_envs,) arrays,
    each key ``k`` with its mask ``"_k"``, carrying every signal key from
    ``reset()`` on. All copies have the same episode length, so they finish
    together and are reset in the same step (same-step autoreset,
    ``metadata["autoreset_mode"]`` on Gymnasium >= 1.1): that step returns
    the reset observations and reset infos, and the finished episodes' last
    observations and infos under the installed Gymnasium's keys:

    * Gymnasium 1.x: ``infos["final_obs"]`` (object array, one observation per
      copy) and ``infos["final_info"]`` (dict of arrays), masks ``"_final_obs"``
      and ``"_final_info"``;
    * Gymnasium 0.28-0.29: ``infos["final_observation"]`` (indexed by copy like
      Gymnasium's object array; stored as one (num_envs, obs_dim) array since
      every copy finishes) and ``infos["final_info"]`` (object array of
      per-copy dicts), with masks.

    ``max_episode_steps`` (what ``gymnasium.make_vec`` passes) is an alias of
    ``episode_length``. ``final_observations(infos)`` returns the last observations as one
    (num_envs, obs_dim) array under either convention. On Gymnasium 1.x
    ``infos["final_observation"]`` holds that array too, for code written
    before the convention was followed.
    """

    metadata: dict[str, Any] = {"render_modes": []} | (
        {"autoreset_mode": _AUTORESET_MODE} if _AUTORESET_MODE is not None else {}
    )

    def __init__(
        self,
        config: EnvConfig | None = None,
        num_envs: int = 64,
        demand_scale: float = 1.0,
        *,
        data: BuildingData | None = None,
        max_episode_steps: int | None = None,
        **overrides,
    ):
        overrides = _max_cycles_alias(max_episode_steps, overrides, "max_episode_steps")
        config = (config or EnvConfig()).replace(**overrides) if overrides else (config or EnvConfig())
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be an integer >= 1")
        scenario = DemandResponseCore(config, data)
        n_buildings = scenario.data.n_buildings if config.buildings is None else len(config.buildings)
        copies = config.replace(
            n_agents=num_envs,
            demand_scales=float(demand_scale),
            buildings=tuple(range(scenario.data.n_buildings)) if config.buildings is None else config.buildings,
            graph="complete",
            graph_params={},
        )
        self.core = DemandResponseCore(copies, scenario.data)
        self.core.share = scenario.share
        self.core.grid_limit = scenario.grid_limit
        self.n_buildings = n_buildings
        low, high = observation_bounds(self.core)
        single_obs = spaces.Box(low, high, dtype=np.float32)
        single_act = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self._init_spaces(num_envs, single_obs, single_act)

    def _init_spaces(self, num_envs: int, single_obs: spaces.Box, single_act: spaces.Box) -> None:
        """The vector spaces and the all-true info mask, under Gymnasium 1.x or 0.28-0.29."""
        if GYMNASIUM_1:
            self.num_envs = num_envs
            self.single_observation_space = single_obs
            self.single_action_space = single_act
            self.observation_space = batch_space(single_obs, num_envs)
            self.action_space = batch_space(single_act, num_envs)
            self.closed = False
        else:
            VectorEnv.__init__(self, num_envs, single_obs, single_act)
        self.render_mode = None
        mask = np.ones(num_envs, dtype=bool)
        mask.setflags(write=False)
        self._mask = mask

    def _final_infos(self, infos: dict[str, Any], final_obs: np.ndarray, values: dict[str, Any]) -> dict[str, Any]:
        """The reset step's infos plus the finished episodes' last observations and infos, under the installed
        Gymnasium's keys (see the class docstring)."""
        if GYMNASIUM_1:
            rows = np.empty(self.num_envs, dtype=object)
            rows[:] = list(final_obs)
            infos["final_obs"], infos["_final_obs"] = rows, self._mask
            infos["final_info"], infos["_final_info"] = self._with_masks(values), self._mask
            infos["final_observation"] = final_obs
        else:
            per_copy = np.empty(self.num_envs, dtype=object)
            columns = {k: np.asarray(v).tolist() for k, v in values.items()}
            per_copy[:] = [dict(zip(columns, row)) for row in zip(*columns.values())]
            infos["final_observation"], infos["_final_observation"] = final_obs, self._mask
            infos["final_info"], infos["_final_info"] = per_copy, self._mask
        return infos

    def _with_masks(self, values: dict[str, Any]) -> dict[str, Any]:
        infos: dict[str, Any] = {}
        for key, value in values.items():
            infos[key] = value
            infos[f"_{key}"] = self._mask
        return infos

    def _reset_infos(self) -> dict[str, Any]:
        values: dict[str, Any] = dict(_reset_signals(self.core))
        values["lambda"] = self.core.lam.copy()
        values["nu"] = self.core.nu.copy()
        return self._with_masks(values)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs = self.core.reset(seed=seed, per_agent_start=True)
        return obs, self._reset_infos()

    def step(self, actions):
        out = self.core.step(actions)
        values: dict[str, Any] = _signals_info(out.signals, slice(None))
        values["lagrangian_reward"] = out.lagrangian
        values["lambda"] = self.core.lam.copy()
        values["nu"] = self.core.nu.copy()
        obs = out.obs
        truncated = np.full(self.num_envs, out.truncated)
        if not out.truncated:
            return obs, out.reward, np.zeros(self.num_envs, dtype=bool), truncated, self._with_masks(values)
        final_obs = obs
        obs = self.core.reset(per_agent_start=True)
        infos = self._final_infos(self._reset_infos(), final_obs, values)
        return obs, out.reward, np.zeros(self.num_envs, dtype=bool), truncated, infos

    def set_multipliers(self, lam=None, nu=None) -> None:
        self.core.set_multipliers(lam, nu)

    def close_extras(self, **kwargs):
        pass


def final_observations(infos: dict[str, Any]) -> np.ndarray:
    """The finished episodes' last observations from a ``BatchedEnv`` step's infos, as one (num_envs, obs_dim) array."""
    final = infos[FINAL_OBS_KEY]
    if isinstance(final, np.ndarray) and final.dtype != object:
        return final
    return np.stack(list(final))


# ----------------------------------------------------------------------------------------------- EV charging
EV_SIGNAL_KEYS = ("lagrangian_reward", "r0", "load", "unmet", "shortfall")


class EVBatchedEnv(VectorEnv):
    """``num_envs`` charging sites of one site category, stepped as one array (the EV counterpart of ``BatchedEnv``).

    One ``EVChargingCore`` with ``n_agents = num_envs`` sites of category ``site_type`` (``config.site_types`` is
    replaced by it); each site is one copy. Every reset starts all copies at local midnight of one random day of the
    config's window with new cars per port and, when ``config.multiplier_mode == "sampled"``, new multipliers per
    copy. The reward is the core's: ``r0`` or, with ``reward="lagrangian"``, ``r0 + lambda (share - load) + nu
    unmet`` (``EVChargingCore.step``; share = the hour's limit / N of these copies' calibrated cap). Infos carry
    :data:`EV_SIGNAL_KEYS` plus ``lambda``/``nu`` with Gymnasium's masks; the copies finish together and are reset in
    the same step, with the final observations and infos as in :class:`BatchedEnv`.
    """

    metadata: dict[str, Any] = BatchedEnv.metadata
    signal_keys = EV_SIGNAL_KEYS

    def __init__(self, config=None, num_envs: int = 64, site_type: str = "public"):
        from cmarl_env.domains.ev_charging.config import SITE_TYPES, EVConfig
        from cmarl_env.domains.ev_charging.core import EVChargingCore

        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be an integer >= 1")
        if site_type not in SITE_TYPES:
            raise ValueError(f"site_type={site_type!r} is not a site category; allowed: {SITE_TYPES}")
        config = (config or EVConfig()).replace(n_agents=num_envs, site_types=(site_type,))
        self.site_type = site_type
        self.core = EVChargingCore(config)
        single_obs = spaces.Box(-1.0, 1.0, shape=(self.core.obs_dim,), dtype=np.float32)
        single_act = spaces.Box(0.0, 1.0, shape=(self.core.ports,), dtype=np.float32)
        self._init_spaces(num_envs, single_obs, single_act)

    _init_spaces = BatchedEnv._init_spaces
    _final_infos = BatchedEnv._final_infos
    _with_masks = BatchedEnv._with_masks

    def shortfall(self) -> np.ndarray:
        """(num_envs,) energy [kWh] each site can no longer deliver to its cars in the current state: per port
        ``max(0, remaining - power x (departure - max(arrival, t)))``; it becomes unmet energy at the car's departure
        whatever the actions (the potential of ``reward_shaping="shortfall_potential"`` in training)."""
        core = self.core
        st, t = core.state, float(core.t)
        avail = st.pmax * np.maximum(st.dep - np.maximum(st.arr, t), 0.0)
        return np.maximum(st.rem - avail, 0.0).reshape(core.n_agents, core.ports).sum(axis=1)

    def _reset_infos(self) -> dict[str, Any]:
        n = self.num_envs
        values: dict[str, Any] = {k: np.zeros(n) for k in EV_SIGNAL_KEYS}
        values["shortfall"] = self.shortfall()
        values["lambda"] = self.core.lam.copy()
        values["nu"] = self.core.nu.copy()
        return self._with_masks(values)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs = self.core.reset(seed=seed)
        return obs, self._reset_infos()

    def step(self, actions):
        out = self.core.step(actions)
        s = out.signals
        values: dict[str, Any] = {"lagrangian_reward": out.lagrangian, "r0": s.r0, "load": s.load, "unmet": s.unmet,
                                  "shortfall": self.shortfall(), "lambda": self.core.lam.copy(),
                                  "nu": self.core.nu.copy()}
        obs = out.obs
        truncated = np.full(self.num_envs, out.truncated)
        terminated = np.zeros(self.num_envs, dtype=bool)
        if not out.truncated:
            return obs, out.reward, terminated, truncated, self._with_masks(values)
        final_obs = obs
        obs = self.core.reset()
        infos = self._final_infos(self._reset_infos(), final_obs, values)
        return obs, out.reward, terminated, truncated, infos

    def set_multipliers(self, lam=None, nu=None) -> None:
        self.core.set_multipliers(lam, nu)

    def close_extras(self, **kwargs):
        pass
