"""Vectorized EV-charging core: N sites x K ports stepped with array operations only (no per-agent loop).

Per port (flattened to N*K arrays) the core keeps the current or next car's
arrival and departure time, its requested energy, its power limit, the energy
still to deliver and the energy delivered. One step is one hour ``[t, t+1)``
of the episode (local time from the first day's midnight)::

    connected fraction  f = clip(min(dep, t+1) - max(arr, t), 0, 1)
    delivered energy    e = min(a * p_max * f, remaining)        a in [0, 1] per port
    remaining          -= e
    site load           g_i = sum over its ports of e            (global constraint signal)
    unmet energy        u_i = remaining of the cars leaving in the hour (dep <= t+1)
    objective           r0_i = -price_t * g_i                    (EUR)

so for every car ``delivered + unmet = requested`` (energy balance), the power
never exceeds min(charger, car) and a car only charges while it is there.
The action of a port is the fraction of the maximum power it offers during the
hour, to the car connected in that hour (a car arriving during the hour is
charged at that fraction from its arrival). The cars of hour t, including those
arriving during it, are known when the hour's actions are chosen (announced
arrivals, e.g. by booking); later cars are not. Out-of-range actions are
clipped and counted; NaN or infinite actions raise naming the sites.

The global constraint (per hour t): ``sum_i g_i <= L_t = c * P * profile[hour
of day]`` where ``P`` is the peak of the aggregate load of uncontrolled
charging (every port at full power, a = 1) on the calibration episode (the
config's start day, or the window's first day, with the config's seed; fixed
for the core's lifetime, like the demand-response grid limit). Each site's
share is ``L_t / N``. The local constraint: the unmet energy ``u_i``,
to be zero on average. Observations (float32, per site): the hour's price over
the window's largest absolute price, the hour of day as sin/cos, a weekend
flag, then per port: the plugged fraction f of the hour (0 without a car),
remaining energy / 77 kWh (the largest battery), the connected hours left
(from arrival or the hour's start to departure) / 72 h (the longest ElaadNL
stay) and the power limit / charger power; with ``augment=True`` the
multipliers (lambda, nu) normalised by their ranges.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cmarl_env.config import FieldTypeError, check_int
from cmarl_env.domains.ev_charging.config import EVConfig, check_day_fits
from cmarl_env.domains.ev_charging.data import CATEGORIES, EVTables, load_tables
from cmarl_env.domains.ev_charging.sessions import Draw, SessionSampler, Sessions, concat_draws

SITE_FEATURES = ("price", "hour_sin", "hour_cos", "weekend")
PORT_FEATURES = ("plugged", "energy", "time_left", "power")
MULTIPLIER_FEATURES = ("lambda", "nu")
TIME_NORM_H = 72.0  # the longest ElaadNL connection time
EPS_KWH = 1e-9  # 1 microwatt-hour: remainders below it are rounding, not unmet energy


def observation_layout(ports: int, augment: bool) -> tuple[str, ...]:
    names = SITE_FEATURES + tuple(f"port{k}_{f}" for k in range(ports) for f in PORT_FEATURES)
    return names + (MULTIPLIER_FEATURES if augment else ())


class EVActionTypeError(FieldTypeError):
    """Actions that are not real numbers; ``agents`` holds the offending site indices (or names)."""

    def __init__(self, agents: list, example: object, ports: int):
        self.agents, self.example, self.ports = agents, example, ports
        super().__init__(f"actions of site(s) {agents} are not real numbers (e.g. {example!r}); actions must be "
                         f"finite real numbers, (N, {ports}) = (sites, ports) in [0, 1]")


class NonFiniteActionError(ValueError):
    """An action held NaN or an infinity; ``agents`` holds the offending site indices."""

    def __init__(self, agents: list[int]):
        self.agents = agents
        super().__init__(f"non-finite (NaN or infinite) action for site index(es) {agents}; "
                         "actions must be finite numbers in [0, 1]")


class EVSignals(NamedTuple):
    """Per-site signals of one hour, arrays of shape (N,) (``price`` and ``share`` are scalars)."""

    load: np.ndarray       # kWh charged in the hour: the global-constraint signal
    unmet: np.ndarray      # kWh requested but not delivered by the cars that left in the hour (local signal)
    departed: np.ndarray   # cars that left in the hour
    r0: np.ndarray         # -price * load [EUR]
    r2: np.ndarray         # = unmet (the local-constraint signal, as r2 of demand response: > 0 is bad)
    price: float           # EUR/kWh
    share: float           # this hour's limit / N [kWh]
    requested: np.ndarray  # kWh the cars that left in the hour had requested (unmet <= requested)

    @property
    def cost(self) -> np.ndarray:
        """Safety-gymnasium style cost: the global-constraint signal."""
        return self.load


class EVCoreStep(NamedTuple):
    obs: np.ndarray
    signals: EVSignals
    reward: np.ndarray
    lagrangian: np.ndarray
    clipped: np.ndarray
    truncated: bool


class PortState:
    """The cars at the ports of one episode and their charging; used by the core and by the calibration."""

    def __init__(self, sampler: SessionSampler, n_ports: int, key: int, first_day: int, record: bool = False):
        self.sampler, self.first_day, self.record = sampler, int(first_day), record
        self.rng = np.random.default_rng([int(key), 0x5E55])
        ports = np.arange(n_ports)
        d = sampler.draw(self.rng, ports, np.zeros(n_ports, dtype=np.int64), self.first_day)
        # copies: the recorded draw must not change when the ports' arrays are updated in place
        self.arr, self.dep, self.req, self.pmax = (x.copy() for x in (d.arrival, d.departure, d.requested, d.power))
        self.rem = d.requested.copy()
        self.delivered = np.zeros(n_ports)
        self.draws: list[tuple[np.ndarray, Draw]] = [(ports, d)] if record else []
        # (ports, requested, delivered, unmet) of the cars that left, when recording
        self.finished: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def charge(self, a: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hour t with port actions ``a`` (flat, in [0, 1]): energy per port, unmet per port, departing mask."""
        f = np.minimum(self.dep, t + 1.0)
        f -= np.maximum(self.arr, float(t))
        np.clip(f, 0.0, 1.0, out=f)
        e = f
        e *= self.pmax
        e *= a
        np.minimum(e, self.rem, out=e)
        # a remainder below EPS_KWH (float rounding of power x time) counts as delivered: rem becomes exactly 0
        np.copyto(e, self.rem, where=self.rem - e <= EPS_KWH)
        self.rem -= e
        self.delivered += e
        leaving = self.dep <= t + 1.0
        unmet = np.where(leaving, self.rem, 0.0)
        return e, unmet, leaving

    def advance(self, leaving: np.ndarray) -> None:
        """Cars that left make room for the next sessions of their ports."""
        ports = np.flatnonzero(leaving)
        if ports.size == 0:
            return
        if self.record:
            self.finished.append((ports, self.req[ports].copy(), self.delivered[ports].copy(), self.rem[ports].copy()))
        earliest = np.floor(self.dep[ports] / 24.0).astype(np.int64) + 1
        d = self.sampler.draw(self.rng, ports, earliest, self.first_day)
        self.arr[ports], self.dep[ports], self.req[ports], self.pmax[ports] = d.arrival, d.departure, d.requested, d.power
        self.rem[ports] = d.requested
        self.delivered[ports] = 0.0
        if self.record:
            self.draws.append((ports, d))


