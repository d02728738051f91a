"""State-augmented PPO training of one policy per agent type (paper sections 4.1 and 7).

One agent type (a demand scale: 1.0 "normal", 2.0 "double") is trained as a
single-agent problem on ``num_envs`` independent copies stepped as one array
(``cmarl_env.views.BatchedEnv``), each 80-hour episode starting at a random
hour of the training split with multipliers sampled per episode
(lambda in [0, 15], nu in [-20, 20]; uniformly, or skewed towards what
execution visits: ``multiplier_sampler``) and the Lagrangian reward
``r_L = r0 + lambda * (c/N - e_grid) + nu * r2`` divided by a fixed
``reward_scale`` (recorded in the checkpoint) and, optionally, by the size of
the episode's multipliers (``reward_normalization``), with the ``nu r2`` term
optionally replaced by its potential-shaped holding cost
(``reward_shaping``, same optimal policy).

The shipped policies use the recipe ``algorithms/pretrained/recipe.json``
(skewed multipliers, multipliers fed to the networks in their own units,
both reward transforms, gamma 0.993); the ``TrainConfig`` defaults are the
original paper-style settings, which the fixed-penalty IPPO baseline keeps.

EV charging (``TrainConfig(domain="ev_charging", site_type=...)``; issue 15): one
site category is trained on ``num_envs`` sites of that category stepped as one
array (``cmarl_env.views.EVBatchedEnv``), every 48-hour episode on a random day
of 2023 with new cars and multipliers drawn per site (skewed, nu <= 0), the core's
Lagrangian reward ``r0 + lambda (share - load) + nu unmet``, optionally
potential-shaped with ``Phi = nu x shortfall`` (``reward_shaping="shortfall_potential"``:
unmet energy is charged when it becomes unavoidable, not at the car's departure),
the networks reading each port's minimum rate (``rate_features``) and, with
``imitation_steps``, an actor first fitted to ``MultiplierRate`` (with ``imitation_floor``: to
``max(MultiplierRate, minimum rate)``). EV-only levers: the multipliers drawn inside
``lambda <= lambda_sample_max``, ``nu >= nu_sample_min`` (where Algorithm 1 goes) and unmet energy
priced at ``unmet_value`` x the window's largest price in the reward. The shipped EV
policies use ``algorithms/pretrained/ev/recipe.json`` (docs/ev_charging.md). With the default
``domain="demand_response"`` nothing of this is read: the demand-response path
is the code below, unchanged.

The learner is Tianshou 2.0's own PPO (``tianshou.algorithm.PPO`` with a
``ProbabilisticActorPolicy``), its ``Collector``, ``VectorReplayBuffer`` and
``OnPolicyTrainer``. ``TianshouBatchedEnv`` is the thin adapter that presents
a ``BatchedEnv`` as a Tianshou ``BaseVectorEnv`` (one core step for all
copies, no worker per copy).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from algorithms.policy import (
    ActorNet,
    AugmentedPolicy,
    agent_type_name,
    build_metadata,
    input_features,
    multiplier_raw_columns,
    obs_norms,
    save_checkpoint,
)
from cmarl_env.config import DEFAULT_DATASET, ConfigBase, EnvConfig, check_int, check_real
from cmarl_env.core import observation_layout
from cmarl_env.data import BuildingData, load_dataset
from cmarl_env.views import BatchedEnv

try:  # the training stack is an optional extra (cmarl-env[learn])
    from tianshou.algorithm import PPO
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.utils import TensorboardLogger

    from algorithms.vector_env import ArrayVectorEnv
except ModuleNotFoundError as _err:  # pragma: no cover - only without the learn extra
    # a ModuleNotFoundError naming the missing module: ``pytest.importorskip`` skips with this reason, callers
    # can tell a missing extra from a broken installation (any other ImportError propagates as it is)
    raise ModuleNotFoundError(f"algorithms.train needs Tianshou: pip install 'cmarl-env[learn]' "
                              f"(missing module {_err.name!r})", name=_err.name) from _err

CHECKPOINT_NAME = "policy.pt"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
TENSORBOARD_DIR = "tensorboard"
SIGNALS = ("lagrangian_reward", "r0", "e_grid", "r2", "e_bat", "backlog")
MULTIPLIER_SAMPLING = ("uniform", "skewed")
REWARD_NORMALIZATION = ("fixed", "multipliers")
REWARD_SHAPING = ("none", "backlog_potential", "shortfall_potential")
DOMAINS = ("demand_response", "ev_charging")
# TrainConfig fields that only the EV-charging domain reads (left out of a demand-response config's to_dict)
EV_FIELDS = ("domain", "site_type", "ports", "imitation_steps", "rate_features", "lambda_sample_max", "nu_sample_min",
             "unmet_value", "imitation_floor")
EV_DATASET = "elaadnl"  # what an EV checkpoint records as its dataset (the ElaadNL tables of cmarl_env.domains.ev_charging)


def multiplier_sampler(config: "TrainConfig"):
    """The per-episode draw of (lambda, nu) for training copies, or None for the core's uniform draw.

    ``"uniform"``: the core's own draw, uniform over lambda in [0, 15] and nu in [-20, 20].
    ``"skewed"``: what Algorithm 1 visits. Execution keeps lambda small unless the
    constraint binds hard, and nu = -eta x backlog <= 0, so with probability
    ``1 - wide_fraction`` an episode draws ``lambda = lam_max u^k`` and ``nu = nu_min v^k``
    (``u, v`` uniform, ``k = multiplier_power``: dense near 0, where the price, 0.21-0.54,
    is of the same size as the multipliers and has to be learnt), otherwise uniformly
    over the full ranges (so every observable pair stays covered).
    """
    if config.multiplier_sampling == "uniform":
        return None
    power, wide = float(config.multiplier_power), float(config.wide_fraction)
    one_sided = config.domain == "ev_charging"  # EV's local constraint is an inequality: Algorithm 1 keeps nu <= 0
    # EV only: the draws can be confined to the part of the ranges Algorithm 1 visits (None = the full ranges)
    lam_cap = config.lambda_sample_max if one_sided else None
    nu_floor = config.nu_sample_min if one_sided else None

    def sample(rng: np.random.Generator, n: int, lambda_range, nu_range) -> tuple[np.ndarray, np.ndarray]:
        lam_lo, lam_hi = lambda_range
        nu_lo, nu_hi = nu_range
        if lam_cap is not None:
            lam_hi = min(lam_hi, lam_cap)
        if nu_floor is not None:
            nu_lo = max(nu_lo, nu_floor)
        lam = lam_lo + (lam_hi - lam_lo) * rng.uniform(size=n) ** power
        nu = min(nu_hi, 0.0) + (nu_lo - min(nu_hi, 0.0)) * rng.uniform(size=n) ** power
        broad = rng.uniform(size=n) < wide
        lam[broad] = rng.uniform(lam_lo, lam_hi, size=int(broad.sum()))
        nu[broad] = rng.uniform(nu_lo, min(nu_hi, 0.0) if one_sided else nu_hi, size=int(broad.sum()))
        return lam, nu

    return sample


# ------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """Everything that defines one training run (validated on construction).

    The defaults are the original settings (uniform multipliers, gamma 0.9,
    the plain reward), which the fixed-penalty IPPO baseline trains with; the
    shipped policies override some of them with ``algorithms/pretrained/recipe.json``
    (see ``algorithms/pretrained/README.md``). ``multiplier_sampling``,
    ``multiplier_power`` and ``wide_fraction`` choose the per-episode draw of
    the multipliers (``multiplier_sampler``); ``raw_multipliers`` feeds them to
    the networks in their own units (``algorithms.policy.multiplier_raw_columns``);
    ``reward_normalization="multipliers"`` and
    ``reward_shaping="backlog_potential"`` are the reward transforms of
    ``TianshouBatchedEnv``. ``total_steps`` counts transitions
    of all copies together; an epoch ends with a deterministic evaluation on
    ``eval_episodes`` fixed episodes (Tianshou's test step). ``reward_scale``
    None means 10 x ``demand_scale``. ``buildings`` restricts the copies to those buildings of the dataset
    (None: all, cycled; the faithful IPPO trains agent i on its own building). ``init_backlog_hours`` and ``random_soc``
    set the exploring starts (see ``TianshouBatchedEnv``); ``mean_bound`` and
    ``min_log_std`` shape the Gaussian actor (see ``ActorNet``);
    ``num_threads`` is torch's CPU thread count during training.
    """

    demand_scale: float = 1.0
    num_envs: int = 256
    total_steps: int = 3_000_000
    epochs: int = 10
    rollout_steps: int = 80
    lr: float = 1e-3
    lr_decay: bool = True
    gamma: float = 0.9
    gae_lambda: float = 0.95
    hidden_sizes: tuple[int, ...] = (64, 64)
    batch_size: int = 2048
    update_repeats: int = 8
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    init_log_std: float = -0.5
    mean_bound: float = 1.5
    min_log_std: float = -1.6
    reward_scale: float | None = None
    constraint_fraction: float = 0.27
    episode_length: int = 80
    init_backlog_hours: float = 200.0
    random_soc: bool = True
    fixed_multipliers: tuple[float, float] | None = None
    multiplier_sampling: str = "uniform"
    multiplier_power: float = 3.0
    wide_fraction: float = 0.2
    raw_multipliers: bool = False
    reward_normalization: str = "fixed"
    reward_shaping: str = "none"
    return_scaling: bool = False
    eval_episodes: int = 64
    dataset: str = DEFAULT_DATASET
    buildings: tuple[int, ...] | None = None
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 1
    out_dir: str = "runs/train"
    # the domain whose agent type is trained: "demand_response" (the paper's; every field above) or "ev_charging"
    # (one site category ``site_type`` with ``ports`` ports; see ``ev_env_config``)
    domain: str = "demand_response"
    site_type: str = "public"
    ports: int = 4
    # EV only: before PPO, fit the actor's mean to the hand-written MultiplierRate policy on this many minibatches
    # (imitation warm start, ``imitate_multiplier_rate``); 0 = PPO from a random actor
    imitation_steps: int = 0
    # EV only: the networks also read each port's minimum rate (algorithms.policy.ev_minimum_rates)
    rate_features: bool = True
    # EV only: the training draw of the multipliers (``multiplier_sampler``) stays in lambda <= lambda_sample_max and
    # nu >= nu_sample_min (None: the core's full ranges); the networks still read them on the full ranges
    lambda_sample_max: float | None = None
    nu_sample_min: float | None = None
    # EV only: unmet energy also costs unmet_value x the training window's largest absolute price per kWh in the
    # reward (the evaluation's total cost values it at the horizon's highest price), so that a policy delivers
    # even at nu = 0, where Algorithm 1 starts; 0 = the plain Lagrangian. Needs reward_shaping="shortfall_potential"
    # (the value enters its potential too: Phi = (nu - unmet_value x price_norm) x shortfall)
    unmet_value: float = 0.0
    # EV only: the imitation teacher charges every port at least at its minimum rate (max(MultiplierRate, min rate):
    # a car charged at its minimum rate leaves with its energy), so the warm start never plans unmet energy
    imitation_floor: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.domain, str) or self.domain not in DOMAINS:
            raise ValueError(f"domain={self.domain!r} is not allowed; choose one of {list(DOMAINS)}")
        from cmarl_env.domains.ev_charging.config import MAX_PORTS, SITE_TYPES

        if self.site_type not in SITE_TYPES:
            raise ValueError(f"site_type={self.site_type!r} is not an EV site category; allowed: {list(SITE_TYPES)}")
        check_int("ports", self.ports, 1, MAX_PORTS)
        check_int("imitation_steps", self.imitation_steps, 0, 10**7)
        if not isinstance(self.rate_features, bool):
            raise ValueError(f"rate_features={self.rate_features!r} must be a bool")
        if self.lambda_sample_max is not None:
            check_real("lambda_sample_max", self.lambda_sample_max, 0.0, 15.0, low_open=True)
        if self.nu_sample_min is not None:
            check_real("nu_sample_min", self.nu_sample_min, -20.0, 0.0)
        check_real("unmet_value", self.unmet_value, 0.0, 100.0)
        if not isinstance(self.imitation_floor, bool):
            raise ValueError(f"imitation_floor={self.imitation_floor!r} must be a bool")
        if self.unmet_value and self.reward_shaping != "shortfall_potential":
            raise ValueError(f"unmet_value={self.unmet_value!r} needs reward_shaping='shortfall_potential' "
                             f"(domain 'ev_charging'), got reward_shaping={self.reward_shaping!r}; or set 0")
        for name in ("lambda_sample_max", "nu_sample_min", "imitation_floor"):
            if getattr(self, name) not in (None, False) and not self.is_ev:
                raise ValueError(f"{name}={getattr(self, name)!r} is for domain 'ev_charging' only; "
                                 f"with domain={self.domain!r} allowed: {False if name == 'imitation_floor' else None}")
        if self.imitation_steps and not self.is_ev:
            raise ValueError(f"imitation_steps={self.imitation_steps!r} is for domain 'ev_charging' only; "
                             f"with domain={self.domain!r} allowed: 0")
        check_real("demand_scale", self.demand_scale, 0.0, 1000.0, low_open=True)
        check_int("num_envs", self.num_envs, 1, 1_000_000)
        check_int("total_steps", self.total_steps, 1, 10**10)
        check_int("epochs", self.epochs, 1, 100_000)
        check_int("rollout_steps", self.rollout_steps, 1, 100_000)
        check_real("lr", self.lr, 0.0, 1.0, low_open=True)
        if not isinstance(self.lr_decay, bool):
            raise ValueError(f"lr_decay={self.lr_decay!r} must be a bool")
        check_real("gamma", self.gamma, 0.0, 1.0)
        check_real("gae_lambda", self.gae_lambda, 0.0, 1.0)
        if not isinstance(self.hidden_sizes, (tuple, list)) or len(self.hidden_sizes) == 0:
            raise ValueError(f"hidden_sizes={self.hidden_sizes!r} must be a non-empty sequence of ints in [1, 4096]")
        for h in self.hidden_sizes:
            check_int("hidden_sizes[...]", h, 1, 4096)
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        check_int("batch_size", self.batch_size, 1, 10**8)
        check_int("update_repeats", self.update_repeats, 1, 1000)
        check_real("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True)
        check_real("ent_coef", self.ent_coef, 0.0, 1.0)
        check_real("vf_coef", self.vf_coef, 0.0, 100.0)
        check_real("max_grad_norm", self.max_grad_norm, 0.0, 1e6, low_open=True)
        check_real("init_log_std", self.init_log_std, -5.0, 1.0)
        check_real("mean_bound", self.mean_bound, 1.0, 10.0)
        check_real("min_log_std", self.min_log_std, -10.0, 1.0)
        if self.init_log_std < self.min_log_std:
            raise ValueError(f"init_log_std={self.init_log_std!r} is out of range; allowed: [min_log_std={self.min_log_std}, 1.0]")
        if self.reward_scale is not None:
            check_real("reward_scale", self.reward_scale, 0.0, 1e9, low_open=True)
        check_real("constraint_fraction", self.constraint_fraction, 0.0, 1.0, low_open=True)
        check_int("episode_length", self.episode_length, 1, 10**6)
        check_real("init_backlog_hours", self.init_backlog_hours, 0.0, 10_000.0)
        if self.fixed_multipliers is not None:
            if not isinstance(self.fixed_multipliers, (tuple, list)) or len(self.fixed_multipliers) != 2:
                raise ValueError(f"fixed_multipliers={self.fixed_multipliers!r} must be a pair (lambda, nu) or None")
            check_real("fixed_multipliers[0] (lambda)", self.fixed_multipliers[0], 0.0, 15.0)
            check_real("fixed_multipliers[1] (nu)", self.fixed_multipliers[1], -20.0, 20.0)
            object.__setattr__(self, "fixed_multipliers", tuple(float(v) for v in self.fixed_multipliers))
        if self.multiplier_sampling not in MULTIPLIER_SAMPLING:
            raise ValueError(f"multiplier_sampling={self.multiplier_sampling!r} is not allowed; choose one of "
                             f"{list(MULTIPLIER_SAMPLING)}")
        check_real("multiplier_power", self.multiplier_power, 1.0, 20.0)
        if self.reward_shaping not in REWARD_SHAPING:
            raise ValueError(f"reward_shaping={self.reward_shaping!r} is not allowed; choose one of {list(REWARD_SHAPING)}")
        shaping_domain = {"backlog_potential": "demand_response", "shortfall_potential": "ev_charging"}
        if self.reward_shaping in shaping_domain and shaping_domain[self.reward_shaping] != self.domain:
            raise ValueError(f"reward_shaping={self.reward_shaping!r} is for domain {shaping_domain[self.reward_shaping]!r}; "
                             f"with domain={self.domain!r} choose one of "
                             f"{['none'] + [k for k, d in shaping_domain.items() if d == self.domain]}")
        if self.reward_normalization not in REWARD_NORMALIZATION:
            raise ValueError(f"reward_normalization={self.reward_normalization!r} is not allowed; choose one of "
                             f"{list(REWARD_NORMALIZATION)}")
        check_real("wide_fraction", self.wide_fraction, 0.0, 1.0)
        for name in ("random_soc", "return_scaling", "raw_multipliers"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a bool")
        check_int("eval_episodes", self.eval_episodes, 1, 1_000_000)
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset={self.dataset!r} must be a non-empty dataset name or schema path (str)")
        if self.buildings is not None:
            if not isinstance(self.buildings, (tuple, list)) or not self.buildings:
                raise ValueError(f"buildings={self.buildings!r} must be a non-empty sequence of building indices or None")
            for b in self.buildings:
                check_int("buildings[...]", b, 0, 10**6)
            object.__setattr__(self, "buildings", tuple(int(b) for b in self.buildings))
        check_int("seed", self.seed, 0, 2**32 - 1)
        if self.device != "cpu" and not str(self.device).startswith("cuda"):
            raise ValueError(f"device={self.device!r} is not allowed; choose 'cpu' or 'cuda[:k]'")
        check_int("num_threads", self.num_threads, 1, 1024)
        if not isinstance(self.out_dir, (str, os.PathLike)) or not str(self.out_dir):
            raise ValueError(f"out_dir={self.out_dir!r} must be a non-empty path")

    # derived values
    @property
    def resolved_reward_scale(self) -> float:
        """The fixed divisor of r_L: ``reward_scale`` or, by default, 10 x the demand scale (EV: 1)."""
        if self.reward_scale is not None:
            return float(self.reward_scale)
        return 1.0 if self.is_ev else 10.0 * float(self.demand_scale)

    @property
    def is_ev(self) -> bool:
        return self.domain == "ev_charging"

    @property
    def agent_type(self) -> str:
        """The trained agent type's name: ``normal``/``double``/``scale_x`` (demand response) or the site category."""
        return self.site_type if self.is_ev else agent_type_name(self.demand_scale)

    @property
    def collect_steps(self) -> int:
        """Transitions gathered per PPO iteration (all copies)."""
        return self.num_envs * self.rollout_steps

    @property
    def epoch_steps(self) -> int:
        """Env steps per epoch, a multiple of ``collect_steps`` (at least one iteration per epoch)."""
        per_epoch = math.ceil(self.total_steps / self.epochs)
        return max(1, math.ceil(per_epoch / self.collect_steps)) * self.collect_steps

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["out_dir"] = str(self.out_dir)
        if not self.is_ev:  # a demand-response config reads as before the EV fields existed
            for k in EV_FIELDS:
                out.pop(k)
        return out

    @property
    def augmented(self) -> bool:
        """State-augmented training (multipliers sampled per episode and observed) unless multipliers are fixed."""
        return self.fixed_multipliers is None

    def env_config(self) -> EnvConfig:
        """The environment config of training: augmented, sampled multipliers, Lagrangian reward, train split.

        With ``fixed_multipliers`` (the fixed-penalty IPPO baseline of the paper's
        grid search) the observation is not augmented and the multipliers stay fixed.
        """
        if self.is_ev:
            return self.ev_env_config()
        return EnvConfig(
            dataset=self.dataset,
            augment=self.augmented,
            multiplier_mode="sampled" if self.augmented else "fixed",
            reward="lagrangian",
            episode_length=self.episode_length,
            split="train",
            constraint_fraction=self.constraint_fraction,
            buildings=self.buildings,
            seed=self.seed,
        )


    def ev_env_config(self):
        """The EV training scenario: sites of ``site_type`` with ``ports`` ports, augmented, multipliers sampled per
        episode, the core's Lagrangian reward ``r0 + lambda (share - load) + nu unmet``, random days of the training
        split (2023), the cap ``constraint_fraction`` x the copies' uncontrolled peak (it only shifts r_L by a
        constant per episode)."""
        from cmarl_env.domains.ev_charging.config import EVConfig

        return EVConfig(n_agents=1, ports=self.ports, site_types=(self.site_type,), augment=self.augmented,
                        multiplier_mode="sampled" if self.augmented else "fixed", reward="lagrangian",
                        episode_length=self.episode_length, split="train",
                        constraint_fraction=self.constraint_fraction, seed=self.seed)


# ------------------------------------------------------------------ adapter
def _step_signal(infos: dict[str, Any], truncated: bool, key: str) -> np.ndarray:
    """A signal of the step just taken: from ``infos``, or from the finished episodes' ``final_info`` on a reset step."""
    if not truncated:
        return np.asarray(infos[key], dtype=np.float64)
    final = infos["final_info"]
    if isinstance(final, dict):
        return np.asarray(final[key], dtype=np.float64)
    return np.array([row[key] for row in final], dtype=np.float64)


class TianshouBatchedEnv(ArrayVectorEnv):
    """A ``BatchedEnv`` presented as a Tianshou ``BaseVectorEnv``: one core step for all copies.

    Tianshou's vector envs hold one worker per environment; here all copies
    live in one vectorized core, so there are no workers and ``step`` is a
    single array operation. Semantics Tianshou's ``Collector`` relies on:

    * ``step(action, id)`` returns the rows of ``id``. Copies outside ``id``
      (the Collector parks surplus envs when it collects a fixed number of
      episodes) are stepped with a neutral action and their results dropped;
      they are always fully reset before their next use.
    * On truncation (all copies end together) ``step`` returns the final
      observation as ``obs_next`` (so PPO bootstraps from it) and keeps the
      reset observation that ``BatchedEnv`` produced; the Collector's following
      ``reset(env_id=...)`` returns it. Any other reset resets all copies.
    * Rewards are the Lagrangian reward divided by ``reward_scale``; infos are
      empty (fast) and per-step signal means are accumulated in ``signal_sums``.
    * ``seed``: the first full reset uses it; with ``fixed_seed=True`` every
      full reset does (identical evaluation episodes each time).
    * Exploring starts (training only): with ``init_backlog_hours > 0`` and/or
      ``random_soc`` every episode starts from a random backlog / state of
      charge instead of the core's empty backlog and initial charge.
    * ``sampler`` (``multiplier_sampler``): when given, it redraws every
      episode's multipliers (training and evaluation episodes alike).
    * ``multiplier_scaled``: every episode's rewards are also divided by
      ``(price_norm + lambda + |nu|) / price_norm`` (constant within the episode).
    * ``shaping_gamma``: potential-based shaping (Ng, Harada & Russell 1999)
      with the potential ``Phi(s) = -nu B`` and this discount: the term
      ``nu r2 = nu (B' - B)`` of r_L becomes ``(1 - gamma) nu B'``, a holding
      cost of the backlog. The discounted return changes by ``nu B_0`` only
      (the start state's potential), so every episode has the same optimal
      policy, but the per-step reward no longer swings by ``|nu| x`` the
      backlog served or postponed in an hour (hundreds, against a price of
      0.21-0.54 per kWh), which otherwise drowns the price in the critic's
      error and the advantages.
    """

    def __init__(
        self,
        env: BatchedEnv,
        reward_scale: float = 1.0,
        seed: int | None = None,
        fixed_seed: bool = False,
        init_backlog_hours: float = 0.0,
        random_soc: bool = False,
        sampler=None,
        multiplier_scaled: bool = False,
        shaping_gamma: float | None = None,
        unmet_value: float = 0.0,
    ):
        super().__init__(env.num_envs)
        self.env = env
        self.reward_scale = float(reward_scale)
        self._seed = seed
        self._fixed_seed = bool(fixed_seed)
        self._pending_obs: np.ndarray | None = None
        self._pending_ids: set[int] = set()
        self._neutral = np.zeros((self.env_num, int(env.single_action_space.shape[0])), dtype=np.float64)
        self._empty_infos = np.array([{} for _ in range(self.env_num)], dtype=object)
        self.init_backlog_hours = float(init_backlog_hours)
        self.random_soc = bool(random_soc)
        self.sampler = sampler
        self.multiplier_scaled = bool(multiplier_scaled)
        self.shaping_gamma = None if shaping_gamma is None else float(shaping_gamma)
        self.unmet_value = float(unmet_value)  # EV: EUR per kWh of unmet energy (``_step_shortfall``)
        self._divisor = np.full(env.num_envs, self.reward_scale)
        self._start_rng = np.random.default_rng(seed)
        core = env.core
        self.signal_keys = tuple(getattr(env, "signal_keys", SIGNALS))
        if hasattr(core, "params"):  # demand response: what the exploring starts draw from
            self._min_soc = np.asarray(core.params.minimum_soc, dtype=np.float64)[core.layout.building]
            self._mean_demand = float(np.mean(core.data.demand_kwh[:, core.window[0] : core.window[1]])) * float(
                np.mean(core.layout.scale)
            )
        elif self.init_backlog_hours > 0.0 or self.random_soc:
            raise ValueError("exploring starts (init_backlog_hours > 0, random_soc) exist for demand response only")
        self.reset_signal_sums()

    # gym attributes (action_space, observation_space, ...) are per-copy lists, as Tianshou expects
    def env_attribute(self, key: str) -> Any:
        value = {
            "action_space": self.env.single_action_space,
            "observation_space": self.env.single_observation_space,
            "metadata": getattr(self.env, "metadata", {}),
            "reward_range": (-float("inf"), float("inf")),
            "spec": None,
        }.get(key)
        if value is None and key not in ("spec",):
            value = getattr(self.env, key)
        return value

    def set_env_attr(self, key: str, value: Any, id=None) -> None:
        setattr(self.env, key, value)

    @property
    def core(self):
        return self.env.core

    def reset_signal_sums(self) -> None:
        self.signal_sums = {k: 0.0 for k in self.signal_keys}
        self.signal_count = 0

    def signal_means(self) -> dict[str, float]:
        n = max(self.signal_count, 1)
        return {k: v / n for k, v in self.signal_sums.items()}

    def reset(self, env_id=None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        self._assert_is_not_closed()
        ids = np.asarray(self._wrap_id(env_id), dtype=np.int64)
        if self._pending_obs is not None and set(ids.tolist()) <= self._pending_ids:
            obs = self._pending_obs[ids]
            self._pending_ids -= set(ids.tolist())
            if not self._pending_ids:
                self._pending_obs = None
            return obs, self._empty_infos[ids].copy()
        seed = kwargs.get("seed")
        if seed is None and self._seed is not None:
            seed = self._seed
            if not self._fixed_seed:
                self._seed = None
        if seed is not None and self._fixed_seed:
            self._start_rng = np.random.default_rng(seed)
        obs, _ = self.env.reset(seed=seed)
        obs = self._randomize_start(obs)
        self._pending_obs, self._pending_ids = None, set()
        return obs[ids], self._empty_infos[ids].copy()

    def _randomize_start(self, obs: np.ndarray) -> np.ndarray:
        """Exploring starts: random initial backlog and state of charge (when enabled).

        Execution backlogs build up while the multipliers favour postponing and
        must then be served when they turn; an 80-hour episode that starts empty
        rarely shows the policy a large backlog together with multipliers that
        call for serving it. A quarter of the copies start empty; the others
        draw a log-uniform backlog between 0.1 and ``init_backlog_hours`` hours
        of mean demand.
        """
        core, n, rng = self.env.core, self.env_num, self._start_rng
        if self.multiplier_scaled or self.sampler is not None:
            if self.sampler is not None:
                core.lam, core.nu = self.sampler(rng, n, core.lambda_range, core.nu_range)
            self._divisor = self.reward_scale * (self._divisor_unit(core) if self.multiplier_scaled else np.ones(n))
            obs = core.observe()
        if self.init_backlog_hours <= 0.0 and not self.random_soc:
            return obs
        if self.init_backlog_hours > 0.0:
            hi = max(self.init_backlog_hours, 0.1 + 1e-9)
            hours = np.exp(rng.uniform(np.log(0.1), np.log(hi), size=n))
            hours[rng.uniform(size=n) < 0.25] = 0.0
            core.backlog = hours * self._mean_demand
        if self.random_soc:
            core.soc = rng.uniform(self._min_soc, 1.0).astype(np.float32)
        return core.observe()

    @staticmethod
    def _divisor_unit(core) -> np.ndarray:
        """Per copy: ``(price_norm + lambda + |nu|) / price_norm``, the size of the episode's prices of energy.

        The multipliers are fixed within an episode, so dividing its rewards by a
        constant leaves its optimal policy unchanged; it keeps the episodes with
        large multipliers (returns of hundreds) from swamping, in the value loss and
        the batch-normalised advantages, the episodes near the origin where the
        price (0.21-0.54) decides.
        """
        p = float(core.price_norm)
        return (p + np.asarray(core.lam, dtype=np.float64) + np.abs(np.asarray(core.nu, dtype=np.float64))) / p

    def step(self, action, id=None):
        self._assert_is_not_closed()
        if action is None:
            raise ValueError("action must be given (this vector env is synchronous)")
        act = np.asarray(action, dtype=np.float64)
        if id is None or len(id) == self.env_num:
            ids = np.arange(self.env_num) if id is None else np.asarray(id, dtype=np.int64)
            full = act if id is None else self._scatter(act, ids)
        else:
            ids = np.asarray(id, dtype=np.int64)
            full = self._scatter(act, ids)
        core = self.env.core
        if self.shaping_gamma is not None and hasattr(self.env, "shortfall"):
            return self._step_shortfall(full, ids)
        if self.shaping_gamma is not None:
            nu, backlog = np.array(core.nu, dtype=np.float64), np.array(core.backlog, dtype=np.float64)
        obs, reward, terminated, truncated, infos = self.env.step(full)
        if self.shaping_gamma is not None:
            # potential-based shaping with Phi(s) = -nu B: nu r2 = nu (B' - B) becomes the holding cost (1 - gamma) nu B'
            r2 = _step_signal(infos, bool(truncated.any()), "r2")
            reward = reward - nu * r2 + (1.0 - self.shaping_gamma) * nu * (backlog + r2)
        reward = reward / self._divisor  # the finished episode's divisor, before a reset redraws the multipliers
        return self._finish_step(obs, reward, terminated, truncated, infos, ids)

    def _finish_step(self, obs, reward, terminated, truncated, infos, ids: np.ndarray):
        """Accumulate the step's signal means; on truncation keep the reset observations for the Collector's
        reset and return the final ones; return the rows of ``ids``."""
        for k in self.signal_keys:
            self.signal_sums[k] += float(np.mean(infos[k]))
        self.signal_count += 1
        if truncated.any():
            self._pending_obs = self._randomize_start(obs)
            self._pending_ids = set(range(self.env_num))
            obs = infos["final_observation"]
        return (
            obs[ids],
            reward[ids].astype(np.float64),
            terminated[ids],
            truncated[ids],
            self._empty_infos[ids].copy(),
        )

    def _step_shortfall(self, full: np.ndarray, ids: np.ndarray):
        """EV: potential-based shaping with ``Phi(s) = nu x shortfall(s)`` (``EVBatchedEnv.shortfall``, nu <= 0):
        the reward gains ``gamma Phi(s') - Phi(s)``, so unmet energy is charged when it becomes unavoidable instead
        of at the car's departure, hours later (same optimal policy; the episode's return changes by ``-Phi(s_0)``)."""
        core = self.env.core
        nu = np.array(core.nu, dtype=np.float64)
        if self.unmet_value:
            nu = nu - self.unmet_value  # unmet energy also costs unmet_value per kWh (TrainConfig.unmet_value)
        phi0 = nu * self.env.shortfall()
        obs, reward, terminated, truncated, infos = self.env.step(full)
        end = bool(truncated.any())
        phi1 = nu * _step_signal(infos, end, "shortfall")
        if self.unmet_value:
            reward = reward - self.unmet_value * _step_signal(infos, end, "unmet")
        reward = (reward + self.shaping_gamma * phi1 - phi0) / self._divisor
        return self._finish_step(obs, reward, terminated, truncated, infos, ids)

    def _scatter(self, act: np.ndarray, ids: np.ndarray) -> np.ndarray:
        if np.array_equal(ids, np.arange(self.env_num)):
            return act
        full = self._neutral.copy()
        full[ids] = act
        return full

    def seed(self, seed=None):
        self._seed = seed if seed is None or isinstance(seed, int) else int(seed[0])
        return [[self._seed] for _ in range(self.env_num)]


# ------------------------------------------------------------------ networks
class CriticNet(nn.Module):
    """State-value network over the augmented observation (same input transform as the actor)."""

    def __init__(self, obs_dim: int, hidden_sizes: Sequence[int] = (64, 64), backlog_index: int | None = 1,
                 raw_columns: Sequence[Sequence[float]] | None = None, rate_features: dict | None = None):
        super().__init__()
        self.backlog_index = backlog_index
        self.raw_columns = [list(c) for c in (raw_columns or ())]
        self.rate_features = rate_features
        layers: list[nn.Module] = []
        width = obs_dim + (int(rate_features["ports"]) if rate_features else 0)
        for h in hidden_sizes:
            lin = nn.Linear(width, h)
            nn.init.orthogonal_(lin.weight, gain=math.sqrt(2.0))
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.Tanh()]
            width = h
        out = nn.Linear(width, 1)
        nn.init.orthogonal_(out.weight, gain=1.0)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, obs, **kwargs) -> torch.Tensor:
        device = self.net[0].weight.device
        obs = torch.as_tensor(obs, dtype=torch.float32, device=device)
        if self.rate_features:
            return self.net(input_features(obs, self.backlog_index, raw_columns=self.raw_columns,
                                           rate_features=self.rate_features))
        return self.net(input_features(obs, self.backlog_index, raw_columns=self.raw_columns))


