"""``train_baseline``: train one MARL baseline with Tianshou's trainers and write a self-describing run folder.

A training *iteration* is one Tianshou training step: one collect of
``config.steps_per_collect`` env steps (MAPPO: ``num_envs * rollout_steps``;
off-policy: ``collect_steps``) followed by one update (MAPPO:
``update_repeats`` passes over the collected data in minibatches of
``batch_size``; off-policy: ``round(updates_per_step * collect_steps)``
gradient steps on minibatches of ``batch_size``). Off-policy runs first
collect ``warmup_steps`` env steps with uniformly random actions (not
counted in ``total_steps``).

Run folder: ``config.json`` (baseline config, scenario config and facts),
``policy.pt`` (checkpoint: actor weights + the full Tianshou algorithm state
+ metadata; written atomically), ``metrics.json`` (per-epoch evaluation
returns, losses and physical signals, timings -- a training record -- and, with
``eval_start_hours``, the evaluation of the final policy by
``baselines.marl.common.evaluate``) and ``versions.json``.
"""

from __future__ import annotations

import copy
import importlib
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from baselines.marl.common import (
    ACTOR_KINDS,
    ALL_BASELINES,
    BACKLOG_COLUMN,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    FEATURE_CLIP,
    METRICS_NAME,
    VERSIONS_NAME,
    BaselineConfig,
    MARLPolicy,
    ScenarioVectorEnv,
    evaluate,
    evaluate_return,
    save_checkpoint,
    seed_everything,
)
from cmarl_env.core import BASE_FEATURES
from cmarl_env.evaluation import evaluation_config
from cmarl_env.records import package_versions, write_json

from tianshou.data import Collector, VectorReplayBuffer
from tianshou.trainer import OffPolicyTrainerParams, OnPolicyTrainerParams

MODULES = {name: f"baselines.marl.{name}" for name in ALL_BASELINES}


def build(config: BaselineConfig, env: ScenarioVectorEnv):
    """The algorithm of ``config.name`` for ``env`` (``Built``: algorithm, shared local actor, actor kind)."""
    return importlib.import_module(MODULES[config.name]).build(config, env)


def make_env(config: BaselineConfig, data: Any = None, **kwargs: Any) -> ScenarioVectorEnv:
    return ScenarioVectorEnv(config, config.env_mode, data=data, **kwargs)


def policy_metadata(config: BaselineConfig, env: ScenarioVectorEnv, actor_kind: str) -> dict[str, Any]:
    """What ``load_policy`` and ``MARLController`` need (domain, action width, type keys, feature encoding) and the
    training scenario's facts. Demand response keeps its keys (``type_scales``, ``backlog_column``); EV records its
    site categories as ``type_keys``."""
    core = env.cores[0]
    dr = config.domain == "demand_response"
    if dr:
        types = {"type_scales": list(env.type_scales)}
        encoding = {"backlog_column": BACKLOG_COLUMN, "backlog_transform": "log1p", "clip": FEATURE_CLIP,
                    "type_onehot": "appended, over type_scales"}
        layout = list(BASE_FEATURES)
    else:
        types = {"type_keys": list(env.type_scales)}
        encoding = {"clip": FEATURE_CLIP, "type_onehot": "appended, over type_keys"}
        layout = list(env.domain.observation_layout(core))
    return {
        "name": config.name,
        "domain": config.domain,
        "n_agents": config.n_agents,
        "actor_kind": actor_kind,
        "action_mapping": ACTOR_KINDS[actor_kind],
        "action_dim": env.action_dim,
        "action_layout": env.adapter.action_layout(core),
        "feature_dim": env.feat_dim,
        "hidden_sizes": list(config.hidden_sizes),
        **types,
        "observation_layout": layout,
        "feature_encoding": encoding,
        "lambda_": config.lambda_,
        "nu": config.nu,
        "multipliers": "learned during training (lambda_, nu: their initial values)" if config.lagrangian
        else "fixed (lambda_, nu)",
        "reward_scale": config.reward_scale,
        **env.adapter.facts(core),
        "env_mode": env.mode,
        "config": config.to_dict(),
        "versions": package_versions(),
    }