class EVChargingCore:
    """N charging sites, each with K ports, under a shared transformer limit; arrays in, arrays out."""

    domain = "ev_charging"  # its adapter to the domain seam: cmarl_env.domains.ev_charging.domain

    def __init__(self, config: EVConfig | None = None, tables: EVTables | None = None):
        self.config = config = config or EVConfig()
        self.tables = tables if tables is not None else load_tables()
        self.n_agents, self.ports = config.n_agents, config.ports
        self.n_ports = self.n_agents * self.ports
        self.window = config.day_window
        cats = np.array([CATEGORIES.index(s) for s in config.site_types], dtype=np.int64)
        self.site_category = cats[np.arange(self.n_agents) % cats.size]
        self.port_category = np.repeat(self.site_category, self.ports)
        self.sampler = SessionSampler(self.tables, self.port_category, config.charger_kw, config.daily_use)
        self.layout_names = observation_layout(self.ports, config.augment)
        self.obs_dim = len(self.layout_names)
        lo, hi = self.window
        self._price = self.tables.price_eur_per_kwh
        window_prices = self._price[24 * lo:24 * hi]
        self.price_norm = max(float(np.abs(window_prices).max()), 1e-9)
        self.energy_norm = float(self.tables.ev_battery_kwh.max())
        self.profile = np.asarray(config.profile, dtype=np.float64)
        self.lambda_range = tuple(map(float, config.lambda_range))
        self.nu_range = tuple(map(float, config.nu_range))
        self._lagrangian_reward = config.reward == "lagrangian"

        # calibration: uncontrolled charging on the config's episode
        self.calibration_day = lo if config.start_day is None else config.start_day
        key = self.episode_key_for(config.seed)
        self.uncontrolled_profile = self.uncontrolled_load(key, self.calibration_day, config.episode_length)
        self.peak_uncontrolled = max(float(self.uncontrolled_profile.max()), 1e-9)
        self.grid_limit = config.constraint_fraction * self.peak_uncontrolled  # the cap where profile = 1

        self.np_random = np.random.default_rng(config.seed)
        self.lam = np.zeros(self.n_agents)
        self.nu = np.zeros(self.n_agents)
        self.record = False
        self.reset(seed=config.seed, start_day=self.calibration_day)

    # ------------------------------------------------------------ sampling
    @staticmethod
    def episode_key_for(seed: int) -> int:
        """The arrival key of ``reset(seed=seed, start_day=...)``: the first draw of ``default_rng(seed)``."""
        return int(np.random.default_rng(seed).integers(2**63))

    def uncontrolled_load(self, key: int, start_day: int, steps: int) -> np.ndarray:
        """(steps,) aggregate load [kWh/h] of charging every car at full power from its arrival."""
        state = PortState(self.sampler, self.n_ports, key, start_day)
        ones = np.ones(self.n_ports)
        out = np.empty(steps)
        for t in range(steps):
            e, _, leaving = state.charge(ones, t)
            out[t] = e.sum()
            state.advance(leaving)
        return out

    def episode_sessions(self, steps: int | None = None, key: int | None = None, start_day: int | None = None) -> Sessions:
        """Every session arriving before the end of the current episode (or of ``key``/``start_day``), in draw order.

        Pure sampling (no charging): the cars a roll-out of this episode meets, for the clairvoyant LP and the tests.
        """
        steps = self.steps if steps is None else steps
        state = PortState(self.sampler, self.n_ports, self.episode_key if key is None else key,
                          self.start_day if start_day is None else start_day, record=True)
        for t in range(steps):
            leaving = state.dep <= t + 1.0
            state.advance(leaving)
        parts = []
        for ports, d in state.draws:
            keep = d.arrival < steps
            parts.append((ports[keep], Draw(*(x[keep] for x in d))))
        return concat_draws(parts)

    # -------------------------------------------------------------- episode
    def reset(self, seed: int | None = None, start_day=None, steps: int | None = None) -> np.ndarray:
        """Start an episode at local midnight of ``start_day`` (random in the window when None and the config has none).

        ``seed`` reseeds the core's generator; the episode's cars come from one
        key drawn from it, so ``reset(seed=s, start_day=d)`` always meets the same cars.
        """
        if seed is not None:
            check_int("seed", seed, 0, 2**63 - 1)
            self.np_random = np.random.default_rng(seed)
        length = self.config.episode_length if steps is None else steps
        check_int("steps", length, 1, 24 * (self.window[1] - self.window[0]))
        lo, hi = self.window
        if start_day is None:
            start_day = self.config.start_day
        if start_day is None:
            check_day_fits(None, length, self.window)
            start_day = int(self.np_random.integers(lo, hi - (-(-length // 24)) + 1))
        if isinstance(start_day, bool) or not hasattr(start_day, "__index__"):
            raise FieldTypeError(f"start_day={start_day!r} must be an integer day index in [{lo}, {hi})")
        check_day_fits(int(start_day), length, self.window)
        self.start_day = int(start_day)
        self.steps = int(length)
        self.episode_key = int(self.np_random.integers(2**63))
        self.state = PortState(self.sampler, self.n_ports, self.episode_key, self.start_day, record=self.record)
        self.t = 0
        if self.config.multiplier_mode == "sampled":
            self.sample_multipliers()
        return self.observe()

    def sample_multipliers(self) -> None:
        self.lam = self.np_random.uniform(*self.lambda_range, size=self.n_agents)
        self.nu = self.np_random.uniform(*self.nu_range, size=self.n_agents)

    def set_multipliers(self, lam=None, nu=None) -> None:
        """Set multipliers (scalar or one per site); values outside the ranges raise naming the sites."""
        for name, value, bounds in (("lambda", lam, self.lambda_range), ("nu", nu, self.nu_range)):
            if value is None:
                continue
            if isinstance(value, (str, bytes, complex)):
                raise FieldTypeError(f"{name}={value!r} must be a real number (or one per site) in {list(bounds)}")
            arr = np.asarray(value)
            if arr.dtype.kind not in "iuf":
                raise FieldTypeError(f"{name}={value!r} must be a real number (or one per site) in {list(bounds)}")
            if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != self.n_agents):
                raise ValueError(f"{name} must be a scalar or have shape ({self.n_agents},), got {arr.shape}")
            arr = np.broadcast_to(arr.astype(np.float64), (self.n_agents,)).copy()
            bad = np.flatnonzero(~np.isfinite(arr) | (arr < bounds[0]) | (arr > bounds[1]))
            if bad.size:
                raise ValueError(f"{name} values must lie in {list(bounds)}; site index(es) {bad[:10].tolist()} "
                                 f"have {arr[bad[:3]].tolist()}")
            if name == "lambda":
                self.lam = arr
            else:
                self.nu = arr

    # ---------------------------------------------------------------- steps
    def price_at(self, t: int) -> float:
        return float(self._price[24 * self.start_day + t])

    def limit_at(self, t: int) -> float:
        """The hour's cap on the total load [kWh]."""
        return float(self.grid_limit * self.profile[t % 24])

    def limits(self, steps: int | None = None) -> np.ndarray:
        steps = self.steps if steps is None else steps
        return self.grid_limit * self.profile[np.arange(steps) % 24]

    def prices(self, steps: int | None = None) -> np.ndarray:
        steps = self.steps if steps is None else steps
        first = 24 * self.start_day
        return self._price[first:first + steps].copy()

    def observe(self) -> np.ndarray:
        """(N, obs_dim) float32; columns follow ``layout_names``."""
        t, s, n, k = self.t, self.state, self.n_agents, self.ports
        obs = np.empty((n, self.obs_dim), dtype=np.float32)
        hour = t % 24
        price = self._price[24 * self.start_day + min(t, self.steps - 1)]  # the final observation repeats the last price
        obs[:, 0] = price / self.price_norm
        obs[:, 1] = np.sin(2 * np.pi * hour / 24)
        obs[:, 2] = np.cos(2 * np.pi * hour / 24)
        obs[:, 3] = float(self.tables.weekday(self.start_day + t // 24) >= 5)
        start = np.maximum(s.arr, float(t))
        plugged = np.clip(np.minimum(s.dep, t + 1.0) - start, 0.0, 1.0)
        here = plugged > 0
        ports = obs[:, 4:4 + 4 * k].reshape(n, k, 4)
        ports[:, :, 0] = plugged.reshape(n, k)
        ports[:, :, 1] = np.where(here, s.rem, 0.0).reshape(n, k) / self.energy_norm
        ports[:, :, 2] = np.where(here, s.dep - start, 0.0).reshape(n, k) / TIME_NORM_H
        ports[:, :, 3] = np.where(here, s.pmax, 0.0).reshape(n, k) / self.config.charger_kw
        if self.config.augment:
            obs[:, -2] = (self.lam - self.lambda_range[0]) / (self.lambda_range[1] - self.lambda_range[0])
            obs[:, -1] = (self.nu - self.nu_range[0]) / (self.nu_range[1] - self.nu_range[0])
        return obs

    def step(self, actions) -> EVCoreStep:
        """Apply (N, K) port actions in [0, 1] (clipped outside, counted in ``clipped``)."""
        a = self.check_actions(actions)
        finite = np.isfinite(a)
        if not finite.all():
            raise NonFiniteActionError(np.flatnonzero(~finite.all(axis=1))[:10].tolist())
        if self.t >= self.steps:
            raise ValueError(f"step {self.t} is past the end of the episode of {self.steps} hours from "
                             f"start_day={self.start_day}; reset() first")
        clipped = ((a < 0.0) | (a > 1.0)).any(axis=1)
        a = np.clip(a, 0.0, 1.0).ravel()
        n, k, t = self.n_agents, self.ports, self.t
        e, unmet_port, leaving = self.state.charge(a, t)
        load = e.reshape(n, k).sum(axis=1)
        unmet = unmet_port.reshape(n, k).sum(axis=1)
        departed = leaving.reshape(n, k).sum(axis=1)
        requested = np.where(leaving, self.state.req, 0.0).reshape(n, k).sum(axis=1)
        self.state.advance(leaving)
        price = self.price_at(t)
        share = self.limit_at(t) / n
        r0 = -price * load
        lagrangian = r0 + self.lam * (share - load) + self.nu * unmet
        sig = EVSignals(load, unmet, departed, r0, unmet, price, share, requested)
        self.t += 1
        obs = self.observe()
        reward = lagrangian if self._lagrangian_reward else r0
        return EVCoreStep(obs, sig, reward, lagrangian, clipped, self.t >= self.steps)

    def check_actions(self, actions) -> np.ndarray:
        """(N, K) float64 actions; wrong shapes raise ``ValueError``, non-numbers ``EVActionTypeError``."""
        shape = (self.n_agents, self.ports)
        if isinstance(actions, np.ndarray) and actions.dtype.kind in "biuf":
            raw = actions
        else:
            try:
                raw = np.asarray(actions)
            except ValueError:
                raise ValueError(f"actions must have shape {shape} = (sites, ports); got a ragged "
                                 f"{type(actions).__name__}") from None
        if raw.shape != shape:
            raise ValueError(f"actions must have shape {shape} = (sites, ports), got {raw.shape}")
        if raw.dtype.kind in "biuf":
            return np.ascontiguousarray(raw, dtype=np.float64)
        obj = np.array(actions, dtype=object) if raw.dtype.kind != "O" else raw
        bad, example = [], None
        out = np.empty(shape)
        for i in range(shape[0]):
            for j in range(shape[1]):
                v = obj[i, j]
                if isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
                    try:
                        out[i, j] = float(v)
                    except OverflowError:
                        out[i, j] = np.inf if v > 0 else -np.inf
                else:
                    example = v if example is None else example
                    bad.append(i)
        if bad:
            raise EVActionTypeError(sorted(set(bad))[:10], example, self.ports)
        return out

    # ----------------------------------------------------------------- facts
    @property
    def agent_types(self) -> np.ndarray:
        """Site category index into ``config.site_types``' distinct categories (sites of a category share a type)."""
        return np.unique(self.site_category, return_inverse=True)[1]

    def port_view(self):
        """The port arrays of the current episode (read them, do not write): arr, dep, req, rem, pmax, delivered."""
        return self.state

    def state_vector(self) -> np.ndarray:
        return self.observe().ravel()

    def describe(self) -> dict:
        c = self.config
        return {
            "domain": "ev_charging",
            "n_agents": self.n_agents,
            "ports": self.ports,
            "site_types": list(c.site_types),
            "window_days": list(self.window),
            "start_day": self.start_day,
            "calibration_day": self.calibration_day,
            "episode_length": c.episode_length,
            "peak_uncontrolled_kwh": self.peak_uncontrolled,
            "grid_limit_kwh": self.grid_limit,
            "limit": c.limit,
            "limit_profile": self.profile.tolist(),
            "price_norm_eur_per_kwh": self.price_norm,
            "observation_layout": list(self.layout_names),
        }
