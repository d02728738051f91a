"""Method adapters: one function per method kind turns a :class:`~benchmarks.suite.RunSpec` into a run folder.

``execute_run(spec, workdir)`` runs the method's roll-outs (see
``benchmarks.suite`` for the start-hour protocol), computes the common
metrics and writes the folder::

    spec.json          the run spec (suite, scenario, method, seed, start hours, spec hash)
    config.json        the method's resolved configuration (execution / baseline / LP settings)
    versions.json      Python and package versions
    facts.json         scenario facts (grid limit, peak demand, graph spectrum, ...)
    rollouts.json      per-roll-out metrics
    trajectories.npz   roll-out 0, per step: total_grid, total_demand, total_backlog, cost, grid_limit
                       (+ lambda (steps, k), nu, lambda_mean/min/max, nu_mean, consensus_error for the dual methods)
    trajectories.csv   the same, one row per step (first 20 agents' multipliers)
    training/          the baseline's own run folder (checkpoint, training metrics) for the MARL kinds
    metrics.json       summary metrics, written last

Metrics of a roll-out (identical definitions for every method):
``avg_grid_consumption`` = mean_t sum_i e_grid; ``grid_limit`` = c * peak of the
aggregate demand over the roll-out's own hours; ``grid_violation_pct`` =
100 * max(avg / limit - 1, 0); ``total_cost`` = sum_t sum_i price * e_grid;
``backlog_slope_kwh_per_step`` = least-squares slope of the total backlog over
the last third of the roll-out; ``infeasible`` = avg > limit * GRID_TOLERANCE
or slope > BACKLOG_SLOPE_LIMIT (the thresholds of ``baselines.marl``);
``cost_ratio`` = total_cost / the clairvoyant LP optimum of the same hours
(``baselines.oracle.solve_min_cost``; None when the LP is infeasible, i.e. no
controller can meet the limit and serve all demand in that window). The LP is
a lower bound: it needs all postponed demand served by the end, which a
controller that postpones indefinitely does not, so a ratio below 1 comes
with a positive backlog slope.

Run metrics (``metrics.json``) average the roll-outs (``cost_ratio`` over the
roll-outs with an LP optimum) and add ``infeasible_fraction``,
``train_wall_time_s`` (the shipped policies' recorded training time for the
dual methods, the baseline's training time, 0 for the references) and
``exec_seconds_per_step`` (execution wall time / (roll-outs * steps)).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cmarl_env.records import atomic_write_text, backlog_slope, dump_json, package_versions
from benchmarks.suite import DUAL_KINDS, MARL_KINDS, RunSpec, ScenarioSpec, register_kind

GRID_TOLERANCE = 1.02          # = baselines.marl.GRID_TOLERANCE (checked in tests/test_runner.py)
BACKLOG_SLOPE_LIMIT = 0.05     # = baselines.marl.BACKLOG_SLOPE_LIMIT [kWh/step]
RUN_FORMAT = "cmarl-bench-run/1"
TRAJ_KEYS = ("total_grid", "total_demand", "total_backlog", "cost", "grid_limit")


@dataclass
class MethodOutput:
    """What a method adapter returns; ``execute_run`` adds the common metrics and writes the folder."""

    rollouts: list[dict[str, Any]]
    trajectories: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    exec_wall_time_s: float = 0.0


@dataclass
class RunContext:
    workdir: Path
    cache_dir: Path | None = None
    _data: Any = None

    def data(self, dataset: str):
        if self._data is None or self._data.name != dataset:
            from cmarl_env.data import load_dataset

            self._data = load_dataset(dataset)
        return self._data


Adapter = Callable[[RunSpec, RunContext], MethodOutput]
METHODS: dict[str, Adapter] = {}


def register(kind: str, params: Sequence[str] = ()) -> Callable[[Adapter], Adapter]:
    """Decorator: make ``fn(spec, ctx) -> MethodOutput`` the adapter of ``kind`` (extensions, tests)."""

    def deco(fn: Adapter) -> Adapter:
        METHODS[kind] = fn
        from benchmarks import suite as _suite

        if kind not in _suite.KINDS:
            register_kind(kind, params)
        return fn

    return deco


# --------------------------------------------------------------------------- shared pieces
def rollout_record(k: int, start_hour: int, total_grid, total_backlog, cost, grid_limit: float, **extra) -> dict:
    total_grid = np.asarray(total_grid, dtype=np.float64)
    avg = float(total_grid.mean())
    slope = backlog_slope(total_backlog)
    rec = {
        "rollout": k,
        "start_hour": int(start_hour),
        "steps": int(total_grid.shape[0]),
        "avg_grid_consumption": avg,
        "grid_limit": float(grid_limit),
        "grid_use_ratio": avg / grid_limit if grid_limit > 0 else math.inf,
        "grid_violation_pct": 100.0 * max(avg / grid_limit - 1.0, 0.0) if grid_limit > 0 else math.inf,
        "total_cost": float(np.sum(cost)),
        "final_backlog_kwh": float(np.asarray(total_backlog)[-1]),
        "backlog_slope_kwh_per_step": slope,
    }
    rec.update(extra)
    rec["infeasible"] = is_infeasible(rec)
    return rec


def is_infeasible(rec: Mapping[str, Any]) -> bool:
    avg, limit, slope = rec.get("avg_grid_consumption"), rec.get("grid_limit"), rec.get("backlog_slope_kwh_per_step")
    if avg is None or slope is None:
        return True
    return bool(avg > limit * GRID_TOLERANCE or slope > BACKLOG_SLOPE_LIMIT)


def env_config(scenario: ScenarioSpec, start_hour: int, seed: int, *, augment: bool = False):
    """The environment of one roll-out: its data window is the roll-out's own hours (as algorithms.execute)."""
    from cmarl_env import EnvConfig

    return EnvConfig(
        n_agents=scenario.n_agents, dataset=scenario.dataset, demand_scales=scenario.demand_scales,
        graph=scenario.graph, graph_params=dict(scenario.graph_params), constraint_fraction=scenario.constraint,
        episode_length=scenario.steps, window=(start_hour, start_hour + scenario.steps), start_hour=start_hour,
        augment=augment, seed=seed,
    )


