"""Learner-facing views of the core.

The agents' dynamics are separable, so one agent's problem is an ordinary
MDP: ``SingleAgentEnv`` exposes it as a Gymnasium environment. ``BatchedEnv``
steps many independent copies of one agent type as a single vectorized
environment (Gymnasium's ``VectorEnv`` API, one core step for all copies),
each copy with its own episode start hour and, with augmentation, its own
multipliers sampled per episode; this is what state-augmented training uses.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv

from cmarl_env.config import EnvConfig
from cmarl_env.core import DemandResponseCore
from cmarl_env.data import BuildingData
from cmarl_env.parallel_env import _observation_bounds

SIGNAL_KEYS = ("demand", "solar", "solar_to_battery", "e_bat", "e_grid", "backlog", "r0", "r2", "price")


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


class SingleAgentEnv(gym.Env):
    """One agent's MDP (Gymnasium API); the grid share c/N is that of the full scenario."""

    metadata = {"render_modes": []}

    def __init__(self, config: EnvConfig | None = None, agent: int = 0, *, data: BuildingData | None = None, **overrides):
        config = (config or EnvConfig()).replace(**overrides) if overrides else (config or EnvConfig())
        full = DemandResponseCore(config, data)
        self.core = DemandResponseCore(_agent_config(config, agent, full), full.data)
        self.core.share = full.share
        self.core.grid_limit = full.grid_limit
        low, high = _observation_bounds(self.core.layout_names)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        obs = self.core.reset(seed=seed, start_hour=options.get("start_hour"))
        if "multipliers" in options:
            self.core.set_multipliers(options["multipliers"].get("lambda"), options["multipliers"].get("nu"))
            obs = self.core.observe()
        return obs[0], {}

    def step(self, action):
        out = self.core.step(np.asarray(action, dtype=np.float64).reshape(1, 2))
        info = _signals_info(out.signals, 0)
        info["lagrangian_reward"] = float(out.lagrangian[0])
        info["action_clipped"] = bool(out.clipped[0])
        return out.obs[0], float(out.reward[0]), False, out.truncated, info

    def set_multipliers(self, lam=None, nu=None) -> None:
        self.core.set_multipliers(lam, nu)


class BatchedEnv(VectorEnv):
    """``num_envs`` independent copies of one agent type, stepped as one array.

    Copies replay the scenario's buildings (cycled) with the type's demand
    scale; each reset draws a start hour per copy and, when the config's
    ``multiplier_mode`` is ``"sampled"``, multipliers per copy. All copies have
    the same episode length, so they finish together and are reset together
    (Gymnasium's same-step autoreset: the last observation of the finished
    episode is in ``infos["final_observation"]``).
    """

    def __init__(
        self,
        config: EnvConfig | None = None,
        num_envs: int = 64,
        demand_scale: float = 1.0,
        *,
        data: BuildingData | None = None,
        **overrides,
    ):
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
        low, high = _observation_bounds(self.core.layout_names)
        single_obs = spaces.Box(low, high, dtype=np.float32)
        single_act = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        super().__init__(num_envs, single_obs, single_act)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs = self.core.reset(seed=seed, per_agent_start=True)
        return obs, {}

    def step(self, actions):
        out = self.core.step(actions)
        infos: dict[str, Any] = _signals_info(out.signals, slice(None))
        infos["lagrangian_reward"] = out.lagrangian
        infos["lambda"] = self.core.lam.copy()
        infos["nu"] = self.core.nu.copy()
        obs = out.obs
        truncated = np.full(self.num_envs, out.truncated)
        if out.truncated:
            infos["final_observation"] = obs
            obs = self.core.reset(per_agent_start=True)
        return obs, out.reward, np.zeros(self.num_envs, dtype=bool), truncated, infos

    def set_multipliers(self, lam=None, nu=None) -> None:
        self.core.set_multipliers(lam, nu)

    def close_extras(self, **kwargs):
        pass