def make_trainer_params(config: BaselineConfig, env: ScenarioVectorEnv, collector: Collector, *, progress: bool,
                        training_fn=None):
    """Tianshou trainer parameters in Tianshou's step units (slots count N per env step)."""
    factor = env.n_agents if env.slots else 1
    per_collect = config.steps_per_collect * factor
    per_epoch = max(1, math.ceil(math.ceil(config.total_steps / config.epochs) / config.steps_per_collect))
    common = dict(
        training_collector=collector,
        test_collector=None,
        max_epochs=config.epochs,
        epoch_num_steps=per_epoch * per_collect,
        collection_step_num_env_steps=per_collect,
        batch_size=config.batch_size,
        training_fn=training_fn,
        verbose=progress,
        show_progress=progress,
    )
    if config.on_policy:
        return OnPolicyTrainerParams(update_step_num_repetitions=config.update_repeats, **common)
    return OffPolicyTrainerParams(update_step_num_gradient_steps_per_sample=config.updates_per_step / factor, **common)


def make_collector(config: BaselineConfig, env: ScenarioVectorEnv, algorithm) -> Collector:
    factor = env.n_agents if env.slots else 1
    size = config.steps_per_collect * factor if config.on_policy else config.buffer_size * factor
    buffer = VectorReplayBuffer(max(size, len(env)), len(env))
    return Collector(algorithm, env, buffer, exploration_noise=not config.on_policy, raise_on_nan_in_buffer=False)


def warm_up(config: BaselineConfig, env: ScenarioVectorEnv, collector: Collector) -> int:
    """Off-policy: fill the buffer with ``warmup_steps`` env steps of uniformly random actions."""
    if config.on_policy or config.warmup_steps == 0:
        return 0
    steps = math.ceil(config.warmup_steps / env.n_copies) * env.n_copies
    factor = env.n_agents if env.slots else 1
    collector.reset()
    collector.collect(n_step=steps * factor, random=True)
    return steps