def gaussian_dist(loc_scale):
    """Tianshou ``dist_fn``: independent Gaussian over the action dimensions."""
    loc, scale = loc_scale
    return torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)


def make_ppo(actor, critic, optim, settings, action_space, observation_space, *, return_scaling: bool = False) -> PPO:
    """Tianshou PPO with a Gaussian policy clipped to the action box.

    ``settings`` supplies ``clip_eps``, ``vf_coef``, ``ent_coef``,
    ``max_grad_norm``, ``gae_lambda``, ``gamma`` and ``batch_size`` (both
    ``TrainConfig`` and the baselines' ``BaselineConfig`` do).
    """
    policy = ProbabilisticActorPolicy(
        actor=actor,
        dist_fn=gaussian_dist,
        action_space=action_space,
        observation_space=observation_space,
        deterministic_eval=True,
        action_scaling=True,
        action_bound_method="clip",
    )
    return PPO(
        policy=policy,
        critic=critic,
        optim=optim,
        eps_clip=settings.clip_eps,
        vf_coef=settings.vf_coef,
        ent_coef=settings.ent_coef,
        max_grad_norm=settings.max_grad_norm,
        gae_lambda=settings.gae_lambda,
        gamma=settings.gamma,
        max_batchsize=max(settings.batch_size, 4096),
        advantage_normalization=True,
        return_scaling=return_scaling,
    )