def _check_hours(spec: RunSpec, data) -> None:
    end = max(spec.start_hours) + spec.scenario.steps
    if end > data.n_steps:
        raise ValueError(f"scenario {spec.scenario.name!r}: start hour {max(spec.start_hours)} + steps "
                         f"{spec.scenario.steps} = {end} exceeds the dataset's {data.n_steps} hours")


def lp_reference(scenario: ScenarioSpec, start_hour: int, seed: int, data, cache_dir: Path | None,
                 backlog_cap: float | None = None, *, with_arrays: bool = False):
    """Clairvoyant LP optimum of one roll-out's hours, cached on disk (JSON) by scenario physics and start hour.

    Returns ``(summary dict, OracleResult or None)``; the result object is only
    computed (never read from the cache) when ``with_arrays`` is true.
    """
    from baselines.oracle import solve_min_cost
    from cmarl_env.core import DemandResponseCore

    key_src = {"dataset": scenario.dataset, "n_agents": scenario.n_agents, "demand_scales": scenario.to_dict()["demand_scales"],
               "constraint": scenario.constraint, "steps": scenario.steps, "start_hour": int(start_hour),
               "seed": seed if scenario.n_agents > data.n_buildings else 0, "backlog_cap": backlog_cap}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:20]
    path = None if cache_dir is None else Path(cache_dir) / "lp" / f"{key}.json"
    if path is not None and path.is_file() and not with_arrays:
        try:
            return json.loads(path.read_text()), None
        except (OSError, json.JSONDecodeError):
            pass
    core = DemandResponseCore(env_config(scenario, start_hour, seed), data)
    res = solve_min_cost(core, scenario.steps, start_hour, backlog_cap=backlog_cap)
    summary = res.to_dict() | {"key": key_src}
    if path is not None:
        atomic_write_text(path, dump_json(summary))
    return summary, (res if with_arrays else None)


