"""Expand a suite into runs and execute them through Ray: local by default, a cluster with ``address``.

Results folder::

    OUT/suite.json                                  the suite as run (source file, resolved methods)
    OUT/scenarios/<scenario>.json                   LP frontier, serve-all grid use, the (calibrated) level, binding
    OUT/runs/<scenario>/<method>/seed_<s>/          one self-describing folder per run (benchmarks.run)
    OUT/runs/.../error.json                         a failed run: error, traceback, host (no metrics.json)
    OUT/_cache/lp/                                  clairvoyant LP optima, shared by the runs of one machine
    OUT/status.json                                 done / failed / pending run ids of the last invocation

Execution: every pending run becomes one Ray task (``num_cpus=cpus_per_run``)
that works in a temporary folder on whichever node Ray picks and returns the
folder's files; the driver writes them under ``OUT/runs/...`` with
``metrics.json`` last (atomically). So a cluster needs no shared file system,
and the same code runs locally (``ray.init(num_cpus=...)``) or on a cluster
(``ray.init(address=...)``; the nodes need ``cmarl-env`` installed). At most
``max_concurrent`` runs are in flight.

One writer: ``run_suite`` holds ``OUT/.lock`` (``cmarl_env.records.FolderLock``) while it runs; a second
process on the same ``OUT`` is refused at once with ``FolderLockedError``.

Resume: a run whose folder holds a ``metrics.json`` with the same spec hash is
finished and skipped; anything else (missing, half-written after an
interruption, failed, or produced by a different suite setting) is run again.
A failed run writes ``error.json`` and the others go on. ``backend="serial"``
runs everything in this process (debugging, tests) through the same code path.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from benchmarks.run import error_record, execute_run
from cmarl_env.records import FolderLock, atomic_write_text, dump_json
from benchmarks.suite import RunSpec, ScenarioSpec, Suite

BACKENDS = ("ray", "serial")
SCENARIO_FORMAT = "cmarl-scenario-facts/1"


def _priority(spec: RunSpec) -> int:
    """Execution order: the LP first (it fills the cache the cost ratios read), then the long trainings."""
    from benchmarks.registry import get

    mdef = get(spec.method.kind)
    return 0 if mdef.reference else (1 if mdef.trains else 2)


def _level(scenario, frontier: float, upper: float, upper_name: str) -> tuple[float, str]:
    """The scenario's constraint level and how it was set: the suite's value, or (``"calibrated"``) the one rule
    ``frontier + calibrate x (upper - frontier)`` between the LP frontier and the level at which the domain's
    uncontrolled controller breaks the rule."""
    if not scenario.calibrated:
        return float(scenario.constraint), "given by the suite"
    constraint = frontier + scenario.calibrate * (upper - frontier)
    return constraint, (f"frontier + {scenario.calibrate:g} x ({upper_name} - frontier) = {frontier:.4f} + "
                        f"{scenario.calibrate:g} x ({upper:.4f} - {frontier:.4f})")


def scenario_facts(scenario: ScenarioSpec, cache_dir: Path | None = None, data=None) -> dict[str, Any]:
    """Where the scenario's constraint sits: the LP frontier and the serve-all controller's grid use (fractions of
    the peak, on roll-out 0's hours), the level (computed for calibrated scenarios), and whether it binds."""
    from baselines.oracle import frontier_fraction
    from cmarl_env.core import DemandResponseCore
    from cmarl_env.data import load_dataset
    from cmarl_env.evaluation import GRID_TOLERANCE, ServeAll, is_binding, rollout

    path = None if cache_dir is None else Path(cache_dir) / "scenarios" / f"{scenario.cache_key()}.json"
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    if scenario.is_ev:
        facts = ev_scenario_facts(scenario)
        if path is not None:
            atomic_write_text(path, dump_json(facts))
        return facts
    data = data if data is not None else load_dataset(scenario.dataset)
    h0 = scenario.start_hour
    core = DemandResponseCore(scenario.env_config(h0, data.n_steps, constraint=1.0), data)
    t0 = time.perf_counter()
    frontier, frontier_se = frontier_fraction(core, scenario.steps, h0, seed=scenario.seed)
    serve_all = rollout(ServeAll(), core, h0, scenario.steps).avg_grid / core.peak_demand
    constraint, rule = _level(scenario, frontier, serve_all, "serve-all")
    facts = {"format": SCENARIO_FORMAT, "scenario": scenario.name, "hours": [h0, h0 + scenario.steps],
             "peak_demand_kwh": core.peak_demand, "lp_frontier": frontier, "lp_frontier_stderr": frontier_se,
             "lp_frontier_method": "exact (one LP per agent)" if frontier_se == 0.0 else
             "estimated from a uniform sample of agents (one LP each)",
             "serve_all_grid": serve_all, "constraint": constraint, "calibrated": scenario.calibrated,
             "calibrate": scenario.calibrate, "constraint_rule": rule, "grid_limit": constraint * core.peak_demand,
             "binding": is_binding(constraint, frontier, serve_all), "grid_tolerance": GRID_TOLERANCE,
             "seconds": time.perf_counter() - t0}
    if path is not None:
        atomic_write_text(path, dump_json(facts))
    return facts


def ev_scenario_facts(scenario: ScenarioSpec) -> dict[str, Any]:
    """EV: where the cap binds on roll-out 0's cars (``binding_range``): the LP frontier (the smallest c under which
    every departing car can get its energy) and the uncontrolled threshold (the largest c at which charging at full
    power on arrival breaks the average-overload rule); calibrated level = frontier + calibrate x (threshold -
    frontier); the level binds strictly between them."""
    from cmarl_env.domains.ev_charging.core import EVChargingCore
    from cmarl_env.domains.ev_charging.evaluation import UNMET_TOLERANCE
    from cmarl_env.domains.ev_charging.references import binding_range
    from cmarl_env.evaluation import GRID_TOLERANCE

    t0 = time.perf_counter()
    core = EVChargingCore(scenario.ev_config(constraint=1.0))
    day, seed = scenario.start_day, scenario.rollout_seed(0)
    core.reset(seed=seed, start_day=day, steps=scenario.steps)
    frontier, threshold = binding_range(core)
    constraint, rule = _level(scenario, frontier, threshold, "uncontrolled threshold")
    return {"format": SCENARIO_FORMAT, "scenario": scenario.name, "domain": scenario.domain,
            "days": [day, day + -(-scenario.steps // 24)], "hours": [0, scenario.steps], "rollout0_seed": seed,
            "peak_uncontrolled_kwh": core.peak_uncontrolled, "lp_frontier": frontier,
            "lp_frontier_method": "exact (one LP over every car of roll-out 0)",
            "uncontrolled_threshold": threshold, "constraint": constraint, "calibrated": scenario.calibrated,
            "calibrate": scenario.calibrate, "constraint_rule": rule,
            "grid_limit": constraint * core.peak_uncontrolled, "limit": core.config.limit,
            "binding": bool(frontier <= constraint < threshold), "grid_tolerance": GRID_TOLERANCE,
            "unmet_tolerance": UNMET_TOLERANCE, "seconds": time.perf_counter() - t0}


def resolve_scenarios(suite: Suite, out_dir: Path, *, write: bool = True) -> dict[str, dict[str, Any]]:
    """The facts of every scenario of the suite (cached in OUT/_cache, recorded in OUT/scenarios/)."""
    out: dict[str, dict[str, Any]] = {}
    data = None
    for sc in suite.scenarios():
        if sc.is_ev:
            out[sc.name] = scenario_facts(sc, Path(out_dir) / "_cache")
            if write:
                atomic_write_text(Path(out_dir) / "scenarios" / f"{sc.name}.json", dump_json(out[sc.name]))
            continue
        if data is None or data.name != sc.dataset:
            from cmarl_env.data import load_dataset

            data = load_dataset(sc.dataset)
        out[sc.name] = scenario_facts(sc, Path(out_dir) / "_cache", data)
        if write:
            atomic_write_text(Path(out_dir) / "scenarios" / f"{sc.name}.json", dump_json(out[sc.name]))
    return out


@dataclass
class SuiteReport:
    out_dir: Path
    total: int
    skipped: int = 0
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    interrupted: bool = False
    wall_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "total": self.total, "skipped": self.skipped,
                "completed": self.completed, "failed": self.failed, "pending": self.pending,
                "interrupted": self.interrupted, "wall_time_s": self.wall_time_s}


def run_dir(out_dir: Path, spec: RunSpec) -> Path:
    return Path(out_dir) / "runs" / spec.scenario.name / spec.method.name / f"seed_{spec.seed}"


def run_state(path: Path, spec: RunSpec) -> str:
    """'done' (metrics.json with this spec's hash), 'stale' (another spec's), 'failed', 'partial' or 'missing'."""
    metrics = path / "metrics.json"
    if metrics.is_file():
        try:
            got = json.loads(metrics.read_text()).get("spec_hash")
        except (OSError, json.JSONDecodeError):
            return "partial"
        return "done" if got == spec.spec_hash() else "stale"
    if (path / "error.json").is_file():
        return "failed"
    return "partial" if path.exists() else "missing"


def plan(suite: Suite, out_dir: Path, facts: Mapping[str, Mapping[str, Any]] | None = None
         ) -> tuple[list[RunSpec], list[RunSpec], dict[str, str]]:
    """(pending runs in execution order, finished runs, state of every run id); ``facts`` resolves calibrated levels
    (default: the levels an earlier invocation recorded in OUT/scenarios/, so ``--dry-run`` sees finished runs)."""
    todo, done, states = [], [], {}
    if facts is None:
        facts = _recorded_levels(suite, out_dir)
    constraints = {name: f["constraint"] for name, f in facts.items()}
    for spec in suite.runs(constraints):
        state = run_state(run_dir(out_dir, spec), spec)
        states[spec.run_id] = state
        (done if state == "done" else todo).append(spec)
    todo.sort(key=_priority)
    return todo, done, states


def _recorded_levels(suite: Suite, out_dir: Path) -> dict[str, dict[str, Any]]:
    """The recorded facts of the suite's calibrated scenarios (their level is computed, not in the suite)."""
    out = {}
    for sc in suite.scenarios():
        path = Path(out_dir) / "scenarios" / f"{sc.name}.json"
        if not (sc.calibrated and path.is_file()):
            continue
        try:
            f = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if f.get("calibrate") == sc.calibrate and isinstance(f.get("constraint"), (int, float)):
            out[sc.name] = f
    return out


# --------------------------------------------------------------------------- worker side
def execute_packed(spec_dict: dict[str, Any], cache_dir: str | None) -> dict[str, Any]:
    """Run one spec in a temporary folder and return its files (the Ray task body; never raises)."""
    import platform

    spec = RunSpec.from_dict(spec_dict)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cmarl-run-") as tmp:
        try:
            metrics = execute_run(spec, Path(tmp), Path(cache_dir) if cache_dir else None)
            ok, err = True, None
        except Exception as exc:  # noqa: BLE001 - recorded in error.json
            ok, metrics = False, None
            err = error_record(spec, exc, traceback.format_exc())
        files = {}
        for p in sorted(Path(tmp).rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                files[str(p.relative_to(tmp))] = p.read_bytes()
    return {"ok": ok, "run_id": spec.run_id, "files": files, "metrics": metrics, "error": err,
            "host": platform.node(), "wall_time_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------- driver side
def commit(out_dir: Path, spec: RunSpec, result: dict[str, Any]) -> None:
    """Write a finished run's files under OUT/runs/...; metrics.json last. A failure writes error.json."""
    path = run_dir(out_dir, spec)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    files = dict(result.get("files") or {})
    metrics = files.pop("metrics.json", None)
    if not result.get("ok"):
        metrics = None
    for rel, data in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    if not (path / "spec.json").is_file():
        atomic_write_text(path / "spec.json", dump_json(spec.to_dict()))
    if metrics is not None:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".metrics.json.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(metrics)
        os.replace(tmp, path / "metrics.json")
    else:
        err = result.get("error") or error_record(spec, "run failed without an error record", "")
        err = dict(err) | {"host": result.get("host", err.get("host"))}
        atomic_write_text(path / "error.json", dump_json(err))


def write_suite_record(suite: Suite, out_dir: Path) -> None:
    record = {
        "format": "cmarl-bench-results/1",
        "suite": suite.name,
        "description": suite.description,
        "source": suite.source,
        "definition": suite.raw,
        "methods": {name: m.to_dict() for name, m in suite.methods.items()},
        "scenarios": {s.name: s.to_dict() for s in suite.scenarios()},
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(Path(out_dir) / "suite.json", dump_json(record))


class _Progress:
    """tqdm bar over all runs of the suite with done / running / left / failed in the postfix."""

    def __init__(self, total: int, done: int, enabled: bool, desc: str):
        self.total, self.done, self.running, self.failed = total, done, 0, 0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="run", desc=desc, dynamic_ncols=True, file=sys.stderr)
            self._post()

    def _post(self) -> None:
        if self.bar is not None:
            left = self.total - self.done - self.running
            self.bar.set_postfix_str(f"done {self.done}, running {self.running}, left {left}, failed {self.failed}")

    def start(self, n: int = 1) -> None:
        self.running += n
        self._post()

    def finish(self, ok: bool, run_id: str) -> None:
        self.running -= 1
        self.done += 1
        if not ok:
            self.failed += 1
            self.write(f"FAILED {run_id} (see its error.json)")
        if self.bar is not None:
            self.bar.update(1)
        self._post()

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_suite(
    suite: Suite,
    out_dir: str | Path,
    *,
    backend: str = "ray",
    address: str | None = None,
    num_cpus: int | None = None,
    max_concurrent: int | None = None,
    progress: bool = True,
    on_result: Callable[[RunSpec, dict], None] | None = None,
) -> SuiteReport:
    """Run every pending run of ``suite`` into ``out_dir`` (resumable; see the module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not allowed; choose one of {BACKENDS}")
    out_dir = Path(out_dir)
    # one writer per results folder: a second `cmarl bench` on the same OUT is refused (FolderLockedError)
    with FolderLock(out_dir, "benchmark results folder"):
        return _run_suite(suite, out_dir, backend=backend, address=address, num_cpus=num_cpus,
                          max_concurrent=max_concurrent, progress=progress, on_result=on_result)


def _run_suite(suite: Suite, out_dir: Path, *, backend: str, address: str | None, num_cpus: int | None,
               max_concurrent: int | None, progress: bool, on_result) -> SuiteReport:
    write_suite_record(suite, out_dir)
    cache = out_dir / "_cache"
    cache.mkdir(exist_ok=True)
    facts = resolve_scenarios(suite, out_dir)
    todo, done, states = plan(suite, out_dir, facts)
    stale = [s.run_id for s in todo if states[s.run_id] == "stale"]
    report = SuiteReport(out_dir=out_dir, total=len(todo) + len(done), skipped=len(done))
    t0 = time.perf_counter()
    bar = _Progress(report.total, len(done), progress, f"bench {suite.name}")
    if done:
        bar.write(f"resuming: {len(done)} of {report.total} runs already finished in {out_dir}")
    if stale:
        bar.write(f"{len(stale)} run folder(s) were produced by different settings and will be re-run")

    def handle(spec: RunSpec, result: dict[str, Any]) -> None:
        commit(out_dir, spec, result)
        (report.completed if result.get("ok") else report.failed).append(spec.run_id)
        bar.finish(bool(result.get("ok")), spec.run_id)
        if on_result is not None:
            on_result(spec, result)

    try:
        if todo:
            if backend == "serial":
                _run_serial(todo, cache, bar, handle)
            else:
                _run_ray(suite, todo, cache, bar, handle, address=address, num_cpus=num_cpus,
                         max_concurrent=max_concurrent)
    except KeyboardInterrupt:
        report.interrupted = True
        bar.write(f"interrupted: finished runs are kept in {out_dir}; run the same command again to resume")
    finally:
        bar.close()
        finished = set(report.completed) | set(report.failed)
        report.pending = [s.run_id for s in todo if s.run_id not in finished]
        report.wall_time_s = time.perf_counter() - t0
        atomic_write_text(out_dir / "status.json", dump_json(report.to_dict() | {
            "done": sorted([s.run_id for s in done] + report.completed)}))
    return report


def _run_serial(todo: Iterable[RunSpec], cache: Path, bar: _Progress, handle) -> None:
    for spec in todo:
        bar.start()
        handle(spec, execute_packed(spec.to_dict(), str(cache)))


def _run_ray(suite: Suite, todo: list[RunSpec], cache: Path, bar: _Progress, handle, *, address: str | None,
             num_cpus: int | None, max_concurrent: int | None) -> None:
    import ray

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            cpus = num_cpus or suite.resources.num_cpus or os.cpu_count() or 1
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        cpr = suite.resources.cpus_per_run
        available = float(ray.cluster_resources().get("CPU", 1))
        limit = max_concurrent or suite.resources.max_concurrent or max(1, int(available // cpr))
        task = ray.remote(num_cpus=cpr, max_retries=0)(execute_packed)
        queue = list(todo)
        inflight: dict[Any, RunSpec] = {}
        try:
            while queue or inflight:
                while queue and len(inflight) < limit:
                    spec = queue.pop(0)
                    inflight[task.remote(spec.to_dict(), str(cache))] = spec
                    bar.start()
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    spec = inflight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - worker crash, OOM kill, ...
                        result = {"ok": False, "files": {}, "error": error_record(spec, exc, traceback.format_exc())}
                    handle(spec, result)
        except KeyboardInterrupt:
            for ref in inflight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001
                    pass
            raise
    finally:
        if started:
            ray.shutdown()