# ----------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What ``train`` returns: the policy, where everything was written, and the run's numbers."""

    policy: AugmentedPolicy
    run_dir: Path
    checkpoint: Path
    config: TrainConfig
    wall_time_s: float
    env_steps: int
    eval_return_initial: float
    eval_return_final: float
    update_history: list[dict[str, float]] = field(default_factory=list)
    test_history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int, num_threads: int = 1) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)


def make_networks(config: TrainConfig, obs_dim: int, core=None) -> tuple[ActorNet, CriticNet]:
    if config.is_ev:
        return _make_ev_networks(config, obs_dim, core)
    layout = observation_layout(config.augmented)
    backlog = layout.index("backlog")
    raw = None
    if config.raw_multipliers and config.augmented:
        ranges = (core.lambda_range, core.nu_range) if core is not None else ((0.0, 15.0), (-20.0, 20.0))
        raw = multiplier_raw_columns(layout, *ranges)
    actor = ActorNet(obs_dim, config.hidden_sizes, backlog_index=backlog, init_log_std=config.init_log_std,
                     mean_bound=config.mean_bound, min_log_std=config.min_log_std, raw_columns=raw)
    critic = CriticNet(obs_dim, config.hidden_sizes, backlog_index=backlog, raw_columns=raw)
    return actor.to(config.device), critic.to(config.device)


