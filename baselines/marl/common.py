"""Shared parts of the MARL baselines: config, Tianshou env adapter, networks, policy, checkpoints, evaluation.

Domains
-------
One code path for every domain: the learners, the env adapter and the controller read a scenario through the
domain seam (``cmarl_env.domains``: action width, global signal and its per-step share, local signal, the dual
local signal, agent types); what is left per domain (training scenario, type keys, feature transform) is in
``baselines.marl.domain``. ``BaselineConfig.domain`` picks it (default ``"demand_response"``, the paper's; the
demand-response text below uses its names: ``e_grid`` is the global signal, ``c/N`` the share, ``r2`` the local
signal). On EV charging (``domain="ev_charging"``, ``domain_params`` = EVConfig fields) the global signal is the
site load with the hour's share ``L_t / N``, the local signal the unmet energy, the actions the K port fractions,
the agent types the site categories, and the observation is used as it is (already normalised).

Fixed penalties
---------------
Every fixed-penalty baseline (the learned-multiplier ones: ``baselines.marl.lagrangian``) is trained on the Lagrangian reward with FIXED multipliers
(paper section 7: the pair (lambda*, nu*) = (8, -8) from the IPPO grid search),
``r_i = r0_i + lambda * (c/N - e_grid_i) + nu * r2_i``, computed by the core
(``EnvConfig(reward="lagrangian", multiplier_mode="fixed", augment=False)``
plus ``core.set_multipliers(lambda, nu)``), on plain (non-augmented)
observations. Rewards fed to the learners are divided by ``reward_scale``.

Observation encoding (``encode_local``)
---------------------------------------
Each agent's local features are its 7 plain observation columns
(``cmarl_env.core.BASE_FEATURES``) with the backlog column compressed by
``log1p`` (long rollouts can reach backlogs far beyond anything seen in
80-hour training episodes), everything clipped to [-10, 10], followed by a
one-hot of the agent's type (its demand scale; the vocabulary is the training
scenario's distinct demand scales). The global state is all agents' local
features, stacked. The same function encodes observations for training and
for execution, and its parameters are stored in every checkpoint.

Env adapter (``ScenarioVectorEnv``)
-----------------------------------
``num_envs`` independent copies of the N-agent scenario (one
``DemandResponseCore`` each, same layout, own random start hours), presented
to Tianshou as a ``BaseVectorEnv`` in one of three modes:

* ``"team"`` (MADDPG, MASAC): one Tianshou env per copy; observation (N, F)
  (all local features, i.e. the global state), action (2N,) = the joint
  action, reward = mean of the agents' scaled rewards (cooperative team
  reward); the per-agent rewards are passed in ``info["agent_rew"]`` (N,)
  and stored by Tianshou's buffer, where the per-agent critics read them.
* ``"local"`` (ISAC): one Tianshou env per (copy, agent) slot; observation =
  the agent's local features, action (2,), reward = the agent's reward.
* ``"local_global"`` (MAPPO): like ``"local"`` but each slot observes
  ``[local features, global state]`` (MAPPO's agent-specific global state);
  the actor reads only the local part, the critic all of it.
* ``"local_neighbourhood"`` (networked PD): like ``"local"`` but each slot
  observes ``[own local features, each graph neighbour's, zero rows up to the
  largest degree]`` (the scenario graph, ``config.graph``); the actor reads the
  own part, the local critics all of it.

For the learned-multiplier baselines (``config.lagrangian``: MAPPO-L, networked
PD) the reward is the objective ``r0 / reward_scale`` and every slot's step info
carries its raw constraint signals ``{"r0", "grid", "grid_limit", "r2", "agent"}``
(stored by Tianshou's buffer, read by ``baselines.marl.lagrangian``); ``grid`` and
``grid_limit`` are the per-step cost and limit of the judged global constraint
(``BaselineDomain.grid_cost``: demand response ``e_grid - c/N`` and 0; EV with a cap
per hour the hour's overload / N and 1 % of the share, computed from all N sites of
the copy). The fixed multipliers of the cores are then unused.

An "env step" in ``BaselineConfig`` is one hour of one scenario copy (all N
agents act once); Tianshou's step counter counts slots, so it is N times
larger in the slot modes.

Evaluation (``evaluate``)
-------------------------
A trained baseline is a :class:`MARLController` (the shared actor on each
agent's local features, deterministic) and is evaluated like every other
method: :func:`cmarl_env.evaluation.rollout` on the environment of
:func:`cmarl_env.evaluation.evaluation_config` (data window = the evaluated
hours, so the grid limit is ``c`` times the peak over exactly those hours, as
for ``cmarl run`` and ``cmarl oracle``), judged by the one feasibility rule
(``Rollout.verdict``). The start hours are explicit: ``start_hours`` defaults
to ``EVAL_START_HOURS = (0,)``, one roll-out from hour 0, which for the
default 3,000 steps is the paper scenario's hours [0, 3000) and the same
roll-out ``cmarl run`` makes with its defaults. The policy is deterministic,
so a repeated start hour repeats the roll-out; callers that want several
windows pass them (the benchmark suites give every method of a scenario the
same start hours). Action noise is available (``action_noise``) but off by
default: any positive grid fraction eventually serves a growing backlog
(``e_grid = a_grid * (demand + backlog - e_bat)``), so clipped noise on a
policy that never buys from the grid would make its backlog look stable.

``evaluate_return`` is a training metric only (the learning curve), not an
evaluation; see its docstring.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cmarl_env import dynamics
from cmarl_env.evaluation import Controller, evaluation_config, feasibility, rollout
from cmarl_env.records import atomic_write, clean_json
from cmarl_env.config import DEFAULT_DATASET, TRAIN_HOURS, ConfigBase, EnvConfig, check_int, check_real
from cmarl_env.core import BASE_FEATURES, DemandResponseCore
from cmarl_env.data import BuildingData, load_dataset

try:
    from gymnasium import spaces
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorDeterministic, ContinuousActorProbabilistic

    from algorithms.vector_env import ArrayVectorEnv
except ModuleNotFoundError as _err:  # pragma: no cover - only without the learn extra
    # a ModuleNotFoundError naming the missing module: ``pytest.importorskip`` skips with this reason, callers
    # can tell a missing extra from a broken installation (any other ImportError propagates as it is)
    raise ModuleNotFoundError(f"baselines.marl needs Tianshou and torch: pip install 'cmarl-env[learn]' "
                              f"(missing module {_err.name!r})", name=_err.name) from _err

from baselines.marl.domain import DOMAIN_NAMES, baseline_domain, normalise_domain_params  # noqa: E402
from baselines.marl_names import ALL_BASELINES, BASELINES, LAGRANGIAN_BASELINES  # noqa: E402,F401  (torch-free lists)

# Default start hours of ``evaluate``: one roll-out from hour 0 (with 3,000 steps: the paper scenario's hours).
EVAL_START_HOURS = (0,)

BACKLOG_COLUMN = BASE_FEATURES.index("backlog")
FEATURE_CLIP = 10.0
ACTION_DIM = 2
PPO_INIT_LOG_STD = -0.5

CHECKPOINT_FORMAT = "cmarl-marl-baseline"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "policy.pt"
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
VERSIONS_NAME = "versions.json"

# How each actor's raw output becomes an action in [0, 1]^K at execution (K = the domain's action width).
ACTOR_KINDS = {
    "gaussian_clip": "a = (clip(mu, -1, 1) + 1) / 2",      # PPO (Tianshou action_bound_method='clip')
    "gaussian_tanh": "a = (tanh(mu) + 1) / 2",             # SAC (tanh-squashed Gaussian, mode)
    "deterministic": "a = (clip(actor(o), -1, 1) + 1) / 2",  # DDPG (tanh output)
}


class CheckpointError(ValueError):
    """A baseline checkpoint is missing, corrupt or of another format."""


# --------------------------------------------------------------------- config
@dataclass(frozen=True)
class BaselineConfig(ConfigBase):
    """One baseline training run (validated on construction; errors name the field).

    Steps are *env steps*: one hour of one scenario copy, all N agents acting.
    Fields marked (PPO) apply to MAPPO, MAPPO-L and networked PD, (off-policy) to MADDPG, MASAC, ISAC,
    (L) to the learned-multiplier baselines MAPPO-L and networked PD only (``baselines.marl.lagrangian``).

    ``lambda_`` and ``nu`` are the fixed penalties of the fixed-penalty baselines (default (8, -8)) and the
    INITIAL multipliers of the learned-multiplier ones (default (0, 0)): their grid multiplier starts at
    ``lambda_`` and their demand multipliers at ``mu = -nu`` (so ``nu <= 0`` there).
    """

    name: str = "mappo"
    n_agents: int = 7
    # the problem: a registered domain the baselines support (``baselines.marl.domain``) and, for EV charging, the
    # EVConfig fields of its training scenario (ports, site_types, limit, ...; split defaults to "train")
    domain: str = "demand_response"
    domain_params: tuple[tuple[str, Any], ...] = ()
    lambda_: float | None = None
    nu: float | None = None
    total_steps: int = 100_000
    num_envs: int = 4
    epochs: int = 10
    lr: float = 3e-4
    critic_lr: float = 1e-3
    batch_size: int = 256
    hidden_sizes: tuple[int, ...] = (64, 64)
    critic_hidden_sizes: tuple[int, ...] = (128, 128)
    gamma: float = 0.97
    reward_scale: float = 10.0
    episode_length: int = 80
    train_window: tuple[int, int] = TRAIN_HOURS
    constraint_fraction: float = 0.27
    # (PPO)
    rollout_steps: int = 80
    update_repeats: int = 4
    clip_eps: float = 0.2
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    # (off-policy)
    buffer_size: int = 100_000
    warmup_steps: int = 1_000
    collect_steps: int = 8
    updates_per_step: float = 0.5
    tau: float = 0.005
    exploration_noise: float = 0.1
    alpha: float | None = None
    # (L) dual ascent on the measured constraint violation, once per collect
    dual_lr_grid: float = 2.0       # per kWh/agent-hour of mean grid use above the share c/N
    dual_lr_demand: float = 20.0    # per kWh/agent-hour of mean backlog growth r2 above demand_slack
    lambda_max: float = 15.0        # the paper's multiplier box: lambda in [0, 15], nu in [-20, 20]
    mu_max: float = 20.0
    # the local constraint's slack; None = the domain's (demand response: the feasibility rule's backlog-slope
    # limit 0.005 kWh/step/agent; EV: 0, the unmet allowance is already in the dual signal)
    demand_slack: float | None = None
    # (L) networked PD: the scenario's communication graph and the multipliers' neighbour averaging
    graph: str = "two_clusters"
    graph_params: tuple[tuple[str, Any], ...] = ()
    graph_seed: int = 0
    consensus_weights: str = "metropolis"
    consensus_rounds: int = 1
    # evaluation during training (mean Lagrangian return on fixed episodes)
    eval_episodes: int = 8
    dataset: str = DEFAULT_DATASET
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.name not in ALL_BASELINES:
            raise ValueError(f"name={self.name!r} is not a baseline; choose one of {list(ALL_BASELINES)}")
        if not isinstance(self.domain, str) or self.domain not in DOMAIN_NAMES:
            raise ValueError(f"domain={self.domain!r} is not allowed; choose one of {list(DOMAIN_NAMES)}")
        object.__setattr__(self, "domain_params", normalise_domain_params(self.domain, self.domain_params))
        if self.demand_slack is None:
            object.__setattr__(self, "demand_slack", baseline_domain(self.domain).demand_slack)
        check_int("n_agents", self.n_agents, 1, 100_000)
        default = (0.0, 0.0) if self.lagrangian else baseline_domain(self.domain).default_penalties
        if self.lambda_ is None:
            object.__setattr__(self, "lambda_", default[0])
        if self.nu is None:
            object.__setattr__(self, "nu", default[1])
        check_real("lambda_", self.lambda_, 0.0, 15.0)
        check_real("nu", self.nu, -20.0, 20.0)
        object.__setattr__(self, "lambda_", float(self.lambda_))
        object.__setattr__(self, "nu", float(self.nu))
        check_int("total_steps", self.total_steps, 1, 10**10)
        check_int("num_envs", self.num_envs, 1, 4096)
        check_int("epochs", self.epochs, 1, 100_000)
        check_real("lr", self.lr, 0.0, 1.0, low_open=True)
        check_real("critic_lr", self.critic_lr, 0.0, 1.0, low_open=True)
        check_int("batch_size", self.batch_size, 1, 10**7)
        for name in ("hidden_sizes", "critic_hidden_sizes"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
                raise ValueError(f"{name}={value!r} must be a non-empty sequence of integers in [1, 4096]")
            for h in value:
                check_int(f"{name}[...]", h, 1, 4096)
            object.__setattr__(self, name, tuple(int(h) for h in value))
        check_real("gamma", self.gamma, 0.0, 1.0)
        check_real("reward_scale", self.reward_scale, 0.0, 1e9, low_open=True)
        check_int("episode_length", self.episode_length, 1, 100_000)
        window = self.train_window
        if (isinstance(window, (str, bytes)) or not isinstance(window, Sequence) or len(window) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in window)):
            raise ValueError(f"train_window={window!r} must be a pair of integers (first_hour, end_hour)")
        object.__setattr__(self, "train_window", (int(window[0]), int(window[1])))
        lo, hi = self.train_window
        if not 0 <= lo < hi:
            raise ValueError(f"train_window={self.train_window!r} must satisfy 0 <= first_hour < end_hour")
        if hi - lo < self.episode_length:
            raise ValueError(
                f"train_window={self.train_window!r} holds {hi - lo} hours, fewer than episode_length={self.episode_length}"
            )
        check_real("constraint_fraction", self.constraint_fraction, 0.0, 1.0, low_open=True)
        check_int("rollout_steps", self.rollout_steps, 1, 100_000)
        check_int("update_repeats", self.update_repeats, 1, 1000)
        check_real("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True)
        check_real("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_real("ent_coef", self.ent_coef, 0.0, 1.0)
        check_real("vf_coef", self.vf_coef, 0.0, 100.0)
        check_real("max_grad_norm", self.max_grad_norm, 0.0, 1e6, low_open=True)
        check_int("buffer_size", self.buffer_size, 1, 10**8)
        check_int("warmup_steps", self.warmup_steps, 0, 10**8)
        check_int("collect_steps", self.collect_steps, 1, 10**7)
        if self.collect_steps % self.num_envs:
            raise ValueError(
                f"collect_steps={self.collect_steps} must be a multiple of num_envs={self.num_envs} "
                "(every scenario copy steps the same number of times per collect)"
            )
        check_real("updates_per_step", self.updates_per_step, 0.0, 1000.0, low_open=True)
        check_real("tau", self.tau, 0.0, 1.0, low_open=True)
        check_real("exploration_noise", self.exploration_noise, 0.0, 10.0)
        if self.alpha is not None:
            check_real("alpha", self.alpha, 0.0, 100.0)
        check_real("dual_lr_grid", self.dual_lr_grid, 0.0, 1e6)
        check_real("dual_lr_demand", self.dual_lr_demand, 0.0, 1e6)
        check_real("lambda_max", self.lambda_max, 0.0, 15.0, low_open=True)
        check_real("mu_max", self.mu_max, 0.0, 20.0, low_open=True)
        check_real("demand_slack", self.demand_slack, 0.0, 100.0)
        if self.domain != "demand_response":
            if self.train_window != TRAIN_HOURS:
                raise ValueError(f"train_window={self.train_window!r} is for domain 'demand_response'; domain "
                                 f"{self.domain!r} trains on domain_params split/window")
            try:  # the training scenario is checked here, so a bad EV field fails before anything is built
                self.core_config()
            except (ValueError, TypeError) as err:
                raise type(err)(f"domain_params: {err}") from None
        if self.lagrangian:
            if self.lambda_ > self.lambda_max:
                raise ValueError(f"lambda_={self.lambda_} (the initial grid multiplier of {self.name}) must be "
                                 f"<= lambda_max={self.lambda_max}")
            if not -self.mu_max <= self.nu <= 0.0:
                raise ValueError(f"nu={self.nu} (minus the initial demand multiplier of {self.name}) must lie in "
                                 f"[-mu_max, 0] = [{-self.mu_max}, 0]")
        from cmarl_env import graphs  # the graph fields are checked for every baseline, used by networked_pd

        if not isinstance(self.graph, str) or self.graph not in graphs.GRAPH_NAMES:
            raise ValueError(f"graph={self.graph!r} is not allowed; choose one of {list(graphs.GRAPH_NAMES)}")
        gp = self.graph_params
        if isinstance(gp, Mapping):
            gp = tuple(sorted(gp.items()))
        if (isinstance(gp, (str, bytes)) or not isinstance(gp, Sequence)
                or not all(isinstance(kv, Sequence) and len(kv) == 2 and isinstance(kv[0], str) for kv in gp)):
            raise ValueError(f"graph_params={self.graph_params!r} must be a mapping or (name, value) pairs")
        object.__setattr__(self, "graph_params", tuple((str(k), v) for k, v in gp))
        check_int("graph_seed", self.graph_seed, 0, 2**31 - 1)
        if self.consensus_weights not in graphs.CONSENSUS_WEIGHTS:
            raise ValueError(f"consensus_weights={self.consensus_weights!r} is not allowed; choose one of "
                             f"{list(graphs.CONSENSUS_WEIGHTS)}")
        check_int("consensus_rounds", self.consensus_rounds, 0, 1000)
        check_int("eval_episodes", self.eval_episodes, 1, 100_000)
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset={self.dataset!r} must be a non-empty dataset name or schema path")
        check_int("seed", self.seed, 0, 2**31 - 1)
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device={self.device!r} is not allowed; choose 'cpu' or 'cuda[:k]'")
        check_int("num_threads", self.num_threads, 1, 1024)

    # ----------------------------------------------------------- derived
    @property
    def lagrangian(self) -> bool:
        """A learned-multiplier baseline (MAPPO-L, networked PD)."""
        return self.name in LAGRANGIAN_BASELINES

    @property
    def on_policy(self) -> bool:
        return self.name in ("mappo", "mappo_lagrangian", "networked_pd")

    @property
    def env_mode(self) -> str:
        return {"mappo": "local_global", "isac": "local", "maddpg": "team", "masac": "team",
                "mappo_lagrangian": "local_global", "networked_pd": "local_neighbourhood"}[self.name]

    @property
    def steps_per_collect(self) -> int:
        """Env steps gathered per training iteration (all copies)."""
        return self.num_envs * self.rollout_steps if self.on_policy else self.collect_steps

    @property
    def iterations(self) -> int:
        """Training iterations (collect + update) the run performs."""
        per_epoch = max(1, math.ceil(math.ceil(self.total_steps / self.epochs) / self.steps_per_collect))
        return per_epoch * self.epochs

    @property
    def domain_adapter(self):
        """The domain's pieces of the baselines (``baselines.marl.domain``)."""
        return baseline_domain(self.domain)

    def core_config(self, **overrides: Any):
        """The training scenario in the domain's config: fixed multipliers, Lagrangian reward, plain observations,
        training data (demand response: ``train_window``; EV: ``domain_params`` split, default "train")."""
        return self.domain_adapter.core_config(self, **overrides)

    def env_config(self, **overrides: Any) -> EnvConfig:
        """Demand response: the training scenario's ``EnvConfig`` (``core_config``)."""
        if self.domain != "demand_response":
            raise ValueError(f"env_config is the demand-response config; domain {self.domain!r}: use core_config")
        return self.core_config(**overrides)


