"""One benchmark run: prepare the method (registry), roll it out from every start hour, write the run folder.

``execute_run(spec, workdir)`` writes::

    spec.json          the run spec (suite, scenario, method, seed, start hours, spec hash)
    config.json        the method's resolved configuration (dual step sizes, penalties, tuned rule, LP settings)
    versions.json      Python and package versions
    facts.json         scenario facts of roll-out 0 (grid limit, peak demand, graph spectrum, tuning tables, ...)
    rollouts.json      per-roll-out metrics (``cmarl_env.evaluation.Rollout.metrics``)
    trajectories.npz   roll-out 0, per step (totals, grid limit, the controller's traces); also as .csv
    training/          the method's own training folder (checkpoint, training curve) for the learned baselines
    metrics.json       the run's metrics, written last

Every method goes through the same loop (``cmarl_env.evaluation.rollout``)
on the same start hours, and every verdict comes from the one feasibility
rule (``cmarl_env.evaluation.feasibility``). ``cost_ratio`` divides a
roll-out's total cost (energy plus the terminal backlog at the horizon's
highest price) by the unbounded clairvoyant LP's cost on the same hours: the
LP is a lower bound for every controller, so the ratio is at least 1 up to
the LP's idealised battery.
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
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from benchmarks import registry
from benchmarks.registry import Prepared, RunContext
from benchmarks.suite import RunSpec, ScenarioSpec
from cmarl_env.evaluation import BACKLOG_SLOPE_LIMIT, GRID_TOLERANCE, rollout
from cmarl_env.records import atomic_write_text, dump_json, package_versions, write_trajectory_csv

RUN_FORMAT = "cmarl-bench-run/2"
# roll-out metrics averaged into the run's metrics
MEAN_KEYS = ("total_cost", "energy_cost", "terminal_backlog_value", "cost_ratio", "lp_cost", "avg_grid_consumption",
             "grid_limit", "peak_demand", "grid_use_ratio", "grid_fraction_of_peak", "grid_violation_pct",
             "backlog_slope_kwh_per_step", "backlog_slope_per_agent", "final_backlog_kwh", "max_agent_backlog_kwh",
             "consensus_error_final", "consensus_error_mean", "consensus_error_rms", "consensus_bound_final",
             "fault_bound", "lambda_mean_final", "lambda_spread_final", "lambda_at_cap_fraction", "seconds_per_step")
# ... of an EV-charging run (``cmarl_env.domains.ev_charging.evaluation.EVRollout.metrics`` plus grid_use_ratio,
# average load over average limit, and the LP's cost and the ratio to it)
EV_MEAN_KEYS = ("total_cost", "energy_cost", "cost_ratio", "lp_cost", "energy_kwh", "unmet_kwh", "pending_kwh",
                "unmet_fraction", "overload_ratio", "peak_ratio", "peak_fraction_of_uncontrolled", "grid_use_ratio",
                "consensus_error_final", "consensus_error_mean", "consensus_error_rms", "consensus_bound_final",
                "lambda_mean_final", "lambda_spread_final", "lambda_at_cap_fraction", "nu_mean_final",
                "seconds_per_step")


def lp_cost(scenario: ScenarioSpec, start_hour: int, data, cache_dir: Path | None) -> dict[str, Any]:
    """The unbounded clairvoyant LP's cost on one roll-out's hours, cached on disk by scenario physics and hour."""
    return _cached_lp(cache_dir, f"{scenario.cache_key()}/{int(start_hour)}",
                      lambda: _solve_lp(scenario, start_hour, data))


def _solve_lp(scenario: ScenarioSpec, start_hour: int, data) -> dict[str, Any]:
    from baselines.oracle import solve_min_cost
    from cmarl_env.core import DemandResponseCore

    core = DemandResponseCore(scenario.env_config(start_hour, data.n_steps), data)
    res = solve_min_cost(core, scenario.steps, start_hour)
    return {"status": res.status, "min_cost": res.min_cost, "grid_limit": res.grid_limit,
            "message": res.message, "start_hour": int(start_hour)}


def ev_lp_cost(scenario: ScenarioSpec, k: int, start_hour: int, cache_dir: Path | None) -> dict[str, Any]:
    """EV: the clairvoyant LP's total cost on roll-out k's cars under the hourly cap, cached by scenario and roll-out."""
    return _cached_lp(cache_dir, f"{scenario.cache_key()}/ev/{int(k)}/{int(start_hour)}",
                      lambda: _solve_ev_lp(scenario, k, start_hour))


def _solve_ev_lp(scenario: ScenarioSpec, k: int, start_hour: int) -> dict[str, Any]:
    from cmarl_env.domains.ev_charging.core import EVChargingCore
    from cmarl_env.domains.ev_charging.references import ClairvoyantLP

    core = EVChargingCore(scenario.ev_config())
    ro = rollout(ClairvoyantLP(), core, scenario.rollout_day(start_hour), scenario.steps, seed=scenario.rollout_seed(k))
    return {"status": "optimal", "min_cost": ro.total_cost, "objective": ro.info.get("lp_objective"),
            "start_day": scenario.rollout_day(start_hour), "seed": scenario.rollout_seed(k)}


def _cached_lp(cache_dir: Path | None, key: str, solve) -> dict[str, Any]:
    """``solve()``'s summary, read from or written to ``cache_dir/lp/<sha256(key)>.json`` (no cache without a dir;
    an unreadable entry is solved again)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    path = None if cache_dir is None else Path(cache_dir) / "lp" / f"{digest}.json"
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    summary = solve()
    if path is not None:
        atomic_write_text(path, dump_json(summary))
    return summary