def _make_ev_networks(config: TrainConfig, obs_dim: int, core) -> tuple[ActorNet, CriticNet]:
    """EV: no backlog column; one action per port; the multipliers in their own units with ``raw_multipliers``."""
    raw = None
    if config.raw_multipliers and config.augmented:
        raw = multiplier_raw_columns(core.layout_names, core.lambda_range, core.nu_range)
    rates = None
    if config.rate_features:
        from cmarl_env.domains.ev_charging.core import TIME_NORM_H

        rates = {"ports": int(core.ports), "first": 4, "energy_norm": float(core.energy_norm),
                 "time_norm": TIME_NORM_H, "charger_kw": float(core.config.charger_kw)}
    actor = ActorNet(obs_dim, config.hidden_sizes, act_dim=core.ports, backlog_index=None,
                     init_log_std=config.init_log_std, mean_bound=config.mean_bound, min_log_std=config.min_log_std,
                     raw_columns=raw, rate_features=rates)
    critic = CriticNet(obs_dim, config.hidden_sizes, backlog_index=None, raw_columns=raw, rate_features=rates)
    return actor.to(config.device), critic.to(config.device)


def make_batched_env(config: TrainConfig, num_envs: int, data: BuildingData | None = None) -> BatchedEnv:
    if config.is_ev:
        from cmarl_env.views import EVBatchedEnv

        env = EVBatchedEnv(config.ev_env_config(), num_envs=num_envs, site_type=config.site_type)
        if config.fixed_multipliers is not None:
            env.set_multipliers(*config.fixed_multipliers)
        return env
    env = BatchedEnv(config.env_config(), num_envs=num_envs, demand_scale=config.demand_scale, data=data)
    if config.fixed_multipliers is not None:
        env.set_multipliers(*config.fixed_multipliers)
    return env


