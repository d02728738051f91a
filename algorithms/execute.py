"""Online execution: the paper's Algorithm 1 for N agents, vectorized.

Every hour each agent acts with its type's state-augmented policy on its
observation and its own multipliers; then every agent takes a local dual step
on lambda, L consensus rounds average lambda with the neighbours over the
communication graph (the sparse consensus matrix of ``DualConfig.weights``:
the paper's random walk by default, or Metropolis-Hastings), and nu takes a
local step.
Policy inference is batched per agent type; nothing loops over agents in
Python. ``run_execution`` returns the trajectories and metrics that
``write_run`` stores as a self-describing run folder.
"""

from __future__ import annotations

import functools
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from algorithms import theory
from algorithms.comm import comm_settings
from algorithms.dual import LAMBDA_RANGE, NU_RANGE, DualConfig, DualConsensus
from cmarl_env import EnvConfig, graphs
from cmarl_env.config import ConfigBase, check_range
from cmarl_env.domains import domain_of
from cmarl_env.evaluation import Controller, evaluation_config, rollout
from cmarl_env.records import package_versions, publish_folder, write_json, write_trajectory_csv
from cmarl_env.core import DemandResponseCore
from cmarl_env.data import BuildingData

Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ExecutionConfig(ConfigBase):
    """One execution run: scenario, dual step sizes, consensus rounds.

    The multipliers are projected onto the ranges of ``dual`` but normalised in
    the observations by ``observation_*_range``: the ranges the policies were
    trained on (their checkpoints must match them). A projection range narrower
    than the training range is an ablation of Algorithm 1, not of the policy.
    """

    n_agents: int = 7
    graph: str = "two_clusters"
    graph_params: Mapping[str, Any] = field(default_factory=dict)
    constraint: float = 0.27
    steps: int = 3000
    start_hour: int = 0
    demand_scales: tuple[float, ...] | float | None = None
    dataset: str = "citylearn_challenge_2022_phase_all"
    dual: DualConfig = field(default_factory=DualConfig)
    seed: int = 0
    record_agents: int = 1000
    observation_lambda_range: tuple[float, float] = LAMBDA_RANGE
    observation_nu_range: tuple[float, float] = NU_RANGE

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps={self.steps!r} must be an integer >= 1")
        if not isinstance(self.record_agents, int) or self.record_agents < 0:
            raise ValueError(f"record_agents={self.record_agents!r} must be an integer >= 0")
        check_range("observation_lambda_range", self.observation_lambda_range, lower=0.0)
        check_range("observation_nu_range", self.observation_nu_range)
        for name in ("observation_lambda_range", "observation_nu_range"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    def env_config(self, n_steps: int, augment: bool = True) -> EnvConfig:
        """The environment of this run (``cmarl_env.evaluation.evaluation_config``: the window is the run's hours)."""
        return evaluation_config(n_agents=self.n_agents, constraint=self.constraint, start_hour=self.start_hour,
                                 steps=self.steps, n_hours=n_steps, dataset=self.dataset,
                                 demand_scales=self.demand_scales, graph=self.graph, graph_params=self.graph_params,
                                 seed=self.seed, augment=augment, lambda_range=self.observation_lambda_range,
                                 nu_range=self.observation_nu_range)


@dataclass
class ExecutionResult:
    config: ExecutionConfig
    metrics: dict[str, Any]
    trajectories: dict[str, np.ndarray]
    facts: dict[str, Any]


MULTITHREAD_MIN_AGENTS = 10_000
INFERENCE_CHUNK = 16_384  # rows per forward pass: fits the caches, measured 2.5x faster than 65,536 on 2 cores
SPECTRAL_MAX_N = 20_000  # rho is computed up to this N (sparse eigensolvers get slow beyond)
NX_GRAPH_MAX_N = 20_000  # above this, random graphs are built as edge arrays only


def build_graph(graph: Any, graph_params: Mapping[str, Any], n_agents: int, seed: int):
    """The communication graph (networkx, or edge arrays for large N) and its sparse random-walk matrix.

    Only the matrix's non-zero pattern is used downstream: :class:`algorithms.dual.DualConsensus` builds the
    consensus matrix of ``DualConfig.weights`` (random walk or Metropolis) from it.
    """
    params = dict(graph_params)
    if not isinstance(graph, str):
        built = graph
    elif n_agents > NX_GRAPH_MAX_N and graph in graphs.RANDOM_GRAPH_NAMES:
        built = graphs.random_edges(graph, n_agents, seed=seed, **params)
    else:
        built = graphs.make_graph(graph, n_agents, seed=seed, **params)
    graphs.check_connected(built, n_agents)
    return built, graphs.random_walk_matrix(built, n_agents)


def policies_for(core: DemandResponseCore, policies: Mapping[float, Policy] | None) -> list[tuple[np.ndarray, Policy]]:
    """(agent indices, policy) per agent type; the shipped policies for the types without one.

    Agent types come from the core's domain (``domain.type_keys``/``type_mask``): demand scales for
    demand response, site types (``"public"``, ...) for EV charging, which ships no policies yet (a
    type without a policy there raises ``ValueError`` naming it).

    A checkpoint-backed policy (``algorithms.policy.AugmentedPolicy``) is checked against the core before
    anything runs: its demand scale must be one of the core's agent types (``UnknownDemandScaleError``) and
    the checkpoint must have been trained for that scale, this observation layout, these multiplier ranges
    and this dataset (``CheckpointMismatchError`` naming the file and the field). Plain callables are
    the caller's responsibility.
    """
    policies = dict(policies or {})
    domain = domain_of(core)
    for scale, policy in policies.items():
        if hasattr(policy, "check_assignment"):
            policy.check_assignment(core, scale)
    groups = []
    keys = domain.type_keys(core)
    if not domain.ships_policies:
        missing = [k for k in keys if k not in policies]
        if missing:
            raise ValueError(f"no policy for agent type(s) {missing} of the {domain.name} domain (no shipped "
                             f"policies there); pass policies={{type: policy}} for the types {keys}")
    for scale in keys:
        if scale in policies:
            policy = policies[scale]
            if hasattr(policy, "check_assignment"):
                policy = functools.partial(policy.act, chunk_size=INFERENCE_CHUNK)
        else:
            from algorithms.policy import load_pretrained

            pretrained = load_pretrained(scale, expected=core)
            # every torch thread for large batches (inference dominates there); one for small ones,
            # where thread hand-offs cost more than the matrix products
            pretrained.num_threads = None if core.n_agents >= MULTITHREAD_MIN_AGENTS else 1
            policy = functools.partial(pretrained.act, chunk_size=INFERENCE_CHUNK)
        groups.append((np.flatnonzero(domain.type_mask(core, scale)), policy))
    return groups


def act(groups: list[tuple[np.ndarray, Policy]], obs: np.ndarray) -> np.ndarray:
    """Batched inference, one call per agent type."""
    if len(groups) == 1:
        return np.asarray(groups[0][1](obs), dtype=np.float64)
    actions = None
    for idx, policy in groups:
        a = policy(obs[idx])
        if actions is None:  # (N, action width): 2 for demand response, the ports for EV charging
            actions = np.empty((obs.shape[0],) + np.shape(a)[1:])
        actions[idx] = a
    return actions


class DualConsensusController(Controller):
    """Algorithm 1 as a controller: the state-augmented policies act on (observation, lambda_i, nu_i); after every
    hour each agent takes the local dual step on lambda, L consensus rounds average it with the neighbours, and
    nu takes its local step. ``rounds = 0`` in ``dual`` is "no consensus".

    The communication graph is the scenario's (``core.config.graph``, seeded by ``core.config.seed``).
    ``record_agents`` agents' multipliers are kept per step, with the consensus error against the stationary
    weights of the consensus matrix and the Theorem 5.1 bound.

    The signals come through the core's domain (:mod:`cmarl_env.domains`): the global signal, each agent's
    share of the limit (read every step when the domain's limit changes from step to step) and the local
    signal of the nu step (``domain.dual_local_signal``). ``dual=None`` takes ``DualConfig()`` with the
    domain's ``dual_defaults`` (none for demand response).
    """

    augment = True

    def __init__(self, dual: DualConfig | None = None, policies: Mapping[float, Policy] | None = None, *,
                 record_agents: int = 1000, name: str | None = None, theory: bool = True):
        self._dual_given = dual
        self.dual_config = dual or DualConfig()
        self.policies = policies
        self.record_agents = int(record_agents)
        self.compute_theory = bool(theory)
        self._theory: dict[str, Any] | None = None
        self.name = name or ("consensus" if self.dual_config.rounds > 0 else "no_consensus")

    def reset(self, core: DemandResponseCore) -> None:
        super().reset(core)
        cfg, n = core.config, core.n_agents
        self.domain = domain = domain_of(core)
        if "lambda" not in core.layout_names:
            raise ValueError(f"{type(self).__name__} needs a core whose observations carry the multipliers "
                             f"(config augment=True); this core's columns are {list(core.layout_names)}")
        if self._dual_given is None and domain.dual_defaults:
            self.dual_config = DualConfig(**domain.dual_defaults)
        graph, walk = build_graph(cfg.graph, cfg.graph_params, n, cfg.seed)
        # DualConsensus builds its consensus matrix from the graph's pattern with ``dual.weights``; the spectral
        # summary (rho, Theorem 5.1) must describe that same matrix
        self.spectral = (theory.spectral_summary(graph, n, self.dual_config.eps, weights=self.dual_config.weights)
                         if n <= SPECTRAL_MAX_N else None)
        self.rho_l = self.spectral.rho ** self.dual_config.rounds if self.spectral is not None else float("nan")
        self.n_edges = int(walk.nnz // 2)
        start = domain.episode_start(core)
        share = core.share if not domain.share_varies else domain.limit(core, 0) / n
        self.dual = DualConsensus(walk, self.dual_config, n_agents=n, share=share,
                                  comm_seed=(self.dual_config.comm_seed, int(cfg.seed), start),
                                  redraw=self._redraw(cfg, n) if self.dual_config.graph_redraw > 0 else None)
        self.weights = self.dual.weights
        self.groups = policies_for(core, self.policies)
        core.lam, core.nu = self.dual.lam.copy(), self.dual.nu.copy()
        self.sigma = 0.0
        k = min(self.record_agents, n)
        steps = domain.episode_steps(core)
        self._t = 0
        self._traces = {key: np.empty(steps) for key in (
            "unmet_r2", "consensus_error", "consensus_bound", "lambda_mean", "lambda_min", "lambda_max", "nu_mean")}
        self._traces["lambda"] = np.empty((steps, k))
        self._traces["nu"] = np.empty((steps, k))

    def _redraw(self, cfg, n: int):
        """``epoch -> W``: the consensus matrix of a fresh draw of the scenario's random graph family."""
        name = cfg.graph if isinstance(cfg.graph, str) else None
        family = graphs._normalize_name(name) if name is not None else None
        if family not in graphs.RANDOM_GRAPH_NAMES:
            raise ValueError(f"graph_redraw={self.dual_config.graph_redraw} needs a random graph family "
                             f"({', '.join(graphs.RANDOM_GRAPH_NAMES)}); the scenario's graph "
                             f"{name or 'custom'!r} has one draw only")
        comm_seed, weights = self.dual_config.comm_seed, self.dual_config.weights

        def redraw(epoch: int):
            seed = int(np.random.SeedSequence([comm_seed, int(cfg.seed), int(epoch)]).generate_state(1)[0])
            _, walk = build_graph(family, cfg.graph_params, n, seed)
            return graphs.consensus_matrix(walk, n, weights)

        return redraw

    def act(self, obs: np.ndarray) -> np.ndarray:
        return act(self.groups, obs)

    def observe(self, step) -> None:
        sig, core, weights, cfg, domain = step.signals, self.core, self.weights, self.dual_config, self.domain
        g = domain.global_signal(sig)
        share = domain.share(core, sig)
        deviation = g - share
        self.sigma = max(self.sigma, theory.weighted_norm(deviation - weights @ deviation, weights))
        lam, nu = self.dual.step(g, domain.dual_local_signal(core, sig),
                                 share=share if domain.share_varies else None)
        core.lam, core.nu = lam, nu
        tr, t, k = self._traces, self._t, self._traces["lambda"].shape[1]
        tr["unmet_r2"][t] = domain.local_signal(sig).sum()
        tr["consensus_error"][t] = theory.weighted_norm(lam - weights @ lam, weights)
        rho_l = self.rho_l
        tr["consensus_bound"][t] = (rho_l * cfg.alpha * self.sigma / (1.0 - rho_l)
                                    if cfg.rounds > 0 and rho_l < 1 else math.inf)
        tr["lambda_mean"][t], tr["lambda_min"][t], tr["lambda_max"][t] = lam.mean(), lam.min(), lam.max()
        tr["nu_mean"][t] = nu.mean()
        tr["lambda"][t] = lam[:k]
        tr["nu"][t] = nu[:k]
        self._t = t + 1

    def trace(self) -> dict[str, np.ndarray]:
        return {key: v[: self._t] for key, v in self._traces.items()}

    def theory(self) -> dict[str, Any] | None:
        """The consensus error of this roll-out against the bounds that apply to its communication models
        (``algorithms.comm_theory.fault_theory``; ``None`` without faults or when ``theory=False``)."""
        if self._theory is None and self.compute_theory and self.dual_config.faulty and self._t:
            from algorithms.comm_theory import fault_theory

            comm = self.dual.comm_facts()
            self._theory = fault_theory(
                self.dual_config, self.dual.W, self.weights, self.spectral.rho if self.spectral is not None else None,
                self.dual.sigma_eff, self.dual.spread_eff, self._traces["consensus_error"][: self._t],
                joint_window=comm.get("joint_window_hours"))
        return self._theory

    def summary(self) -> dict[str, Any]:
        lam, n = self.dual.lam, self.core.n_agents
        errors = self._traces["consensus_error"][self._t // 2: self._t]
        theory = self.theory()
        fault = {"fault_bound": None, "fault_bound_kind": None, "fault_bound_holds": None}
        if theory is not None:
            fault = {"fault_bound": theory["model_bound"], "fault_bound_kind": theory["model_bound_kind"],
                     "fault_bound_holds": theory["model_bound_holds"]}
        return fault | {
            "lambda_final": lam.tolist() if n <= 10_000 else lam[:100].tolist(),
            "lambda_final_truncated": n > 10_000,
            "lambda_spread_final": float(lam.max() - lam.min()),
            "lambda_mean_final": float(lam.mean()),
            "lambda_at_cap_fraction": float(np.mean(lam >= self.dual_config.lambda_max)),
            "nu_mean_final": float(self.dual.nu.mean()),
            "consensus_error_final": float(self._traces["consensus_error"][self._t - 1]) if self._t else None,
            "consensus_error_mean": float(np.mean(errors)) if errors.size else None,
            "consensus_error_rms": float(np.sqrt(np.mean(errors ** 2))) if errors.size else None,
            "consensus_bound_final": float(self._traces["consensus_bound"][self._t - 1]) if self._t else None,
        }

    def facts(self) -> dict[str, Any]:
        """Graph facts of the last roll-out for the run folder."""
        return {"graph": self.core.config.graph if isinstance(self.core.config.graph, str) else "custom",
                "consensus_weights": self.dual_config.weights,
                "n_edges": self.n_edges, "rho": self.spectral.rho if self.spectral is not None else None,
                "rho_L": self.rho_l, "sigma_observed": self.sigma, "recorded_agents": self._traces["lambda"].shape[1],
                "communication": comm_settings(self.dual_config) | {"faulty": self.dual_config.faulty}
                | self.dual.comm_facts() | ({"theory": self.theory()} if self.theory() is not None else {})}


class FixedMultipliers(Controller):
    """Every agent's multipliers held at (lam, nu): no dual steps, no consensus (the grid searches).

    With ``augment=True`` the state-augmented policies see the fixed multipliers; with ``augment=False``
    policies trained on plain observations (IPPO) act on the plain observation.
    """

    def __init__(self, lam: float, nu: float, policies: Mapping[float, Policy] | None = None, *, augment: bool = True):
        self.lam, self.nu, self.policies, self.augment = float(lam), float(nu), policies, bool(augment)
        self.name = f"fixed({self.lam:g}, {self.nu:g})"

    def reset(self, core: DemandResponseCore) -> None:
        super().reset(core)
        if self.augment:
            core.set_multipliers(self.lam, self.nu)
        self.groups = policies_for(core, self.policies)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return act(self.groups, obs)


def run_execution(
    config: ExecutionConfig,
    policies: Mapping[float, Policy] | None = None,
    *,
    data: BuildingData | None = None,
    progress: bool = False,
) -> ExecutionResult:
    """Algorithm 1 for one run: :class:`DualConsensusController` through the one roll-out loop."""
    if data is None:
        from cmarl_env.data import load_dataset

        data = load_dataset(config.dataset)
    core = DemandResponseCore(config.env_config(data.n_steps), data)
    controller = DualConsensusController(config.dual, policies, record_agents=config.record_agents)
    result = rollout(controller, core, config.start_hour, config.steps, progress=progress)
    metrics = result.metrics() | {"agent_steps_per_s": core.n_agents * config.steps / max(result.wall_time_s, 1e-12)}
    facts = core.describe() | controller.facts()
    return ExecutionResult(config, metrics, result.trajectories(), facts)


def write_run(result: ExecutionResult, out: Path) -> Path:
    """A self-describing run folder: config, facts, versions, trajectories, metrics (written last).

    Every file is written into a hidden staging folder inside ``out`` first and then moved in, ``metrics.json``
    last (``cmarl_env.records.publish_folder``): a folder with ``metrics.json`` is complete, one without it was
    interrupted. ``cmarl run`` holds ``out``'s lock (``cmarl_env.records.FolderLock``) while it does this.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        write_json(staging / "config.json", result.config.to_dict())
        write_json(staging / "facts.json", result.facts | {"versions": package_versions()})
        np.savez_compressed(staging / "trajectories.npz", **result.trajectories)
        write_trajectory_csv(staging / "trajectories.csv", result.trajectories, step_column=False)
        write_json(staging / "metrics.json", result.metrics)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return publish_folder(staging, out)