def _execute_ev(spec: RunSpec, workdir: Path, cache_dir: Path | None, t0: float) -> dict[str, Any]:
    """An EV-charging run: the same loop (``rollout``) on ``EVChargingCore``; roll-out k on its day with its cars."""
    from cmarl_env.domains.ev_charging.core import EVChargingCore

    sc = spec.scenario
    mdef = registry.get(spec.method.kind)
    ctx = RunContext(workdir=workdir, cache_dir=cache_dir)
    prepared: Prepared = mdef.prepare(spec, ctx)
    if prepared.controller is None:
        raise ValueError(f"method kind {spec.method.kind!r} has no controller for EV scenario {sc.name!r}")
    records: list[dict[str, Any]] = []
    traj: dict[str, np.ndarray] = {}
    facts: dict[str, Any] = {}
    wall = 0.0
    for k, h in enumerate(spec.start_hours):
        controller = prepared.controller()
        core = EVChargingCore(sc.ev_config(augment=bool(controller.augment)))
        ro = rollout(controller, core, sc.rollout_day(h), sc.steps, seed=sc.rollout_seed(k))
        wall += ro.wall_time_s
        rec = {"rollout": k} | ro.metrics() | {"grid_use_ratio": float(ro.load.mean() / ro.limit.mean()),
                                               "seed": sc.rollout_seed(k)}
        if spec.oracle:
            lp = ev_lp_cost(sc, k, h, cache_dir)
            rec["lp_cost"] = lp.get("min_cost")
            rec["cost_ratio"] = rec["total_cost"] / lp["min_cost"] if lp.get("min_cost") else None
        records.append(rec)
        if k == 0:
            traj = ro.trajectories()
            facts = core.describe() | prepared.facts
            if hasattr(controller, "facts"):
                facts |= controller.facts()
    metrics = summarize(spec, records, prepared, wall, time.perf_counter() - t0)
    _write_run(workdir, prepared, facts, records, traj, metrics)
    return metrics


def _write_run(workdir: Path, prepared: Prepared, facts, records, traj, metrics) -> None:
    atomic_write_text(workdir / "config.json", dump_json(prepared.config))
    atomic_write_text(workdir / "facts.json", dump_json(facts))
    atomic_write_text(workdir / "versions.json", dump_json(package_versions()))
    atomic_write_text(workdir / "rollouts.json", dump_json(records))
    if traj:
        fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".trajectories.", suffix=".npz")
        os.close(fd)
        np.savez_compressed(tmp, **traj)
        os.replace(tmp, workdir / "trajectories.npz")
        write_trajectory_csv(workdir / "trajectories.csv", traj)
    atomic_write_text(workdir / "metrics.json", dump_json(metrics))