def evaluate_lagrangian_return(
    policy: AugmentedPolicy,
    config: TrainConfig,
    episodes: int | None = None,
    seed: int | None = None,
    data: BuildingData | None = None,
) -> dict[str, float]:
    """Mean undiscounted episode return (r_L, unscaled) of the deterministic policy on fixed episodes.

    The episodes (start hours and sampled multipliers) are fixed by ``seed``
    (default: the config's seed + 1), so two policies are compared on the same ones. Demand response reports the
    mean ``r0``, ``e_grid`` and ``r2`` per step; EV (per site, episodes = day, cars and multipliers) ``r0``,
    ``load`` and ``unmet``.
    """
    signals = ("r0", "load", "unmet") if config.is_ev else ("r0", "e_grid", "r2")
    n = int(episodes or config.eval_episodes)
    env = make_batched_env(config, n, data)
    seed = config.seed + 1 if seed is None else seed
    obs, _ = env.reset(seed=seed)
    sampler = multiplier_sampler(config) if config.augmented else None
    if sampler is not None:
        core = env.core
        core.lam, core.nu = sampler(np.random.default_rng(seed), n, core.lambda_range, core.nu_range)
        obs = core.observe()
    totals = {k: np.zeros(n) for k in ("lagrangian_reward", *signals)}
    for _ in range(config.episode_length):
        obs, _, _, _, infos = env.step(policy.act(obs))
        for k in totals:
            totals[k] += infos[k]
    out = {"lagrangian_return": float(totals["lagrangian_reward"].mean())}
    out |= {f"mean_{k}": float(totals[k].mean() / config.episode_length) for k in signals}
    return out