# --------------------------------------------------------------------------- roll-outs
def sequential_rollouts(spec: RunSpec, data, make_actor: Callable[[Any], Callable[[Any, np.ndarray], np.ndarray]],
                        *, augment: bool = False) -> tuple[list[dict], dict[str, np.ndarray], float, dict]:
    """The run's roll-outs one after the other (one core each, own start hour).

    ``make_actor(core)`` returns ``act(core, obs) -> (N, 2) actions`` for one
    roll-out, so the execution time per step is that of one N-agent system
    (as for the dual methods). Returns (roll-out records, roll-out 0
    trajectories, execution wall time, facts of roll-out 0's core).
    """
    from cmarl_env.core import DemandResponseCore

    sc = spec.scenario
    steps = sc.steps
    records: list[dict] = []
    traj: dict[str, np.ndarray] = {}
    facts: dict[str, Any] = {}
    wall = 0.0
    for k, h in enumerate(spec.start_hours):
        core = DemandResponseCore(env_config(sc, h, spec.seed, augment=augment), data)
        obs = core.reset(start_hour=h)
        act = make_actor(core)
        grid, backlog, cost, demand = (np.empty(steps) for _ in range(4))
        t0 = time.perf_counter()
        for t in range(steps):
            out = core.step(act(core, obs))
            obs = out.obs
            s = out.signals
            grid[t] = s.e_grid.sum()
            backlog[t] = s.backlog.sum()
            cost[t] = -s.r0.sum()
            demand[t] = s.demand.sum()
        wall += time.perf_counter() - t0
        records.append(rollout_record(k, h, grid, backlog, cost, core.grid_limit))
        if k == 0:
            traj = {"total_grid": grid, "total_demand": demand, "total_backlog": backlog, "cost": cost,
                    "grid_limit": np.full(steps, core.grid_limit)}
            facts = core.describe()
    return records, traj, wall, facts


# --------------------------------------------------------------------------- adapters
@register("rule_based")
def run_rule_based(spec: RunSpec, ctx: RunContext) -> MethodOutput:
    """Battery first, then the grid within each agent's running share c/N (baselines.rule_based)."""
    from baselines.rule_based import RuleBasedController

    return _controller_run(spec, ctx, RuleBasedController)


@register("grid_only")
def run_grid_only(spec: RunSpec, ctx: RunContext) -> MethodOutput:
    """Everything from the grid, a = (0, 1): no battery, no postponement (baselines.rule_based.GridOnly)."""
    from baselines.rule_based import GridOnly

    return _controller_run(spec, ctx, GridOnly)


def _controller_run(spec: RunSpec, ctx: RunContext, factory) -> MethodOutput:
    data = ctx.data(spec.scenario.dataset)
    _check_hours(spec, data)
    names = []

    def make_actor(core):
        controller = factory()
        names.append(controller.name)
        return lambda core, _obs: controller.act(core)

    recs, traj, wall, facts = sequential_rollouts(spec, data, make_actor)
    return MethodOutput(recs, traj, config={"controller": names[0]}, facts=facts,
                        train={"train_wall_time_s": 0.0}, exec_wall_time_s=wall)