def seed_everything(seed: int, num_threads: int = 1) -> None:
    """Seed Python, NumPy (also Tianshou's Gaussian exploration noise) and torch; set torch's thread count."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)


# ------------------------------------------------------------------ encoding
def type_indices(scales: np.ndarray, type_scales: Sequence[Any]) -> np.ndarray:
    """Index of each agent's type key in the type vocabulary (demand scales: numbers, matched with ``isclose``;
    EV site categories: names, matched exactly); unknown keys raise."""
    if any(isinstance(k, str) for k in type_scales):
        vocab_names = [str(k) for k in type_scales]
        keys = [str(k) for k in np.asarray(scales, dtype=object)]
        unknown = sorted(set(keys) - set(vocab_names))
        if unknown:
            raise ValueError(f"agent type(s) {unknown} are not agent types this policy was trained for; known "
                             f"types: {vocab_names}")
        return np.array([vocab_names.index(k) for k in keys], dtype=np.int64)
    vocab = np.asarray(type_scales, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)
    match = np.isclose(scales[:, None], vocab[None, :])
    unknown = ~match.any(axis=1)
    if unknown.any():
        raise ValueError(
            f"agent demand scale(s) {sorted(set(scales[unknown].tolist()))} are not agent types this policy "
            f"was trained for; known type scales: {list(map(float, vocab))}"
        )
    return match.argmax(axis=1)


def encode_local(obs: np.ndarray, onehot: np.ndarray, log_column: int | None = BACKLOG_COLUMN) -> np.ndarray:
    """Local features: plain observation (column ``log_column``, demand response's backlog, -> log1p; all clipped
    to +-10) + type one-hot; float32. ``log_column=None``: no column is compressed (EV: already normalised)."""
    x = np.array(obs, dtype=np.float32, copy=True)
    if log_column is not None:
        x[..., log_column] = np.log1p(np.maximum(x[..., log_column], 0.0))
    np.clip(x, -FEATURE_CLIP, FEATURE_CLIP, out=x)
    return np.concatenate([x, onehot.astype(np.float32)], axis=-1)


def feature_dim(n_types: int, obs_dim: int = len(BASE_FEATURES)) -> int:
    return obs_dim + n_types


# --------------------------------------------------------------- neighbourhoods
def scenario_adjacency(config: BaselineConfig):
    """The scenario's communication graph (``config.graph`` on ``config.n_agents`` nodes) as a csr adjacency."""
    from cmarl_env import graphs

    built = graphs.make_edges(config.graph, config.n_agents, seed=config.graph_seed, **dict(config.graph_params))
    graphs.check_connected(built, config.n_agents)
    return graphs.adjacency(built, config.n_agents)