def execute_run(spec: RunSpec, workdir: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Run one spec into ``workdir`` (metrics.json last); returns the metrics. Raises on failure."""
    from cmarl_env.core import DemandResponseCore

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    atomic_write_text(workdir / "spec.json", dump_json(spec.to_dict()))
    sc = spec.scenario
    if sc.is_ev:
        return _execute_ev(spec, workdir, cache_dir, t0)
    mdef = registry.get(spec.method.kind)
    ctx = RunContext(workdir=workdir, cache_dir=cache_dir)
    data = ctx.data(sc.dataset)
    prepared: Prepared = mdef.prepare(spec, ctx)
    records: list[dict[str, Any]] = []
    traj: dict[str, np.ndarray] = {}
    facts: dict[str, Any] = {}
    wall = 0.0
    for k, h in enumerate(spec.start_hours):
        if prepared.controller is not None:
            controller = prepared.controller()
            core = DemandResponseCore(sc.env_config(h, data.n_steps, augment=bool(controller.augment)), data)
            ro = rollout(controller, core, h, sc.steps)
        else:
            core = DemandResponseCore(sc.env_config(h, data.n_steps), data)
            ro = prepared.rollout(core, h, sc.steps)
        wall += ro.wall_time_s
        rec = {"rollout": k} | ro.metrics()
        if spec.oracle:
            lp = lp_cost(sc, h, data, cache_dir)
            ok = lp["status"] == "optimal" and lp.get("min_cost")
            rec["lp_cost"] = lp.get("min_cost")
            rec["cost_ratio"] = rec["total_cost"] / lp["min_cost"] if ok else None
        records.append(rec)
        if k == 0:
            traj = ro.trajectories()
            facts = core.describe() | prepared.facts
            if prepared.controller is not None and hasattr(controller, "facts"):
                facts |= controller.facts()
    metrics = summarize(spec, records, prepared, wall, time.perf_counter() - t0)
    _write_run(workdir, prepared, facts, records, traj, metrics)
    return metrics


def summarize(spec: RunSpec, records: list[Mapping[str, Any]], prepared: Prepared, exec_wall: float,
              run_wall: float) -> dict[str, Any]:
    """The run's metrics: roll-out means, the infeasible fraction, training and execution time."""

    def mean(key: str) -> float | None:
        vals = [float(r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        return float(np.mean(vals)) if vals else None

    method = spec.method
    mdef = registry.get(method.kind)
    n_inf = int(sum(bool(r.get("infeasible")) for r in records))
    train = dict(prepared.train)
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
        "family": mdef.family,
        "reference": mdef.reference,
        "seed": spec.seed,
        "seeded": mdef.seeded,
        "n_agents": spec.scenario.n_agents,
        "constraint": spec.scenario.constraint,
        "steps": spec.scenario.steps,
        "n_rollouts": len(records),
        "start_hours": list(spec.start_hours),
        **({"domain": spec.scenario.domain, "start_days": [spec.scenario.rollout_day(h) for h in spec.start_hours]}
           if spec.scenario.is_ev else {}),
        **{k: mean(k) for k in (EV_MEAN_KEYS if spec.scenario.is_ev else MEAN_KEYS)},
        "infeasible_fraction": n_inf / len(records) if records else None,
        "n_infeasible": n_inf,
        "train_wall_time_s": _finite(train.get("train_wall_time_s", 0.0)),
        "exec_wall_time_s": exec_wall,
        "exec_seconds_per_step": mean("seconds_per_step") if prepared.controller is not None else None,
        "run_wall_time_s": run_wall,
        "budget": method.budget,
        "budget_detail": train.pop("budget_detail", method.budget),
        "note": method.note,
        "thresholds": _ev_thresholds() if spec.scenario.is_ev else {
            "grid_tolerance": GRID_TOLERANCE, "backlog_slope_limit_kwh_per_step_per_agent": BACKLOG_SLOPE_LIMIT},
        "train": train,
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


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _ev_thresholds() -> dict[str, float]:
    from cmarl_env.domains.ev_charging.evaluation import UNMET_TOLERANCE

    return {"overload_tolerance": GRID_TOLERANCE, "unmet_tolerance": UNMET_TOLERANCE}
