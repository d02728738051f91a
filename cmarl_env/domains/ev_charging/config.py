"""Typed, validated configuration of the EV-charging domain (one-line errors naming the value and what is allowed)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

from cmarl_env.config import MAX_AGENTS, ConfigBase, FieldTypeError, check_int, check_range, check_real

SITE_TYPES = ("private", "public", "workplace")
# the global constraint's variants (EVConfig.limit): "peak" caps every hour at c P, "hourly" at c P profile[hour]
# (both judged by the average hourly overload), "average" bounds the episode's average load by c P (judged by the
# overload of the average); all three by cmarl_env.domains.ev_charging.evaluation
LIMITS = ("peak", "hourly", "average")
SPLITS = ("train", "test", "all")
REWARDS = ("objective", "lagrangian")
MULTIPLIER_MODES = ("fixed", "sampled")
RENDER_MODES = (None, "human", "ansi")
MAX_PORTS = 64
MAX_EPISODE_HOURS = 24 * 3652
# Day indices (day 0 = 2015-01-02, see data.py) of the splits: train on 2023, test on 2024.
FIRST_DAY = dt.date(2015, 1, 2)
N_DAYS = 3652
TRAIN_DAYS = ((dt.date(2023, 1, 1) - FIRST_DAY).days, (dt.date(2024, 1, 1) - FIRST_DAY).days)
TEST_DAYS = ((dt.date(2024, 1, 1) - FIRST_DAY).days, N_DAYS)
# The hourly-limit variant's default profile: a transformer that also feeds homes keeps less headroom for
# charging in the evening (17:00-22:00 local). A stylised shape (not data): give your own with limit_profile.
DEFAULT_HOURLY_PROFILE = (1.0,) * 17 + (0.7,) * 5 + (1.0,) * 2


@dataclass(frozen=True)
class EVConfig(ConfigBase):
    """Everything that defines one EV-charging scenario.

    ``n_agents`` charging sites with ``ports`` ports each; site ``i`` is of
    category ``site_types[i % len(site_types)]`` (its agent type; ElaadNL's
    private / public / workplace distributions). Each port has a charger of
    ``charger_kw``; a car charges at most at min(charger, the car's AC limit).
    ``daily_use`` is the probability that a free port gets a car on a given
    day (at most one new session per port per day, after its last car left).

    The global constraint caps the sites' total charging load in every hour at
    ``constraint_fraction`` x the peak of the aggregate load of uncontrolled
    charging (full power on arrival) on the calibration episode (the config's
    ``start_day`` or the window's first day, with ``seed``); ``limit="hourly"``
    multiplies that cap by ``limit_profile[local hour]``; ``limit="average"``
    bounds the episode's AVERAGE load by ``c x P`` instead (the per-step
    budget and share are the same as with "peak"; only the verdict differs,
    ``ev_charging.evaluation``).

    ``graph``/``graph_params``: the sites' communication graph for Algorithm 1
    (a name of :data:`cmarl_env.graphs.GRAPH_NAMES`, seeded by ``seed``).
    ``unmet_allowance``: the tolerance of the local constraint in Algorithm 1's
    nu step, as a fraction of the energy the departing cars requested: nu reads
    ``unmet - unmet_allowance x requested`` (``EVChargingDomain.dual_local_signal``).
    Unmet energy is never negative, so without an allowance nu could only fall;
    with it, nu rises back (to at most 0) while a site's cars leave with more than
    ``1 - unmet_allowance`` of their energy. The default, half of the verdict's 1 %
    (``ev_charging.evaluation.UNMET_TOLERANCE``), aims inside the feasible side.
    """

    n_agents: int = 10
    ports: int = 4
    site_types: tuple[str, ...] = ("public", "workplace", "private")
    charger_kw: float = 11.0
    daily_use: float = 0.9
    constraint_fraction: float = 0.5
    limit: str = "peak"
    limit_profile: tuple[float, ...] | None = None
    episode_length: int = 168
    split: str = "train"
    window: tuple[int, int] | None = None
    start_day: int | None = None
    augment: bool = False
    reward: str = "objective"
    multiplier_mode: str = "fixed"
    lambda_range: tuple[float, float] = (0.0, 15.0)
    nu_range: tuple[float, float] = (-20.0, 20.0)
    seed: int = 0
    render_mode: str | None = None
    graph: str = "ring"
    graph_params: Mapping[str, Any] = field(default_factory=dict)
    unmet_allowance: float = 0.005

    def __post_init__(self) -> None:
        check_int("n_agents", self.n_agents, 1, MAX_AGENTS)
        check_int("ports", self.ports, 1, MAX_PORTS)
        check_int("episode_length", self.episode_length, 1, MAX_EPISODE_HOURS)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_real("charger_kw", self.charger_kw, 0.0, 350.0, low_open=True)
        check_real("daily_use", self.daily_use, 0.0, 1.0, low_open=True)
        check_real("constraint_fraction", self.constraint_fraction, 0.0, 1.0, low_open=True)
        check_real("unmet_allowance", self.unmet_allowance, 0.0, 1.0)
        if not isinstance(self.graph, str):
            raise FieldTypeError(f"graph={self.graph!r} must be a graph name (str) such as 'ring'")
        from cmarl_env.graphs import GRAPH_NAMES, _normalize_name

        try:
            _normalize_name(self.graph)
        except ValueError:
            raise ValueError(f"graph={self.graph!r} is not a known graph; allowed: {', '.join(GRAPH_NAMES)}") from None
        if not isinstance(self.graph_params, Mapping):
            raise FieldTypeError(f"graph_params={self.graph_params!r} must be a mapping of graph parameters")
        if not isinstance(self.site_types, (tuple, list)) or len(self.site_types) == 0:
            raise FieldTypeError(f"site_types={self.site_types!r} must be a non-empty tuple of site categories "
                                 f"from {SITE_TYPES}")
        for s in self.site_types:
            if s not in SITE_TYPES:
                raise ValueError(f"site_types contains {s!r}; allowed categories: {SITE_TYPES}")
        choices = dict(limit=LIMITS, split=SPLITS, reward=REWARDS, multiplier_mode=MULTIPLIER_MODES)
        for name, allowed in choices.items():
            value = getattr(self, name)
            if not isinstance(value, str):
                raise FieldTypeError(f"{name}={value!r} must be a str; choose one of {allowed}")
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not allowed; choose one of {allowed}")
        if self.render_mode is not None and not isinstance(self.render_mode, str):
            raise FieldTypeError(f"render_mode={self.render_mode!r} must be None or a str; choose one of {RENDER_MODES}")
        if self.render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode={self.render_mode!r} is not allowed; choose one of {RENDER_MODES}")
        if not isinstance(self.augment, bool):
            raise FieldTypeError(f"augment={self.augment!r} must be a bool (True or False)")
        if self.multiplier_mode == "sampled" and not self.augment:
            raise ValueError("multiplier_mode='sampled' needs augment=True: a policy cannot see multipliers it is not given")
        check_range("lambda_range", self.lambda_range, lower=0.0)
        check_range("nu_range", self.nu_range)
        if self.limit_profile is not None:
            if not isinstance(self.limit_profile, (tuple, list)) or len(self.limit_profile) != 24:
                raise ValueError(f"limit_profile={self.limit_profile!r} must be 24 numbers (one per local hour) in (0, 1]")
            for v in self.limit_profile:
                check_real("limit_profile[...]", v, 0.0, 1.0, low_open=True)
            if self.limit != "hourly":
                raise ValueError(f"limit_profile is only allowed with limit='hourly' (got limit={self.limit!r})")
        if self.window is not None:
            if (not isinstance(self.window, (tuple, list)) or len(self.window) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in self.window)):
                raise FieldTypeError(f"window={self.window!r} must be a pair of day indices (first_day, end_day)")
            if not 0 <= self.window[0] < self.window[1] <= N_DAYS:
                raise ValueError(f"window={self.window!r} must satisfy 0 <= first_day < end_day <= {N_DAYS} "
                                 f"(day 0 = {FIRST_DAY})")
        if self.start_day is not None:
            check_int("start_day", self.start_day, 0, N_DAYS - 1)
        check_day_fits(self.start_day, self.episode_length, self.day_window)

    @property
    def day_window(self) -> tuple[int, int]:
        """Days [first, end) the scenario draws from."""
        if self.window is not None:
            return int(self.window[0]), int(self.window[1])
        return {"train": TRAIN_DAYS, "test": TEST_DAYS, "all": (0, N_DAYS)}[self.split]

    @property
    def profile(self) -> tuple[float, ...]:
        """The 24 multipliers of the hourly limit (all 1 for ``limit='peak'`` and ``'average'``)."""
        if self.limit != "hourly":
            return (1.0,) * 24
        return tuple(float(v) for v in (self.limit_profile or DEFAULT_HOURLY_PROFILE))


def check_day_fits(start_day: int | None, hours: int, window: tuple[int, int]) -> None:
    """An episode of ``hours`` from local midnight of ``start_day`` must stay inside the day window."""
    lo, hi = window
    if start_day is not None and not lo <= start_day < hi:
        raise ValueError(f"start_day={start_day} is outside the day window [{lo}, {hi}); allowed: {lo} <= start_day < {hi}")
    days = -(-hours // 24)
    if days > hi - lo:
        raise ValueError(f"episode_length={hours} hours ({days} days) does not fit in the day window [{lo}, {hi}) "
                         f"of {hi - lo} days; allowed: episode_length <= {24 * (hi - lo)}")
    if start_day is not None and start_day + days > hi:
        raise ValueError(f"start_day={start_day} + {days} days of episode runs past the end of the day window "
                         f"[{lo}, {hi}); allowed: start_day <= {hi - days}")