def imitate_multiplier_rate(actor: ActorNet, config: TrainConfig, epochs: int = 1) -> dict[str, float]:
    """EV warm start: fit the actor's mean to ``MultiplierRate`` (``cmarl_env.domains.ev_charging.references``).

    States come from ``num_envs`` training copies driven by that policy with the training draw of the multipliers
    (a fresh draw every episode); the actor's pre-clip mean is regressed on ``2 a - 1`` (mean squared error, Adam,
    ``imitation_steps`` minibatches of ``batch_size``). PPO then trains on the Lagrangian from this actor.
    """
    from cmarl_env.domains.ev_charging.references import MultiplierRate

    t0 = time.perf_counter()
    env = make_batched_env(config, config.num_envs)
    core = env.core
    teacher = MultiplierRate(core)
    if config.imitation_floor:
        teacher = _MinimumRateFloor(teacher, core)
    sampler = multiplier_sampler(config)
    rng = np.random.default_rng(config.seed + 7)
    obs, _ = env.reset(seed=config.seed + 7)
    xs, ys = [], []
    steps = max(1, math.ceil(config.imitation_steps * config.batch_size / config.num_envs / 4))
    for t in range(steps):
        if t % config.episode_length == 0 and sampler is not None:
            core.lam, core.nu = sampler(rng, core.n_agents, core.lambda_range, core.nu_range)
            obs = core.observe()
        a = teacher(obs)
        xs.append(obs.copy())
        ys.append(a.astype(np.float32))
        obs, _, _, _, _ = env.step(a)
    x = torch.as_tensor(np.concatenate(xs), device=config.device)
    y = torch.as_tensor(np.concatenate(ys) * 2.0 - 1.0, device=config.device)
    opt = torch.optim.Adam(actor.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    loss = torch.tensor(float("nan"))
    for _ in range(config.imitation_steps):
        idx = torch.randint(0, x.shape[0], (config.batch_size,), generator=gen)
        loss = torch.mean((actor.mean(x[idx]) - y[idx]) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    name = "MultiplierRate" + (" with the minimum-rate floor" if config.imitation_floor else "")
    return {"teacher": name, "samples": int(x.shape[0]), "steps": config.imitation_steps,
            "final_mse": float(loss.detach()), "seconds": time.perf_counter() - t0}


class _MinimumRateFloor:
    """An imitation teacher: ``max(teacher(obs), min(u, 1))`` per port, ``u`` the port's minimum rate (the fraction of
    full power that delivers the car's energy exactly at its departure; ``algorithms.policy.ev_minimum_rates``)."""

    def __init__(self, teacher, core):
        from algorithms.policy import ev_minimum_rates
        from cmarl_env.domains.ev_charging.core import TIME_NORM_H

        self.teacher, self._rates = teacher, ev_minimum_rates
        self.spec = {"ports": int(core.ports), "first": 4, "energy_norm": float(core.energy_norm),
                     "time_norm": TIME_NORM_H, "charger_kw": float(core.config.charger_kw)}

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        u = self._rates(torch.as_tensor(obs, dtype=torch.float64), self.spec).numpy()
        return np.clip(np.maximum(self.teacher(obs), np.minimum(u, 1.0)), 0.0, 1.0)


def train(config: TrainConfig, *, progress: bool = True, data: BuildingData | None = None) -> TrainResult:
    """Train one agent type's state-augmented policy with Tianshou's PPO; write the run folder.

    The run folder ``config.out_dir`` receives ``policy.pt`` (the checkpoint),
    ``config.json``, ``metrics.json`` and ``tensorboard/``.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tianshou.algorithm.optim import AdamOptimizerFactory, LRSchedulerFactoryLinear
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.trainer import OnPolicyTrainerParams

    t0 = time.perf_counter()
    prev_threads = torch.get_num_threads()
    seed_everything(config.seed, config.num_threads)
    run_dir = Path(config.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not config.is_ev:
        data = data if data is not None else load_dataset(config.dataset)

    train_batched = make_batched_env(config, config.num_envs, data)
    core = train_batched.core
    layout = list(core.layout_names)
    reward_scale = config.resolved_reward_scale
    sampler = multiplier_sampler(config) if config.augmented else None
    scaled = config.reward_normalization == "multipliers"
    shaping = config.gamma if config.reward_shaping in ("backlog_potential", "shortfall_potential") else None
    # EV: unmet energy's value in EUR/kWh (TrainConfig.unmet_value x the window's largest absolute price)
    unmet_value = config.unmet_value * float(core.price_norm) if config.is_ev and config.unmet_value else 0.0
    extra = {"unmet_value": unmet_value} if unmet_value else {}
    train_env = TianshouBatchedEnv(train_batched, reward_scale, seed=config.seed,
                                   init_backlog_hours=config.init_backlog_hours, random_soc=config.random_soc,
                                   sampler=sampler, multiplier_scaled=scaled, shaping_gamma=shaping, **extra)
    test_env = TianshouBatchedEnv(make_batched_env(config, config.eval_episodes, data), reward_scale,
                                  seed=config.seed + 1, fixed_seed=True, sampler=sampler, multiplier_scaled=scaled,
                                  shaping_gamma=shaping, **extra)

    actor, critic = make_networks(config, core.obs_dim, core)
    imitation = imitate_multiplier_rate(actor, config) if config.is_ev and config.imitation_steps else None
    meta_kwargs = dict(
        observation_layout=layout,
        lambda_range=core.lambda_range,
        nu_range=core.nu_range,
        dataset=EV_DATASET if config.is_ev else core.data.name,
        demand_scale=None if config.is_ev else config.demand_scale,
        hidden_sizes=config.hidden_sizes,
        reward_scale=reward_scale,
        train_config=config.to_dict(),
        fixed_multipliers=None if config.fixed_multipliers is None else list(config.fixed_multipliers),
    )
    if config.is_ev:
        meta_kwargs |= dict(domain="ev_charging", agent_type=config.site_type, site_type=config.site_type,
                            ports=int(core.ports), action_layout=[f"port{k}" for k in range(core.ports)])
    initial = AugmentedPolicy(_copy_actor(actor, config), build_metadata(**meta_kwargs))
    eval_initial = evaluate_lagrangian_return(initial, config, data=data)

    optim = AdamOptimizerFactory(lr=config.lr)
    if config.lr_decay:
        optim = optim.with_lr_scheduler_factory(
            LRSchedulerFactoryLinear(config.epochs, config.epoch_steps, config.collect_steps)
        )
    algorithm = make_ppo(actor, critic, optim, config, train_batched.single_action_space,
                         train_batched.single_observation_space, return_scaling=config.return_scaling)
    buffer = VectorReplayBuffer(config.collect_steps, config.num_envs)
    train_collector = Collector(algorithm, train_env, buffer, raise_on_nan_in_buffer=False)
    test_collector = Collector(algorithm, test_env, raise_on_nan_in_buffer=False)

    writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
    writer.add_text("train_config", json.dumps(config.to_dict(), indent=1))
    logger = _RecordingLogger(writer, training_interval=1, update_interval=1)

    def training_fn(epoch: int, env_step: int) -> None:
        # called before each training step: log the previous iteration's physical signals (unscaled)
        if train_env.signal_count:
            for k, v in train_env.signal_means().items():
                writer.add_scalar(f"signals/{k}", v, env_step)
            train_env.reset_signal_sums()

    params = OnPolicyTrainerParams(
        training_collector=train_collector,
        test_collector=test_collector,
        max_epochs=config.epochs,
        epoch_num_steps=config.epoch_steps,
        collection_step_num_env_steps=config.collect_steps,
        test_step_num_episodes=config.eval_episodes,
        batch_size=config.batch_size,
        update_step_num_repetitions=config.update_repeats,
        training_fn=training_fn,
        logger=logger,
        verbose=progress,
        show_progress=progress,
    )
    try:
        info = algorithm.run_training(params)
    finally:
        torch.set_num_threads(prev_threads)
    train_wall = time.perf_counter() - t0

    final = AugmentedPolicy(_copy_actor(actor, config), build_metadata(**meta_kwargs))
    eval_final = evaluate_lagrangian_return(final, config, data=data)
    wall = time.perf_counter() - t0
    metadata = build_metadata(
        **meta_kwargs,
        train_wall_time_s=wall,
        env_steps=int(info.train_step),
        eval_initial=eval_initial,
        eval_final=eval_final,
        share_kwh=float(core.grid_limit / core.n_agents) if config.is_ev else float(core.share),
        obs_norms={"price_norm": float(core.price_norm)} if config.is_ev else obs_norms(core),
        window=list(core.window),
        **({"imitation": imitation} if imitation is not None else {}),
    )
    final = AugmentedPolicy(final.net, metadata)
    checkpoint = save_checkpoint(run_dir / CHECKPOINT_NAME, final, metadata)
    final.metadata["path"] = str(checkpoint)
    _write_json(run_dir / CONFIG_NAME, {"train_config": config.to_dict(), "env_config": config.env_config().to_dict(),
                                         "env": core.describe(), "agent_type": config.agent_type,
                                         "reward_scale": reward_scale, "versions": metadata["versions"]})
    _write_json(run_dir / METRICS_NAME, {
        "wall_time_s": wall,
        "train_loop_time_s": train_wall,
        "env_steps": int(info.train_step),
        "eval_initial": eval_initial,
        "eval_final": eval_final,
        "test_history": logger.test_history,
        "update_history": logger.update_history,
    })
    writer.add_scalar("eval/lagrangian_return_final", eval_final["lagrangian_return"], int(info.train_step))
    writer.flush()
    writer.close()
    train_env.close()
    test_env.close()
    return TrainResult(
        policy=final,
        run_dir=run_dir,
        checkpoint=checkpoint,
        config=config,
        wall_time_s=wall,
        env_steps=int(info.train_step),
        eval_return_initial=eval_initial["lagrangian_return"],
        eval_return_final=eval_final["lagrangian_return"],
        update_history=logger.update_history,
        test_history=logger.test_history,
    )


def _copy_actor(actor: ActorNet, config: TrainConfig) -> ActorNet:
    clone = copy.deepcopy(actor).cpu()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone.eval()


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


class _RecordingLogger(TensorboardLogger):
    """Tianshou's TensorBoard logger that also keeps the loss and test numbers in memory."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.update_history: list[dict[str, float]] = []
        self.test_history: list[dict[str, float]] = []

    def log_update_data(self, log_data: dict, step: int) -> None:
        row: dict[str, float] = {"step": int(step)}
        for key in ("loss", "actor_loss", "vf_loss", "ent_loss"):
            v = log_data.get(key)
            if isinstance(v, dict) and "mean" in v:
                row[key] = float(v["mean"])
        self.update_history.append(row)
        super().log_update_data(log_data, step)

    def log_test_data(self, log_data: dict, step: int) -> None:
        stat = log_data.get("returns_stat") or {}
        if isinstance(stat, dict) and "mean" in stat:
            self.test_history.append(
                {"env_step": int(step), "return_mean": float(stat["mean"]), "return_std": float(stat.get("std", 0.0))}
            )
        super().log_test_data(log_data, step)