def neighbourhood_table(adjacency) -> np.ndarray:
    """(N, K + 1) agent indices of each closed neighbourhood: column 0 the agent itself, then its neighbours in
    ascending order, padded with -1 up to the largest degree K."""
    adj = adjacency.tocsr()
    adj.sort_indices()
    n = adj.shape[0]
    deg = np.diff(adj.indptr)
    table = np.full((n, int(deg.max(initial=0)) + 1), -1, dtype=np.int64)
    table[:, 0] = np.arange(n)
    for i in range(n):
        nbrs = adj.indices[adj.indptr[i]:adj.indptr[i + 1]]
        table[i, 1:1 + len(nbrs)] = nbrs
    return table


# ------------------------------------------------------------------- adapter
ENV_MODES = ("team", "local", "local_global", "local_neighbourhood")


class ScenarioVectorEnv(ArrayVectorEnv):
    """``num_envs`` copies of the N-agent scenario as a Tianshou ``BaseVectorEnv`` (see the module docstring).

    Like ``algorithms.train.TianshouBatchedEnv`` it has no workers: each copy
    is one vectorized core step. All episodes have the same length; on
    truncation ``step`` returns the final observation as ``obs_next`` (the
    learners bootstrap from it) and the Collector's following ``reset`` starts
    the copy's next episode at a random hour of the training window. In the
    slot modes the agents of one copy must be stepped together (Tianshou does
    so when it collects a number of steps).
    """

    def __init__(
        self,
        config: BaselineConfig,
        mode: str,
        *,
        num_envs: int | None = None,
        data: Any = None,
        seed: int | None = None,
        type_scales: Sequence[Any] | None = None,
    ):
        if mode not in ENV_MODES:
            raise ValueError(f"mode={mode!r} is not allowed; choose one of {ENV_MODES}")
        self.config = config
        self.mode = mode
        self.n_copies = int(num_envs or config.num_envs)
        self.adapter = adapter = config.domain_adapter
        self.domain = adapter.seam
        data = data if data is not None else adapter.load_data(config)
        self.cores = [adapter.make_core(config, data) for _ in range(self.n_copies)]
        first = self.cores[0]
        self.n_agents = n = first.n_agents
        self.action_dim = int(self.domain.action_width(first))
        vocab = type_scales if type_scales is not None else adapter.type_vocabulary(first)
        self.type_scales = tuple(k if isinstance(k, str) else float(k) for k in vocab)  # the type keys
        self.onehot = np.eye(len(self.type_scales), dtype=np.float32)[type_indices(adapter.agent_keys(first),
                                                                                   self.type_scales)]
        self.feat_dim = feature_dim(len(self.type_scales), len(self.domain.observation_layout(first)))
        self.log_column = adapter.log_column
        self.reward_scale = float(config.reward_scale)
        # learned-multiplier baselines: reward = the objective r0 / reward_scale, and the constraint signals of
        # each slot in its info (see ``step``); the cores' fixed-multiplier reward is not used
        self.signals = bool(config.lagrangian)
        if self.signals and mode == "team":
            raise ValueError("the constraint-signal infos of the learned-multiplier baselines need a slot mode")
        self.neighbours = neighbourhood_table(scenario_adjacency(config)) if mode == "local_neighbourhood" else None
        if self.neighbours is not None and self.neighbours.shape[0] != n:
            raise ValueError(f"the graph has {self.neighbours.shape[0]} nodes, the scenario {n} agents")
        self.slots = mode != "team"
        self.env_num = self.n_copies * n if self.slots else self.n_copies
        super().__init__(self.env_num)
        base = config.seed if seed is None else int(seed)
        self._reset_seeds: list[int | None] = [base * 1009 + k for k in range(self.n_copies)]
        self._pending: dict[int, tuple[np.ndarray, set[int]]] = {}
        k = self.action_dim
        if mode == "team":
            obs_shape, act_shape = (n, self.feat_dim), (k * n,)
        elif mode == "local":
            obs_shape, act_shape = (self.feat_dim,), (k,)
        elif mode == "local_neighbourhood":
            obs_shape, act_shape = (self.feat_dim * self.neighbours.shape[1],), (k,)
        else:
            obs_shape, act_shape = (self.feat_dim * (n + 1),), (k,)
        self._observation_space = spaces.Box(-np.inf, np.inf, shape=obs_shape, dtype=np.float32)
        self._action_space = spaces.Box(0.0, 1.0, shape=act_shape, dtype=np.float32)
        self._action_space.seed(base)
        self._empty_infos = np.array([{} for _ in range(self.env_num)], dtype=object)
        self.reset_signal_sums()

    # ------------------------------------------------------------ gym attrs
    def env_attribute(self, key: str) -> Any:
        table = {
            "action_space": self._action_space,
            "observation_space": self._observation_space,
            "metadata": {},
            "reward_range": (-math.inf, math.inf),
            "spec": None,
            "render_mode": None,
        }
        if key not in table:
            raise AttributeError(f"ScenarioVectorEnv has no env attribute {key!r}")
        return table[key]

    def set_env_attr(self, key: str, value: Any, id=None) -> None:
        raise AttributeError("ScenarioVectorEnv attributes are read-only")

    @property
    def single_action_space(self) -> spaces.Box:
        """Action space of one Tianshou env (slot: (K,), team: (KN,); K = the domain's action width), in [0, 1]."""
        return self._action_space

    @property
    def single_observation_space(self) -> spaces.Box:
        return self._observation_space

    # --------------------------------------------------------------- signals
    def reset_signal_sums(self) -> None:
        self.signal_sums = {key: 0.0 for key in self.adapter.total_keys} | {"reward": 0.0}
        self.signal_count = 0

    def signal_means(self) -> dict[str, float]:
        n = max(self.signal_count, 1)
        return {k: v / n for k, v in self.signal_sums.items()}

    # --------------------------------------------------------------- layout
    def _copies_of(self, ids: np.ndarray) -> list[int]:
        return sorted(set((ids // self.n_agents).tolist())) if self.slots else sorted(set(ids.tolist()))

    def _encode(self, obs: np.ndarray) -> np.ndarray:
        """Rows of one copy: (N, F) local features, or (N, F + N*F) with the global state."""
        local = encode_local(obs, self.onehot, self.log_column)
        if self.mode == "local_global":
            n = self.n_agents
            return np.concatenate([local, np.broadcast_to(local.reshape(1, -1), (n, n * self.feat_dim))], axis=1)
        if self.mode == "local_neighbourhood":  # [own features, neighbours' features, zero rows as padding]
            padded = np.concatenate([local, np.zeros((1, self.feat_dim), dtype=local.dtype)])
            return padded[self.neighbours].reshape(self.n_agents, -1)
        return local

    def _gather(self, per_copy: dict[int, np.ndarray], ids: np.ndarray) -> np.ndarray:
        if not self.slots:
            return np.stack([per_copy[int(k)] for k in ids])
        n = self.n_agents
        return np.stack([per_copy[int(i) // n][int(i) % n] for i in ids])

    # ----------------------------------------------------------------- API
    def reset(self, env_id=None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        self._assert_is_not_closed()
        ids = np.asarray(self._wrap_id(env_id), dtype=np.int64)
        n = self.n_agents
        per_copy: dict[int, np.ndarray] = {}
        for k in self._copies_of(ids):
            wanted = set(ids[ids // n == k].tolist()) if self.slots else {k}
            pending = self._pending.get(k)
            if pending is not None and wanted <= pending[1]:
                per_copy[k] = pending[0]
                left = pending[1] - wanted
                if left:
                    self._pending[k] = (pending[0], left)
                else:
                    del self._pending[k]
                continue
            seed = kwargs.get("seed")
            if seed is None:
                seed, self._reset_seeds[k] = self._reset_seeds[k], None
            elif not isinstance(seed, (int, np.integer)):
                seed = int(np.asarray(seed).ravel()[0]) + k
            obs = self._encode(self.cores[k].reset(seed=seed))
            per_copy[k] = obs
            slots = set(range(k * n, (k + 1) * n)) if self.slots else {k}
            left = slots - wanted
            if left:
                self._pending[k] = (obs, left)
            else:
                self._pending.pop(k, None)
        return self._gather(per_copy, ids), self._empty_infos[: len(ids)].copy()

    def step(self, action, id=None):
        self._assert_is_not_closed()
        if action is None:
            raise ValueError("action must be given (this vector env is synchronous)")
        ids = np.asarray(self._wrap_id(id), dtype=np.int64)
        act = np.asarray(action, dtype=np.float64)
        n = self.n_agents
        copies = self._copies_of(ids)
        if self.slots and len(ids) != len(copies) * n:
            raise ValueError(
                f"slot ids {ids.tolist()} do not cover whole scenario copies: the {n} agents of a copy act together"
            )
        row = {int(i): r for r, i in enumerate(ids)}
        obs_c, rew_c, info_c = {}, {}, {}
        truncated_c: dict[int, bool] = {}
        for k in copies:
            if self.slots:
                joint = act[[row[k * n + j] for j in range(n)]]
            else:
                joint = act[row[k]].reshape(n, self.action_dim)
            core = self.cores[k]
            out = core.step(joint)
            s = out.signals
            reward = (s.r0 if self.signals else out.reward) / self.reward_scale
            obs_c[k] = self._encode(out.obs)
            rew_c[k] = reward
            truncated_c[k] = bool(out.truncated)
            g = self.domain.global_signal(s)
            global_key, state_key = self.adapter.total_keys
            self.signal_sums[global_key] += float(g.sum())
            self.signal_sums[state_key] += self.adapter.state_total(s)
            self.signal_sums["reward"] += float(out.reward.mean())
            self.signal_count += 1
            if not self.slots:
                info_c[k] = {"agent_rew": reward}
            elif self.signals:  # the judged global constraint's cost and limit, the nu step's local signal
                info_c[k] = (s.r0, *self.adapter.grid_cost(core, s), self.domain.dual_local_signal(core, s))
        if self.slots:
            rew = np.array([rew_c[int(i) // n][int(i) % n] for i in ids], dtype=np.float64)
            trunc = np.array([truncated_c[int(i) // n] for i in ids], dtype=bool)
            if self.signals:  # raw signals of each slot: objective, global cost and its limit, local signal, agent
                infos = np.empty(len(ids), dtype=object)
                for r, i in enumerate(ids):
                    k, j = int(i) // n, int(i) % n
                    r0, grid, limit, r2 = info_c[k]
                    infos[r] = {"r0": float(r0[j]), "grid": float(grid[j]), "grid_limit": float(limit[j]),
                                "r2": float(r2[j]), "agent": j}
            else:
                infos = self._empty_infos[: len(ids)].copy()
        else:
            rew = np.array([rew_c[int(k)].mean() for k in ids], dtype=np.float64)
            trunc = np.array([truncated_c[int(k)] for k in ids], dtype=bool)
            infos = np.array([info_c[int(k)] for k in ids], dtype=object)
        return self._gather(obs_c, ids), rew, np.zeros(len(ids), dtype=bool), trunc, infos

    def seed(self, seed=None):
        base = seed if seed is None or isinstance(seed, (int, np.integer)) else int(np.asarray(seed).ravel()[0])
        if base is not None:
            self._reset_seeds = [int(base) * 1009 + k for k in range(self.n_copies)]
            self._action_space.seed(int(base))
        return [[base] for _ in range(self.env_num)]


# ------------------------------------------------------------------ networks
def build_local_actor(kind: str, input_dim: int, hidden_sizes: Sequence[int], action_dim: int = ACTION_DIM) -> nn.Module:
    """The per-agent actor (Tianshou networks), shared by all agents; input = local features, output = the agent's
    ``action_dim`` actions (the domain's action width: 2 for demand response, the ports of an EV site)."""
    if kind == "gaussian_clip":
        actor = ContinuousActorProbabilistic(
            preprocess_net=Net(state_shape=input_dim, hidden_sizes=hidden_sizes, activation=nn.Tanh),
            action_shape=action_dim, unbounded=True, conditioned_sigma=False,
        )
        with torch.no_grad():  # near-zero initial mean (a ~ 0.5) and a moderate initial std, as in Tianshou's PPO examples
            for m in actor.mu.modules():
                if isinstance(m, nn.Linear):
                    m.weight.mul_(0.01)
                    m.bias.zero_()
            actor.sigma_param.fill_(PPO_INIT_LOG_STD)
        return actor
    if kind == "gaussian_tanh":
        return ContinuousActorProbabilistic(
            preprocess_net=Net(state_shape=input_dim, hidden_sizes=hidden_sizes),
            action_shape=action_dim, unbounded=True, conditioned_sigma=True,
        )
    if kind == "deterministic":
        return ContinuousActorDeterministic(
            preprocess_net=Net(state_shape=input_dim, hidden_sizes=hidden_sizes),
            action_shape=action_dim, max_action=1.0,
        )
    raise ValueError(f"actor kind={kind!r} is not allowed; choose one of {sorted(ACTOR_KINDS)}")


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class SlotActor(nn.Module):
    """Tianshou actor for slot envs: applies the shared local actor to the local part of each slot's observation."""

    def __init__(self, inner: nn.Module, local_dim: int):
        super().__init__()
        self.inner = inner
        self.local_dim = int(local_dim)
        if isinstance(inner, ContinuousActorDeterministic):  # DDPG's policy reads it; PPO's warns if present
            self.max_action = inner.max_action

    def forward(self, obs, state=None, info=None):
        obs = torch.as_tensor(obs, dtype=torch.float32, device=_device_of(self))
        out, _ = self.inner(obs[:, : self.local_dim])
        return out, state


class TeamActor(nn.Module):
    """Tianshou actor for the team env: the shared local actor applied row-wise to (B, N, F) -> (B, 2N).

    Parameters are shared by all agents (the type one-hot tells the types
    apart) and agent i's action depends on its own row only, so execution is
    decentralised. Columns 2i, 2i+1 are agent i's action.
    """

    def __init__(self, inner: nn.Module, n_agents: int):
        super().__init__()
        self.inner = inner
        self.n_agents = int(n_agents)
        if isinstance(inner, ContinuousActorDeterministic):  # DDPG's policy reads it; PPO's warns if present
            self.max_action = inner.max_action

    def forward(self, obs, state=None, info=None):
        obs = torch.as_tensor(obs, dtype=torch.float32, device=_device_of(self))
        b = obs.shape[0]
        out, _ = self.inner(obs.reshape(b * self.n_agents, obs.shape[-1]))
        if isinstance(out, tuple):
            mu, sigma = out
            return (mu.reshape(b, -1), sigma.reshape(b, -1)), state
        return out.reshape(b, -1), state


class JointCritic(nn.Module):
    """Centralised critic ``Q_i(s, a_1..a_N)`` for every agent i: input = global state + joint action, N outputs.

    One trunk (a Tianshou ``Net``) with one output head per agent (agent i's
    Q on its own reward). Actions are clipped to the [-1, 1] range the
    environment actually applies.
    """

    def __init__(self, n_agents: int, feat_dim: int, hidden_sizes: Sequence[int], action_dim: int = ACTION_DIM):
        super().__init__()
        self.n_agents = int(n_agents)
        self.net = Net(state_shape=n_agents * (feat_dim + action_dim), action_shape=n_agents, hidden_sizes=hidden_sizes)

    def forward(self, obs, act, info=None) -> torch.Tensor:
        device = _device_of(self)
        obs = torch.as_tensor(obs, dtype=torch.float32, device=device)
        act = torch.as_tensor(act, dtype=torch.float32, device=device).clamp(-1.0, 1.0)
        x = torch.cat([obs.flatten(1), act.flatten(1)], dim=1)
        q, _ = self.net(x)
        return q


def own_action_q(critic: nn.Module, obs, taken, own: torch.Tensor, n_agents: int) -> torch.Tensor:
    """``Q_i(s, a_1 .. own_i .. a_N)`` for every agent i: the MADDPG actor-update input, where only agent i's own
    action is replaced by the current policy's and the others keep the buffer's (shape (B, N)).

    One critic call on N stacked copies of the batch: copy i carries ``own`` in agent i's slot.
    """
    device = own.device
    obs = torch.as_tensor(obs, dtype=torch.float32, device=device)
    b = obs.shape[0]
    own = own.reshape(b, 1, n_agents, -1)
    k = own.shape[-1]
    taken = torch.as_tensor(taken, dtype=torch.float32, device=device).reshape(b, 1, n_agents, k)
    eye = torch.eye(n_agents, device=device).reshape(1, n_agents, n_agents, 1)
    joint = eye * own + (1.0 - eye) * taken
    obs_rep = obs.unsqueeze(1).expand(b, n_agents, *obs.shape[1:]).reshape(b * n_agents, *obs.shape[1:])
    q_all = critic(obs_rep, joint.reshape(b * n_agents, n_agents * k)).reshape(b, n_agents, n_agents)
    return torch.diagonal(q_all, dim1=1, dim2=2)


# -------------------------------------------------------------------- policy
class MARLPolicy:
    """Decentralised execution of a trained baseline: the shared actor on each agent's local features.

    ``act(obs, scales)`` maps the (N, F) plain observations and the agents'
    type keys (demand scales; EV site categories) to deterministic (N, K)
    actions in [0, 1] (see ``ACTOR_KINDS`` for the output mapping of each
    actor kind). ``metadata["domain"]`` names the domain it was trained on
    (checkpoints without it: demand response).
    """

    def __init__(self, actor: nn.Module, metadata: Mapping[str, Any]):
        self.actor = actor
        self.metadata = dict(metadata)
        self.kind = str(metadata["actor_kind"])
        self.domain = str(metadata.get("domain", "demand_response"))
        keys = metadata.get("type_keys", metadata.get("type_scales"))
        self.type_scales = tuple(k if isinstance(k, str) else float(k) for k in keys)
        self.log_column = baseline_domain(self.domain).log_column
        self.name = str(metadata.get("name", "baseline"))

    @property
    def n_agents(self) -> int:
        return int(self.metadata["n_agents"])

    def onehot(self, scales: np.ndarray) -> np.ndarray:
        return np.eye(len(self.type_scales), dtype=np.float32)[type_indices(scales, self.type_scales)]

    @torch.no_grad()
    def act_features(self, feats: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(feats, dtype=torch.float32, device=_device_of(self.actor))
        out, _ = self.actor(x)
        raw = out[0] if isinstance(out, tuple) else out
        raw = torch.tanh(raw) if self.kind == "gaussian_tanh" else raw.clamp(-1.0, 1.0)
        return ((raw + 1.0) * 0.5).cpu().numpy().astype(np.float64)

    def act(self, obs: np.ndarray, scales: np.ndarray) -> np.ndarray:
        return self.act_features(encode_local(obs, self.onehot(scales), self.log_column))

    def __call__(self, obs: np.ndarray, scales: np.ndarray) -> np.ndarray:
        return self.act(obs, scales)


def _to_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu().clone()
    if isinstance(value, Mapping):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_cpu(v) for v in value]
    return value


def save_checkpoint(path: str | os.PathLike, policy: MARLPolicy, algorithm_state: Mapping[str, Any] | None = None) -> Path:
    """Write ``{format, format_version, actor, algorithm, metadata}`` atomically (temp file + rename).

    ``actor`` is the shared local actor's state dict (all ``load_policy``
    needs); ``algorithm`` is the full Tianshou algorithm state dict (actor,
    critics, target networks, optimizer states), which
    ``algorithm.load_state_dict`` accepts after ``baselines.marl.training.build``
    to resume training; ``metadata`` is JSON-friendly.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "actor": {k: v.detach().cpu().clone() for k, v in policy.actor.state_dict().items()},
        "algorithm": _to_cpu(dict(algorithm_state or {})),
        "metadata": clean_json(policy.metadata),
    }
    return atomic_write(path, lambda fh: torch.save(payload, fh), binary=True)


def load_policy(path: str | os.PathLike, device: str = "cpu") -> MARLPolicy:
    """Load a baseline checkpoint written by ``save_checkpoint`` (``weights_only`` safe load)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"baseline checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"baseline checkpoint {path} could not be read ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has format_version {payload.get('format_version')}; this code reads {CHECKPOINT_VERSION}")
    meta = payload["metadata"]
    actor = build_local_actor(meta["actor_kind"], int(meta["feature_dim"]), tuple(meta["hidden_sizes"]),
                              int(meta.get("action_dim", ACTION_DIM))).to(device)
    try:
        actor.load_state_dict(payload["actor"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: actor weights do not match the recorded architecture ({err})") from err
    meta = dict(meta)
    meta["path"] = str(path)
    return MARLPolicy(actor.eval(), meta)


# ---------------------------------------------------------------- evaluation
def evaluate_return(
    policy: MARLPolicy,
    config: BaselineConfig,
    episodes: int | None = None,
    seed: int | None = None,
    data: Any = None,
) -> dict[str, float]:
    """Training metric only: mean undiscounted per-agent Lagrangian return on fixed training episodes.

    This is the learning curve of a training run (before training and after
    every epoch, in ``metrics.json``'s ``history``), not an evaluation: it runs
    ``config.eval_episodes`` episodes of ``config.episode_length`` hours of the
    *training* environment (Lagrangian reward at the fixed multipliers, training
    window and its grid limit). Methods are compared with :func:`evaluate`
    (the one roll-out loop and feasibility rule of ``cmarl_env.evaluation``).

    Deterministic actions; the episodes' start hours are drawn from
    ``seed`` (default ``config.seed + 12345``), so two policies are compared
    on the same episodes. All episodes run in lockstep with one batched
    policy call per hour.
    """
    n_ep = int(episodes or config.eval_episodes)
    seed = config.seed + 12345 if seed is None else int(seed)
    adapter = config.domain_adapter
    domain = adapter.seam
    data = data if data is not None else adapter.load_data(config)
    cores = [adapter.make_core(config, data) for _ in range(n_ep)]
    obs = [core.reset(seed=seed * 7919 + e) for e, core in enumerate(cores)]
    onehot = policy.onehot(adapter.agent_keys(cores[0]))
    n = config.n_agents
    g_name, l_name = adapter.signal_names
    totals = {"lagrangian": 0.0, "r0": 0.0, g_name: 0.0, l_name: 0.0}
    for _ in range(config.episode_length):
        feats = encode_local(np.concatenate(obs), np.tile(onehot, (n_ep, 1)), adapter.log_column)
        actions = policy.act_features(feats)
        for e, core in enumerate(cores):
            out = core.step(actions[e * n:(e + 1) * n])
            obs[e] = out.obs
            totals["lagrangian"] += float(out.reward.sum())
            totals["r0"] += float(out.signals.r0.sum())
            totals[g_name] += float(domain.global_signal(out.signals).sum())
            totals[l_name] += float(domain.local_signal(out.signals).sum())
    per_agent_episode = n * n_ep
    return {
        "lagrangian_return": totals["lagrangian"] / per_agent_episode,
        "objective_return": totals["r0"] / per_agent_episode,
        f"mean_{g_name}": totals[g_name] / (per_agent_episode * config.episode_length),
        f"mean_{l_name}": totals[l_name] / (per_agent_episode * config.episode_length),
    }


class MARLController(Controller):
    """A trained baseline as a :class:`cmarl_env.evaluation.Controller`: decentralised execution.

    ``reset(core)`` computes the one-hot of every agent's type (its demand
    scale, ``core.layout.scale``; EV: its site category) in the policy's type
    vocabulary (unknown types raise ``ValueError``; a core of another domain
    than the policy's too); ``act(obs)`` is
    ``policy.act_features(encode_local(obs, onehot))`` on the plain
    observations, deterministic, plus Gaussian noise of std ``action_noise``
    (clipped to [0, 1]) seeded by ``(seed, episode start)`` when it is positive.
    ``summary()`` reports the per-agent Lagrangian return
    ``r0 + lambda (share - g) + nu local`` (the domain's signals) at the
    policy's training multipliers (``metadata["lambda_"]``, ``metadata["nu"]``).
    """

    augment = False

    def __init__(self, policy: MARLPolicy, *, action_noise: float = 0.0, seed: int = 0, name: str | None = None):
        check_real("action_noise", action_noise, 0.0, 1.0)
        self.policy = policy
        self.action_noise = float(action_noise)
        self.seed = int(seed)
        self.name = name or policy.name
        learned = policy.metadata.get("multipliers_final")
        self.learned = learned
        if learned is not None:  # the Lagrangian return of the summary at the mean learned multipliers
            self.lam, self.nu = float(learned["lambda_mean"]), -float(learned["mu_mean"])
        else:
            self.lam = float(policy.metadata.get("lambda_", 8.0))
            self.nu = float(policy.metadata.get("nu", -8.0))

    def reset(self, core) -> None:
        super().reset(core)
        from cmarl_env.domains import domain_of

        self.domain = domain_of(core)
        if self.domain.name != self.policy.domain:
            raise ValueError(f"{self.name} was trained on domain {self.policy.domain!r} and cannot run a "
                             f"{self.domain.name!r} core")
        adapter = baseline_domain(self.policy.domain)
        self.onehot = self.policy.onehot(adapter.agent_keys(core))
        self.rng = np.random.default_rng([self.seed, self.domain.episode_start(core)])
        self.lagrangian = 0.0

    def act(self, obs: np.ndarray) -> np.ndarray:
        a = self.policy.act_features(encode_local(obs, self.onehot, self.policy.log_column))
        if self.action_noise > 0:
            a = np.clip(a + self.rng.normal(0.0, self.action_noise, size=a.shape), 0.0, 1.0)
        return a

    def observe(self, step) -> None:
        s, d = step.signals, self.domain
        self.lagrangian += float(dynamics.lagrangian_reward(s.r0, d.global_signal(s), d.local_signal(s), self.lam,
                                                            self.nu, d.share(self.core, s)).sum())

    def summary(self) -> dict[str, Any]:
        if self.learned is not None:
            return {"lagrangian_return_per_agent": self.lagrangian / self.core.n_agents,
                    "learned_multipliers_mean": [self.lam, self.nu],
                    "note": "multipliers learned in training; the executed policy does not use them"}
        return {"lagrangian_return_per_agent": self.lagrangian / self.core.n_agents,
                "fixed_multipliers": [self.lam, self.nu]}


def evaluate(
    policy: MARLPolicy,
    start_hours: Sequence[int] = EVAL_START_HOURS,
    steps: int = 3000,
    constraint: float = 0.27,
    *,
    n_agents: int | None = None,
    action_noise: float = 0.0,
    seed: int = 0,
    dataset: str | None = None,
    data: BuildingData | None = None,
) -> dict[str, Any]:
    """Roll the policy out from each of ``start_hours`` for ``steps`` hours (see the module docstring).

    Each roll-out is :func:`cmarl_env.evaluation.rollout` of a
    :class:`MARLController` on ``evaluation_config(start_hour=h, steps=steps)``
    (its own grid limit, from the peak over its own hours) and is judged by
    ``Rollout.verdict``. ``n_agents`` defaults to the policy's training
    scenario (7 for the paper). Returns ``rollouts`` (each roll-out's
    ``Rollout.metrics()`` plus its index ``rollout``), the means over
    roll-outs, the ``best`` roll-out (feasible first, then least grid
    violation, then lowest total cost: the paper's "closest to satisfying the
    threshold") and ``infeasible_fraction``. A start hour with
    ``start_hour + steps`` past the end of the data raises ``ValueError``.
    """
    if policy.domain != "demand_response":
        raise ValueError(f"evaluate rolls out demand-response hours; {policy.name} was trained on domain "
                         f"{policy.domain!r}: use cmarl_env.evaluation.rollout(MARLController(policy), core, start, "
                         "steps, seed=...) or the benchmark runner")
    starts = [int(h) for h in start_hours]
    if not starts:
        raise ValueError("start_hours must name at least one start hour")
    for h in starts:
        check_int("start_hours[...]", h, 0, 10**7)
    check_int("steps", steps, 1, 10**7)
    check_real("constraint", constraint, 0.0, 1.0, low_open=True)
    check_real("action_noise", action_noise, 0.0, 1.0)
    n = int(n_agents or policy.n_agents)
    dataset = dataset or policy.metadata.get("dataset", DEFAULT_DATASET)
    data = data if data is not None else load_dataset(dataset)
    configs = [evaluation_config(n_agents=n, constraint=constraint, start_hour=h, steps=steps, n_hours=data.n_steps,
                                 dataset=dataset, seed=seed) for h in starts]  # all validated before any roll-out
    controller = MARLController(policy, action_noise=action_noise, seed=seed)
    rollouts = []
    for k, (h, cfg) in enumerate(zip(starts, configs)):
        result = rollout(controller, DemandResponseCore(cfg, data), h, steps)
        rollouts.append({"rollout": k} | result.metrics())
    best = min(rollouts, key=lambda r: (not r["feasible"], r["grid_violation_pct"], r["total_cost"]))
    keys = ("avg_grid_consumption", "grid_use_ratio", "energy_cost", "total_cost", "final_backlog_kwh",
            "backlog_slope_kwh_per_step", "backlog_slope_per_agent", "max_agent_backlog_kwh")
    return {
        "controller": controller.name,
        "n_agents": n,
        "n_rollouts": len(starts),
        "steps": steps,
        "start_hours": starts,
        "constraint": constraint,
        "action_noise": action_noise,
        "grid_limit": rollouts[0]["grid_limit"],
        "grid_limits": [r["grid_limit"] for r in rollouts],
        "feasibility_rule": {"grid_tolerance": feasibility.GRID_TOLERANCE,
                             "backlog_slope_limit_per_agent": feasibility.BACKLOG_SLOPE_LIMIT},
        "rollouts": rollouts,
        "mean": {k: float(np.mean([r[k] for r in rollouts])) for k in keys},
        "best": best,
        "infeasible_fraction": float(np.mean([not r["feasible"] for r in rollouts])),
    }


# ------------------------------------------------- per-agent TD targets (team)
def per_agent_td_targets(algorithm, batch, buffer, indices: np.ndarray):
    """One-step per-agent targets ``y_i = r_i + gamma * (1 - terminated) * Qtarget_i(s', a')``, shape (B, N).

    The team env stores each agent's scaled reward in ``info["agent_rew"]``;
    ``algorithm._target_q(buffer, indices)`` is Tianshou's own target
    computation (lagged actor and critics on ``obs_next``), which with the
    per-agent ``JointCritic`` heads returns one value per agent. Episodes end
    by truncation only, so Tianshou's ``value_mask`` keeps bootstrapping from
    the final observation.
    """
    device = next(algorithm.parameters()).device
    rew = torch.as_tensor(np.asarray(batch.info.agent_rew), dtype=torch.float32, device=device)
    with torch.no_grad():
        target = algorithm._target_q(buffer, indices)
    mask = torch.as_tensor(algorithm.value_mask(buffer, indices), dtype=torch.float32, device=device).unsqueeze(1)
    batch.returns = rew + algorithm.gamma * mask * target
    return batch