@register("lp_oracle")
def run_lp_oracle(spec: RunSpec, ctx: RunContext) -> MethodOutput:
    """The clairvoyant LP (baselines.oracle.solve_min_cost) on every roll-out's hours: the cost lower bound."""
    from baselines.oracle import episode_arrays
    from cmarl_env.core import DemandResponseCore

    sc = spec.scenario
    data = ctx.data(sc.dataset)
    _check_hours(spec, data)
    cap = spec.method.params.get("backlog_cap")
    recs: list[dict] = []
    traj: dict[str, np.ndarray] = {}
    wall = 0.0
    facts: dict[str, Any] = {}
    for k, h in enumerate(spec.start_hours):
        t0 = time.perf_counter()
        summary, res = lp_reference(sc, h, spec.seed, data, ctx.cache_dir, cap, with_arrays=(k == 0))
        wall += time.perf_counter() - t0
        if k == 0:
            core = DemandResponseCore(env_config(sc, h, spec.seed), data)
            facts = core.describe()
            demand, _solar, price = episode_arrays(core, sc.steps, h)
            limit = core.grid_limit
            if res is not None and res.ok:
                traj = {"total_grid": res.total_grid, "total_demand": demand.sum(axis=0),
                        "total_backlog": res.total_backlog, "cost": (price * res.e_grid).sum(axis=0),
                        "grid_limit": np.full(sc.steps, limit)}
            else:
                traj = {"total_demand": demand.sum(axis=0), "grid_limit": np.full(sc.steps, limit)}
        if summary["status"] == "optimal":
            grid_series = res.total_grid if (k == 0 and res is not None) else None
            if grid_series is not None:
                rec = rollout_record(k, h, res.total_grid, res.total_backlog, traj["cost"], summary["grid_limit"])
            else:  # from the cache: scalars only (the LP serves all demand by the end, so the slope is ~0)
                avg, limit = summary["avg_grid"], summary["grid_limit"]
                rec = {"rollout": k, "start_hour": int(h), "steps": sc.steps, "avg_grid_consumption": avg,
                       "grid_limit": limit, "grid_use_ratio": avg / limit,
                       "grid_violation_pct": 100.0 * max(avg / limit - 1.0, 0.0), "total_cost": summary["min_cost"],
                       "final_backlog_kwh": 0.0, "backlog_slope_kwh_per_step": 0.0}
                rec["infeasible"] = is_infeasible(rec)
            rec["lp_status"] = "optimal"
        else:
            rec = {"rollout": k, "start_hour": int(h), "steps": sc.steps, "avg_grid_consumption": None,
                   "grid_limit": summary.get("grid_limit"), "grid_use_ratio": None, "grid_violation_pct": None,
                   "total_cost": None, "final_backlog_kwh": None, "backlog_slope_kwh_per_step": None,
                   "infeasible": True, "lp_status": summary["status"], "lp_message": summary.get("message")}
        recs.append(rec)
    return MethodOutput(recs, traj, config={"solver": "HiGHS (scipy.optimize.linprog)", "backlog_cap": cap,
                                            "solve_wall_time_s": wall,
                                            "objective": "min total cost s.t. mean_t sum_i e_grid <= c, all demand "
                                                         "served by the end of the horizon"},
                        facts=facts, train={"train_wall_time_s": 0.0}, exec_wall_time_s=wall)


def _scales(scenario: ScenarioSpec) -> list[float]:
    from cmarl_env.config import paper_demand_scales

    s = scenario.demand_scales
    if s is None:
        return sorted(set(paper_demand_scales(scenario.n_agents)))
    if isinstance(s, (int, float)):
        return [float(s)]
    return sorted(set(float(v) for v in s))


def _set_threads() -> None:
    try:
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("CMARL_TORCH_THREADS", "1"))))
    except ImportError:  # pragma: no cover
        pass


