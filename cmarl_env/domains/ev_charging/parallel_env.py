"""PettingZoo ``ParallelEnv`` adapter around :class:`EVChargingCore` (dicts in and out; dynamics in the core)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from cmarl_env.domains.ev_charging.config import EVConfig
from cmarl_env.domains.ev_charging.core import EVActionTypeError, EVChargingCore, NonFiniteActionError
from cmarl_env.domains.ev_charging.data import EVTables
from cmarl_env.parallel_env import AgentIndexed

INFO_KEYS = ("load", "cost", "unmet", "departed", "r0", "r2", "price", "share", "lambda", "nu",
             "lagrangian_reward", "action_clipped", "clipped_actions")


class EVChargingParallelEnv(AgentIndexed, ParallelEnv):
    """EV charging sites under a shared transformer limit (``ev_charging_v0``).

    Agents ``site_0 .. site_{N-1}``, each a charging site with K ports.
    Action: K numbers in [0, 1], the fraction of the maximum power (min of the
    charger and the car) each port offers in the hour (clipped outside, counted
    in ``infos[agent]["clipped_actions"]``; NaN or infinite values raise).
    Observation: see :mod:`cmarl_env.domains.ev_charging.core`. Reward: the
    objective ``r0 = -price * load`` (or the Lagrangian with
    ``reward="lagrangian"``). ``infos[agent]`` carries ``"cost"``/``"load"``
    (the global-constraint signal), ``"share"`` (the hour's limit / N) and
    ``"unmet"`` (the local-constraint signal), from ``reset()`` on.
    ``max_cycles`` is an alias of ``episode_length``.
    """

    agent_prefix = "site"
    _non_finite_error = NonFiniteActionError

    metadata = {"name": "ev_charging_v0", "render_modes": ["human", "ansi"], "is_parallelizable": True,
                "render_fps": 4}

    def __init__(self, config: EVConfig | None = None, *, tables: EVTables | None = None,
                 max_cycles: int | None = None, **overrides: Any):
        if max_cycles is not None:
            if "episode_length" in overrides and overrides["episode_length"] != max_cycles:
                raise ValueError(f"max_cycles={max_cycles!r} and episode_length={overrides['episode_length']!r} "
                                 "disagree; max_cycles is an alias of episode_length, give one of them")
            overrides["episode_length"] = max_cycles
        base = config or EVConfig()
        self.config = config = base.replace(**overrides) if overrides else base
        self.render_mode = config.render_mode
        self.core = EVChargingCore(config, tables)
        n, k = config.n_agents, config.ports
        self.possible_agents = [f"{self.agent_prefix}_{i}" for i in range(n)]
        self.agent_name_mapping = {a: i for i, a in enumerate(self.possible_agents)}
        self.agents: list[str] = []
        low, high = observation_bounds(self.core)
        self._observation_space = spaces.Box(low, high, dtype=np.float32)
        self._action_space = spaces.Box(0.0, 1.0, shape=(k,), dtype=np.float32)
        self.state_space = spaces.Box(np.tile(low, n), np.tile(high, n), dtype=np.float32)
        self._clip_counts = np.zeros(n, dtype=np.int64)
        self._last_obs = self.core.observe()
        self._last_line = ""

    def reset(self, seed: int | None = None, options: Mapping[str, Any] | None = None):
        """Options: ``start_day`` (int day index) and ``multipliers`` ({"lambda": ..., "nu": ...})."""
        options = dict(options or {})
        obs = self.core.reset(seed=seed, start_day=options.get("start_day"))
        if options.get("multipliers"):
            m = options["multipliers"]
            self.core.set_multipliers(lam=m.get("lambda"), nu=m.get("nu"))
            obs = self.core.observe()
        self.agents = list(self.possible_agents)
        self._clip_counts[:] = 0
        self._last_obs = obs
        core, n = self.core, self.config.n_agents
        zeros = [0.0] * n
        cols = zip(zeros, zeros, zeros, [0] * n, zeros, zeros, [core.price_at(0)] * n, [core.limit_at(0) / n] * n,
                   core.lam.tolist(), core.nu.tolist(), zeros, [False] * n, [0] * n)
        infos = {a: dict(zip(INFO_KEYS, row)) for a, row in zip(self.agents, cols)}
        self._last_line = f"day {core.start_day} hour 0: reset, limit {core.limit_at(0):.1f} kWh"
        if self.render_mode == "human":
            print(self._last_line)
        return dict(zip(self.agents, obs)), infos

    def step(self, actions: Mapping[str, Any]):
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        out = self._step_core(self._stack(actions))
        self._clip_counts += out.clipped
        s, n = out.signals, len(self.agents)
        load = s.load.tolist()
        cols = zip(load, load, s.unmet.tolist(), s.departed.tolist(), s.r0.tolist(), s.r2.tolist(), [s.price] * n,
                   [s.share] * n, self.core.lam.tolist(), self.core.nu.tolist(), out.lagrangian.tolist(),
                   out.clipped.tolist(), self._clip_counts.tolist())
        agents = self.agents
        infos = {a: dict(zip(INFO_KEYS, row)) for a, row in zip(agents, cols)}
        obs = dict(zip(agents, out.obs))
        rewards = dict(zip(agents, out.reward.tolist()))
        terminations = dict.fromkeys(agents, False)
        truncations = dict.fromkeys(agents, out.truncated)
        self._last_obs = out.obs
        total = float(s.load.sum())
        self._last_line = (f"day {self.core.start_day} hour {self.core.t}: load {total:.1f} / limit "
                           f"{s.share * n:.1f} kWh, price {s.price:.3f} EUR/kWh, unmet {float(s.unmet.sum()):.1f} kWh")
        if out.truncated:
            self.agents = []
        if self.render_mode == "human":
            print(self._last_line)
        return obs, rewards, terminations, truncations, infos

    def _stack(self, actions: Mapping[str, Any]) -> np.ndarray:
        if not isinstance(actions, Mapping):
            raise ValueError(f"actions must be a dict agent -> {self.config.ports} port fractions, "
                             f"got {type(actions).__name__}")
        missing = [a for a in self.agents if a not in actions]
        extra = [a for a in actions if a not in self.agent_name_mapping]
        if missing or extra or len(actions) != len(self.agents):
            raise ValueError(f"actions must cover exactly the live agents; missing {missing}, unknown {extra}")
        k = self.config.ports
        for a in self.agents:
            shape = np.shape(actions[a]) if not isinstance(actions[a], (str, bytes)) else ()
            if shape != (k,):
                raise ValueError(f"action for agent {a!r} must have shape ({k},) = one fraction per port, got {shape}")
        try:
            return self.core.check_actions([actions[a] for a in self.agents])
        except EVActionTypeError as err:
            raise EVActionTypeError([self.agents[i] for i in err.agents], err.example, k) from None

    def state(self) -> np.ndarray:
        return self._last_obs.ravel().copy()

    def render(self):
        if self.render_mode == "ansi":
            return self._last_line
        return None

    def close(self) -> None:
        pass

    def set_multipliers(self, lam=None, nu=None) -> None:
        self.core.set_multipliers(lam=lam, nu=nu)
        self._last_obs = self.core.observe()

    @property
    def grid_limit(self) -> float:
        return self.core.grid_limit

    @property
    def agent_types(self) -> dict[str, int]:
        return dict(zip(self.possible_agents, self.core.agent_types.tolist()))


def observation_bounds(core: EVChargingCore) -> tuple[np.ndarray, np.ndarray]:
    """Finite float32 (low, high) per observation column: the window's price range over the price scale,
    [-1, 1] for the hour, [0, 1] for the rest (remaining energy <= the largest battery, time to departure <=
    the longest connection time, power <= the charger)."""
    lo, hi = core.window
    prices = core.tables.price_eur_per_kwh[24 * lo:24 * hi]
    bounds = {"price": (min(0.0, float(prices.min()) / core.price_norm), float(prices.max()) / core.price_norm),
              "hour_sin": (-1.0, 1.0), "hour_cos": (-1.0, 1.0)}
    low = np.array([bounds.get(n, (0.0, 1.0))[0] for n in core.layout_names], dtype=np.float32)
    high = np.array([bounds.get(n, (0.0, 1.0))[1] for n in core.layout_names], dtype=np.float32)
    return low, high