def train_baseline(
    config: BaselineConfig,
    out_dir: str | Path,
    *,
    progress: bool = False,
    data: Any = None,
    eval_start_hours: Sequence[int] = (),
    eval_steps: int = 3000,
) -> dict[str, Any]:
    """Train ``config.name``; write the run folder ``out_dir``; return a JSON-friendly summary.

    The summary holds the checkpoint path, training wall time, the number of
    iterations and seconds per iteration (collect + update, excluding the
    per-epoch evaluations), env steps, the evaluation return (mean per-agent
    Lagrangian return on fixed training episodes: a training metric) before and
    after training and, when ``eval_start_hours`` is not empty, ``evaluate`` of
    the final policy (one roll-out of ``eval_steps`` hours from each of those
    hours, through ``cmarl_env.evaluation.rollout`` and judged by its
    feasibility rule). Argument problems (including a start hour whose
    roll-out runs past the data) raise ``ValueError`` before anything is
    trained or written. ``data``: the domain's data (demand response: a ``BuildingData``; EV: the
    ``EVTables``), loaded when None. ``eval_start_hours`` are demand-response hours; EV policies are
    evaluated by the benchmark runner (``cmarl bench ev``) or ``cmarl_env.evaluation.rollout``.
    """
    if not isinstance(config, BaselineConfig):
        raise TypeError(f"config must be a BaselineConfig, got {type(config).__name__}")
    t_start = time.perf_counter()
    prev_threads = torch.get_num_threads()
    seed_everything(config.seed, config.num_threads)
    try:
        data = data if data is not None else config.domain_adapter.load_data(config)
        eval_start_hours = [int(h) for h in eval_start_hours]
        if eval_start_hours and config.domain != "demand_response":
            raise ValueError(f"eval_start_hours={eval_start_hours} evaluates demand-response hours; domain "
                             f"{config.domain!r}: leave it empty and roll the policy out with "
                             "cmarl_env.evaluation.rollout(MARLController(policy), core, start_day, steps)")
        for h in eval_start_hours:  # the evaluation windows are checked before anything is trained
            evaluation_config(n_agents=config.n_agents, constraint=config.constraint_fraction, start_hour=h,
                              steps=eval_steps, n_hours=data.n_steps, dataset=config.dataset)
        run_dir = Path(out_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        env = make_env(config, data)
        built = build(config, env)
        algorithm = built.algorithm
        metadata = policy_metadata(config, env, built.actor_kind)
        live = MARLPolicy(built.local_actor, metadata)
        eval_initial = evaluate_return(live, config, data=data)

        collector = make_collector(config, env, algorithm)
        warmup = warm_up(config, env, collector)
        counter = {"iterations": 0}

        def training_fn(epoch: int, env_step: int) -> None:
            counter["iterations"] += 1

        params = make_trainer_params(config, env, collector, progress=progress, training_fn=training_fn)
        trainer = algorithm.create_trainer(params)
        trainer.reset(reset_collectors=True, reset_collector_buffers=False)
        history: list[dict[str, Any]] = []
        train_loop = 0.0
        env.reset_signal_sums()
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            stats = trainer.execute_epoch()
            train_loop += time.perf_counter() - t0
            evaluation = evaluate_return(live, config, data=data)
            losses = stats.training_stat.get_loss_stats_dict() if stats.training_stat is not None else {}
            history.append({
                "epoch": epoch,
                "env_steps": counter["iterations"] * config.steps_per_collect,
                "iterations": counter["iterations"],
                "eval": evaluation,
                "losses": {k: float(v) for k, v in losses.items()},
                "train_signals": env.signal_means(),
            } | ({"multipliers": algorithm.multipliers()} if config.lagrangian else {}))
            env.reset_signal_sums()
        iterations = counter["iterations"]
        env_steps = iterations * config.steps_per_collect

        final_actor = copy.deepcopy(built.local_actor).cpu().eval()
        eval_final = history[-1]["eval"] if history else evaluate_return(live, config, data=data)
        seconds_per_iteration = train_loop / max(iterations, 1)
        if config.lagrangian:  # the learned multipliers: recorded, never used by the executed policy
            metadata["multipliers_final"] = algorithm.multipliers()
        metadata |= {
            "env_steps": env_steps,
            "warmup_steps": warmup,
            "iterations": iterations,
            "train_loop_time_s": train_loop,
            "seconds_per_iteration": seconds_per_iteration,
            "eval_initial": eval_initial,
            "eval_final": eval_final,
        }
        final = MARLPolicy(final_actor, metadata)
        checkpoint = save_checkpoint(run_dir / CHECKPOINT_NAME, final, algorithm.state_dict())
        rollouts = None
        if eval_start_hours:
            rollouts = evaluate(final, eval_start_hours, steps=eval_steps, constraint=config.constraint_fraction,
                                data=data)
        wall = time.perf_counter() - t_start
        versions = package_versions()
        write_json(run_dir / CONFIG_NAME, {
            "baseline_config": config.to_dict(),
            "env_config": config.core_config().to_dict(),
            "env": env.cores[0].describe(),
            "env_mode": env.mode,
            "seed": config.seed,
            "versions": versions,
        })
        write_json(run_dir / VERSIONS_NAME, versions)
        summary = {
            "name": config.name,
            "run_dir": str(run_dir),
            "checkpoint": str(checkpoint),
            "wall_time_s": wall,
            "train_loop_time_s": train_loop,
            "iterations": iterations,
            "seconds_per_iteration": seconds_per_iteration,
            "env_steps": env_steps,
            "warmup_steps": warmup,
            "eval_return_initial": eval_initial["lagrangian_return"],
            "eval_return_final": eval_final["lagrangian_return"],
            "eval_initial": eval_initial,
            "eval_final": eval_final,
        }
        dual = {}
        if config.lagrangian:
            summary["multipliers_final"] = metadata["multipliers_final"]
            dual = {"dual_history": algorithm.dual_history}  # one record per dual-ascent step (= per collect)
        write_json(run_dir / METRICS_NAME, summary | {"history": history, "evaluation": rollouts} | dual)
        if rollouts is not None:
            summary["evaluation"] = {k: rollouts[k] for k in ("infeasible_fraction", "mean", "best", "grid_limit")}
        env.close()
        return summary
    finally:
        torch.set_num_threads(prev_threads)