def _dual_run(spec: RunSpec, ctx: RunContext, rounds_override: int | None) -> MethodOutput:
    """Algorithm 1 with the state-augmented policies (algorithms.execute.run_execution), one call per roll-out."""
    _set_threads()
    from algorithms.dual import DualConfig
    from algorithms.execute import ExecutionConfig, run_execution
    from algorithms.policy import load_policy, load_pretrained
    from cmarl_env.core import DemandResponseCore

    sc = spec.scenario
    data = ctx.data(sc.dataset)
    _check_hours(spec, data)
    params = dict(spec.method.params)
    paths = params.pop("policies", None)
    if rounds_override is not None:
        params["rounds"] = rounds_override
    dual = DualConfig(**params)

    def exec_config(k: int, h: int) -> Any:
        return ExecutionConfig(n_agents=sc.n_agents, graph=sc.graph, graph_params=dict(sc.graph_params),
                               constraint=sc.constraint, steps=sc.steps, start_hour=h, demand_scales=sc.demand_scales,
                               dataset=sc.dataset, dual=dual, seed=spec.seed,
                               record_agents=min(sc.record_agents, sc.n_agents) if k == 0 else 0)

    # policies are loaded once per run and checked against roll-out 0's environment (as run_execution does)
    core0 = DemandResponseCore(exec_config(0, spec.start_hours[0]).env_config(data.n_steps), data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if paths:
            policies = {float(s): load_policy(p, expected=core0) for s, p in paths.items()}
            missing = [s for s in _scales(sc) if s not in policies]
            if missing:
                raise ValueError(f"method {spec.method.name!r}: params.policies has no checkpoint for demand scale(s) "
                                 f"{missing} of scenario {sc.name!r}")
            source = {str(s): str(p) for s, p in paths.items()}
        else:
            policies = {s: load_pretrained(s, expected=core0) for s in _scales(sc)}
            source = "shipped pretrained policies (algorithms/pretrained)"
    load_warnings = sorted({str(w.message) for w in caught})
    del core0  # large scenarios: do not hold two cores
    train_time = 0.0
    for p in policies.values():
        t = p.metadata.get("train_wall_time_s")
        train_time += float(t) if t is not None else math.nan
    recs: list[dict] = []
    traj: dict[str, np.ndarray] = {}
    facts: dict[str, Any] = {}
    config: dict[str, Any] = {}
    wall = 0.0
    for k, h in enumerate(spec.start_hours):
        cfg = exec_config(k, h)
        res = run_execution(cfg, policies, data=data)
        m = res.metrics
        wall += float(m["wall_time_s"])
        t = res.trajectories
        rec = rollout_record(k, h, t["total_grid"], t["total_backlog"], t["cost"], m["grid_limit"],
                             consensus_error_final=_finite(m.get("consensus_error_final")),
                             consensus_bound_final=_finite(m.get("consensus_bound_final")),
                             lambda_mean_final=_finite(m.get("lambda_mean_final")),
                             lambda_spread_final=_finite(m.get("lambda_spread_final")),
                             seconds_per_step=m.get("seconds_per_step"))
        recs.append(rec)
        if k == 0:
            traj = {key: np.asarray(v) for key, v in t.items()}
            facts = dict(res.facts) | {"policy_warnings": load_warnings}
            config = res.config.to_dict() | {"policies": source}
    return MethodOutput(recs, traj, config=config, facts=facts,
                        train={"train_wall_time_s": train_time, "policies": source}, exec_wall_time_s=wall)


@register("consensus")
def run_consensus(spec: RunSpec, ctx: RunContext) -> MethodOutput:
    """Dual consensus (the paper's method): local dual steps + L rounds of neighbour averaging (default L = 1)."""
    return _dual_run(spec, ctx, None)


@register("no_consensus")
def run_no_consensus(spec: RunSpec, ctx: RunContext) -> MethodOutput:
    """The same execution without communication (L = 0)."""
    return _dual_run(spec, ctx, 0)


def _marl_run(spec: RunSpec, ctx: RunContext) -> MethodOutput:
    """Train (or load) a MARL baseline with fixed penalties, then roll it out deterministically from every start hour."""
    _set_threads()
    from baselines.marl import BaselineConfig, load_policy, train_baseline
    from baselines.marl.common import encode_local

    sc = spec.scenario
    data = ctx.data(sc.dataset)
    _check_hours(spec, data)
    params = dict(spec.method.params)
    checkpoint = params.pop("checkpoint", None)
    for key in ("hidden_sizes", "critic_hidden_sizes", "train_window"):
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    train: dict[str, Any]
    if checkpoint:
        policy = load_policy(checkpoint)
        meta = policy.metadata
        train = {"train_wall_time_s": meta.get("train_loop_time_s", math.nan), "checkpoint": str(checkpoint),
                 "env_steps": meta.get("env_steps")}
        config = {"checkpoint": str(checkpoint), "baseline_config": meta.get("config")}
    else:
        bconf = BaselineConfig(name=spec.method.kind, n_agents=sc.n_agents, constraint_fraction=sc.constraint,
                               seed=spec.seed, dataset=sc.dataset, **params)
        summary = train_baseline(bconf, ctx.workdir / "training", data=data)
        policy = load_policy(summary["checkpoint"])
        train = {"train_wall_time_s": summary["wall_time_s"], "env_steps": summary["env_steps"],
                 "iterations": summary["iterations"], "eval_return_initial": summary["eval_return_initial"],
                 "eval_return_final": summary["eval_return_final"], "checkpoint": "training/policy.pt"}
        config = {"baseline_config": bconf.to_dict()}
    def make_actor(core):
        onehot = policy.onehot(core.layout.scale)
        return lambda core, obs: policy.act_features(encode_local(obs, onehot))

    recs, traj, wall, facts = sequential_rollouts(spec, data, make_actor)
    return MethodOutput(recs, traj, config=config, facts=facts, train=train, exec_wall_time_s=wall)


for _kind in MARL_KINDS:
    register(_kind)(_marl_run)


# --------------------------------------------------------------------------- the run
def execute_run(spec: RunSpec, workdir: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Run one spec into ``workdir`` (metrics.json last); returns the metrics. Raises on failure."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    atomic_write_text(workdir / "spec.json", dump_json(spec.to_dict()))
    adapter = METHODS.get(spec.method.kind)
    if adapter is None:
        raise ValueError(f"method kind {spec.method.kind!r} has no adapter; known: {sorted(METHODS)}")
    ctx = RunContext(workdir=workdir, cache_dir=cache_dir)
    out = adapter(spec, ctx)
    if spec.oracle and spec.method.kind != "lp_oracle":
        data = ctx.data(spec.scenario.dataset)
        for rec, h in zip(out.rollouts, spec.start_hours):
            summary, _ = lp_reference(spec.scenario, h, spec.seed, data, cache_dir)
            rec["lp_status"] = summary["status"]
            rec["lp_min_cost"] = summary.get("min_cost")
            ok = summary["status"] == "optimal" and summary.get("min_cost") and rec.get("total_cost") is not None
            rec["cost_ratio"] = rec["total_cost"] / summary["min_cost"] if ok else None
    elif spec.method.kind == "lp_oracle":
        for rec in out.rollouts:
            rec["lp_min_cost"] = rec.get("total_cost")
            rec["cost_ratio"] = 1.0 if rec.get("lp_status") == "optimal" else None
    metrics = summarize(spec, out, time.perf_counter() - t0)
    atomic_write_text(workdir / "config.json", dump_json(out.config))
    atomic_write_text(workdir / "facts.json", dump_json(out.facts))
    atomic_write_text(workdir / "versions.json", dump_json(package_versions()))
    atomic_write_text(workdir / "rollouts.json", dump_json(out.rollouts))
    if out.trajectories:
        fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".trajectories.", suffix=".npz")
        os.close(fd)
        np.savez_compressed(tmp, **out.trajectories)
        os.replace(tmp, workdir / "trajectories.npz")
        write_trajectory_csv(workdir / "trajectories.csv", out.trajectories)
    atomic_write_text(workdir / "metrics.json", dump_json(metrics))
    return metrics


def summarize(spec: RunSpec, out: MethodOutput, run_wall: float) -> dict[str, Any]:
    recs = out.rollouts

    def mean(key: str) -> float | None:
        vals = [r[key] for r in recs if r.get(key) is not None and np.isfinite(r[key])]
        return float(np.mean(vals)) if vals else None

    method = spec.method
    n_roll = len(recs)
    total_steps = n_roll * spec.scenario.steps
    budget_detail = method.budget
    if method.kind in MARL_KINDS:
        steps = out.train.get("env_steps")
        budget_detail = f"{method.budget} budget" + (f": {int(steps):,} env steps" if steps else "")
    elif method.kind in DUAL_KINDS:
        budget_detail = "shipped pretrained policies" if "shipped" in str(out.train.get("policies", "")) else "custom policies"
    n_inf = int(sum(bool(r.get("infeasible")) for r in recs))
    return {
        "format": RUN_FORMAT,
        "run_id": spec.run_id,
        "spec_hash": spec.spec_hash(),
        "suite": spec.suite,
        "experiment": spec.experiment,
        "scenario": spec.scenario.name,
        "method": method.name,
        "kind": method.kind,
        "label": method.label,
        "reference": method.reference,
        "seed": spec.seed,
        "n_agents": spec.scenario.n_agents,
        "steps": spec.scenario.steps,
        "n_rollouts": n_roll,
        "mean_cost": mean("total_cost"),
        "cost_ratio": mean("cost_ratio"),
        "lp_optimal_rollouts": int(sum(r.get("lp_status") == "optimal" for r in recs)) if spec.oracle or
        method.kind == "lp_oracle" else None,
        "avg_grid_consumption": mean("avg_grid_consumption"),
        "grid_limit": mean("grid_limit"),
        "grid_use_ratio": mean("grid_use_ratio"),
        "grid_violation_pct": mean("grid_violation_pct"),
        "backlog_slope_kwh_per_step": mean("backlog_slope_kwh_per_step"),
        "final_backlog_kwh": mean("final_backlog_kwh"),
        "infeasible_fraction": n_inf / n_roll if n_roll else None,
        "n_infeasible": n_inf,
        "consensus_error_final": mean("consensus_error_final"),
        "train_wall_time_s": _finite(out.train.get("train_wall_time_s")),
        "exec_wall_time_s": out.exec_wall_time_s,
        "exec_seconds_per_step": (out.exec_wall_time_s / total_steps if total_steps and method.kind != "lp_oracle"
                                  else None),
        "run_wall_time_s": run_wall,
        "budget": method.budget,
        "budget_detail": budget_detail,
        "note": method.note,
        "thresholds": {"grid_tolerance": GRID_TOLERANCE, "backlog_slope_limit_kwh_per_step": BACKLOG_SLOPE_LIMIT},
        "train": {k: v for k, v in out.train.items()},
    }


def error_record(spec: RunSpec, err: BaseException | str, tb: str | None = None) -> dict[str, Any]:
    return {
        "format": "cmarl-bench-error/1",
        "run_id": spec.run_id,
        "spec_hash": spec.spec_hash(),
        "error_type": type(err).__name__ if isinstance(err, BaseException) else "Error",
        "error": str(err),
        "traceback": tb if tb is not None else (traceback.format_exc() if isinstance(err, BaseException) else ""),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
    }


# --------------------------------------------------------------------------- io helpers
def write_trajectory_csv(path: Path, traj: Mapping[str, np.ndarray], max_agents: int = 20) -> None:
    steps = max(np.asarray(v).shape[0] for v in traj.values())
    cols: list[tuple[str, np.ndarray]] = []
    for k, v in traj.items():
        v = np.asarray(v)
        if v.shape[0] != steps:
            continue
        if v.ndim == 1:
            cols.append((k, v))
        elif v.ndim == 2:
            for i in range(min(v.shape[1], max_agents)):
                cols.append((f"{k}_{i}", v[:, i]))
    header = "step," + ",".join(c for c, _ in cols)
    table = np.column_stack([np.arange(steps)] + [c for _, c in cols]) if cols else np.arange(steps)[:, None]
    lines = [header] + [",".join(f"{x:.6g}" for x in row) for row in table]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
