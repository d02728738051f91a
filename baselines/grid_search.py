"""Fixed-penalty grid search over (lambda, nu) on Ray Tune (paper appendix A.1, Table 1).

Each grid point is one Ray Tune trial:

- ``ippo``: train IPPO (Tianshou PPO, parameters shared per agent type, plain
  observations) on ``r0 + lambda (c/N - e_grid) + nu r2`` at the fixed point,
  then roll it out for ``eval_steps`` hours on the paper scenario;
- ``augmented``: roll out the shipped state-augmented policies with the
  multipliers held at the point (no training: seconds per point, the cheap
  variant the paper's method makes possible).

Every trial is evaluated like every other method: an
``algorithms.execute.FixedMultipliers`` controller (``augment=False`` for the
IPPO policies) through :func:`cmarl_env.evaluation.rollout` on
``evaluation_config(start_hour, eval_steps)`` (the grid limit is ``c`` times
the peak over exactly the evaluated hours, as for ``cmarl run`` and ``cmarl
oracle``), and judged by the one feasibility rule (``Rollout.verdict``). Each
trial's record is ``Rollout.metrics()`` (``grid_limit``, ``feasible``,
``infeasible_reason``, ...) plus the point, the method and the timings.

Results are persisted by the driver as each trial completes
(``trials/<id>.json``, written atomically; ``finished.jsonl`` logs every
completion), so stopping the search loses nothing finished, and running the
same command again runs only the points without a result (a stored trial
without the verdict of ``cmarl_env.evaluation``, written by an older version,
counts as without a result and is run again). A trial that fails
is recorded in ``errors/<id>.json`` and the other trials go on; it is retried
on the next run. The same code runs on local Ray (default) or an existing
cluster (``address=...``); on a cluster the driver's output folder is the only
place results are written.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmarl_env.config import DEFAULT_DATASET, ConfigBase
from cmarl_env.evaluation import feasibility

METHODS = ("ippo", "augmented")
CSV_COLUMNS = ("lambda", "nu", "avg_grid_consumption", "grid_limit", "grid_use_ratio", "backlog_slope_kwh_per_step",
               "backlog_slope_per_agent", "final_backlog_kwh", "energy_cost", "total_cost", "feasible",
               "infeasible_reason", "train_seconds", "trial_seconds")


@dataclass(frozen=True)
class GridSearchConfig(ConfigBase):
    method: str = "ippo"
    lambda_min: float = 0.0
    lambda_max: float = 15.0
    lambda_step: float = 1.0
    nu_min: float = -20.0
    nu_max: float = 8.0
    nu_step: float = 1.0
    train_steps: int = 200_000
    eval_steps: int = 3000
    start_hour: int = 0
    constraint: float = 0.27
    n_agents: int = 7
    seed: int = 0
    cpus_per_trial: float = 1.0
    fail_points: tuple[tuple[float, float], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not allowed; choose one of {METHODS}")
        for name in ("lambda_step", "nu_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        if not 0.0 <= self.lambda_min <= self.lambda_max <= 15.0:
            raise ValueError(f"lambda range [{self.lambda_min}, {self.lambda_max}] must lie within [0, 15]")
        if not -20.0 <= self.nu_min <= self.nu_max <= 20.0:
            raise ValueError(f"nu range [{self.nu_min}, {self.nu_max}] must lie within [-20, 20]")
        for name, low in (("train_steps", 1), ("eval_steps", 2), ("n_agents", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        if not 0.0 < self.constraint <= 1.0:
            raise ValueError(f"constraint={self.constraint!r} is out of range; allowed: (0, 1]")
        if not self.cpus_per_trial > 0:
            raise ValueError(f"cpus_per_trial={self.cpus_per_trial!r} must be > 0")

    def points(self) -> list[tuple[float, float]]:
        lams = _axis(self.lambda_min, self.lambda_max, self.lambda_step)
        nus = _axis(self.nu_min, self.nu_max, self.nu_step)
        return [(lam, nu) for lam in lams for nu in nus]


def _axis(lo: float, hi: float, step: float) -> list[float]:
    count = int(math.floor((hi - lo) / step + 1e-9)) + 1
    return [round(lo + i * step, 10) for i in range(count)]


def trial_id(lam: float, nu: float) -> str:
    return f"lam{lam:g}_nu{nu:g}"


# ------------------------------------------------------------------ one trial
def evaluate_point(config: GridSearchConfig, lam: float, nu: float, policies=None, *, data=None):
    """The trial's roll-out: ``FixedMultipliers(lam, nu)`` through the one roll-out loop on the evaluated hours.

    ``policies=None`` (``augmented``): the shipped state-augmented policies see the fixed multipliers; otherwise
    (``ippo``) the given per-type policies act on plain observations (``augment=False``).
    Returns the :class:`cmarl_env.evaluation.Rollout`.
    """
    from algorithms.execute import FixedMultipliers
    from cmarl_env.core import DemandResponseCore
    from cmarl_env.data import load_dataset
    from cmarl_env.evaluation import evaluation_config, rollout

    controller = FixedMultipliers(lam, nu, policies, augment=policies is None)
    data = data if data is not None else load_dataset(DEFAULT_DATASET)
    env = evaluation_config(n_agents=config.n_agents, constraint=config.constraint, start_hour=config.start_hour,
                            steps=config.eval_steps, n_hours=data.n_steps, dataset=DEFAULT_DATASET, seed=config.seed,
                            augment=controller.augment)
    return rollout(controller, DemandResponseCore(env, data), config.start_hour, config.eval_steps)


def run_trial(config: GridSearchConfig, lam: float, nu: float) -> dict[str, Any]:
    """Train (IPPO) or take (augmented) the policies at (lam, nu), roll them out, judge the roll-out."""
    import torch

    torch.set_num_threads(1)
    if (lam, nu) in {tuple(p) for p in config.fail_points}:
        raise RuntimeError(f"injected failure at (lambda, nu) = ({lam}, {nu})")
    start = time.perf_counter()
    if config.method == "augmented":
        policies, train_seconds = None, 0.0
    else:
        policies = train_ippo(config, lam, nu)
        train_seconds = time.perf_counter() - start
    result = evaluate_point(config, lam, nu, policies)
    metrics = result.metrics()
    metrics.update(
        {"lambda": float(lam), "nu": float(nu)},
        abs_backlog_rate_kwh_per_step=abs(metrics["backlog_slope_kwh_per_step"]),
        method=config.method,
        train_seconds=train_seconds,
        trial_seconds=time.perf_counter() - start,
    )
    return metrics


def train_ippo(config: GridSearchConfig, lam: float, nu: float) -> dict[float, Any]:
    """One PPO policy per agent type on plain observations and the fixed-penalty reward."""
    from algorithms.train import TrainConfig, train
    from cmarl_env.config import paper_demand_scales

    policies = {}
    with tempfile.TemporaryDirectory(prefix="ippo_") as tmp:
        for scale in sorted(set(paper_demand_scales(config.n_agents))):
            train_config = TrainConfig(
                demand_scale=scale, total_steps=config.train_steps, fixed_multipliers=(lam, nu),
                constraint_fraction=config.constraint, seed=config.seed, out_dir=str(Path(tmp) / f"scale{scale:g}"),
                num_envs=64, epochs=max(1, min(10, config.train_steps // 20_000)), eval_episodes=8,
            )
            result = train(train_config, progress=False)
            policies[scale] = result.policy.act
    return policies


# --------------------------------------------------------------- persistence
def _atomic_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, default=float)
    os.replace(tmp, path)


def finished_results(out: Path) -> dict[str, dict[str, Any]]:
    """Results of finished trials; unreadable files and trials without the one rule's verdict count as unfinished."""
    results = {}
    for path in sorted((out / "trials").glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(result, dict) and "infeasible_reason" in result and "feasible" in result:
            results[path.stem] = result
    return results


def _record_result(out: Path, metrics: dict[str, Any]) -> None:
    tid = trial_id(metrics["lambda"], metrics["nu"])
    _atomic_json(out / "trials" / f"{tid}.json", metrics)
    (out / "errors" / f"{tid}.json").unlink(missing_ok=True)
    with open(out / "finished.jsonl", "a") as fh:
        fh.write(json.dumps({"id": tid, "time": time.time()}) + "\n")


def _record_error(out: Path, lam: float, nu: float, message: str) -> None:
    _atomic_json(out / "errors" / f"{trial_id(lam, nu)}.json", {"lambda": lam, "nu": nu, "error": message, "time": time.time()})


# ------------------------------------------------------------------- Ray Tune
def _trainable(params: dict[str, Any]) -> None:
    from ray import tune

    config = GridSearchConfig.from_dict(params["config"])
    lam, nu = params["point"]
    tune.report(run_trial(config, lam, nu))


def _callback(out: Path):
    from ray.tune import Callback

    class PersistResults(Callback):
        """Writes each trial's result or error into the output folder as soon as Tune reports it."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "avg_grid_consumption" in result:
                _record_result(out, {k: result[k] for k in result if not isinstance(result[k], dict)})

        def on_trial_error(self, iteration, trials, trial, **info):
            lam, nu = trial.config["point"]
            message = "trial failed"
            try:
                error = trial.get_error()
                message = str(error) if error is not None else message
            except Exception:  # noqa: BLE001 - a missing error file must not stop the search
                message = traceback.format_exc(limit=1)
            _record_error(out, lam, nu, message)

    return PersistResults()


def run_grid_search(config: GridSearchConfig, out: Path, *, address: str | None = None, max_concurrent: int | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Run every grid point without a result through Ray Tune; return the summary.

    The driver holds ``out``'s lock file (``cmarl_env.records.FolderLock``) while it runs: a second search on
    the same folder is refused (``FolderLockedError``) instead of both writing the same trials.
    """
    from cmarl_env.records import FolderLock

    out = Path(out)
    with FolderLock(out, "grid-search folder"):
        return _run_grid_search(config, out, address=address, max_concurrent=max_concurrent, progress=progress)


def _run_grid_search(config: GridSearchConfig, out: Path, *, address: str | None, max_concurrent: int | None,
                     progress: bool) -> dict[str, Any]:
    from cmarl_env.data import load_dataset
    from cmarl_env.evaluation import evaluation_config

    # the evaluated hours must lie in the data: refused here, before Ray starts, not in every trial
    evaluation_config(n_agents=config.n_agents, constraint=config.constraint, start_hour=config.start_hour,
                      steps=config.eval_steps, n_hours=load_dataset(DEFAULT_DATASET).n_steps, seed=config.seed)
    _check_same_config(config, out)
    done = finished_results(out)
    todo = [p for p in config.points() if trial_id(*p) not in done]
    start = time.perf_counter()
    if todo:
        import ray
        from ray import tune

        if address:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        else:
            ray.init(num_cpus=max_concurrent or os.cpu_count(), include_dashboard=False, ignore_reinit_error=True,
                     log_to_driver=False, configure_logging=False)
        try:
            tuner = tune.Tuner(
                tune.with_resources(_trainable, {"cpu": config.cpus_per_trial}),
                param_space={"config": config.to_dict(), "point": tune.grid_search([list(p) for p in todo])},
                tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
                run_config=tune.RunConfig(
                    name="grid_search",
                    storage_path=str((out / "ray_results").resolve()),
                    callbacks=[_callback(out)],
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                    verbose=1 if progress else 0,
                ),
            )
            for result in tuner.fit():
                if result.error is not None:
                    lam, nu = result.config["point"]
                    _record_error(out, lam, nu, f"{type(result.error).__name__}: {result.error}")
        finally:
            ray.shutdown()
    wall = time.perf_counter() - start
    results = finished_results(out)
    summary = summarize(config, results, out, ran=len(todo), wall=wall)
    write_outputs(config, results, out, summary)
    return summary


def _check_same_config(config: GridSearchConfig, out: Path) -> None:
    """Resuming with a different configuration would mix incomparable results: refuse."""
    path = out / "grid_config.json"
    current = config.to_dict()
    current.pop("fail_points")
    if path.exists():
        stored = json.loads(path.read_text())
        stored.pop("fail_points", None)
        diff = sorted(k for k in current if stored.get(k) != current[k] and not k.startswith(("lambda_", "nu_")))
        if diff:
            raise ValueError(f"{out} holds a grid search with different settings {diff}; use another --out or the same settings")
    _atomic_json(path, config.to_dict())


def summarize(config: GridSearchConfig, results: dict[str, dict], out: Path, *, ran: int, wall: float) -> dict[str, Any]:
    ids = [trial_id(*p) for p in config.points()]
    errors = sorted(p.stem for p in (out / "errors").glob("*.json")) if (out / "errors").exists() else []
    trial_seconds = [results[i]["trial_seconds"] for i in ids if i in results]
    feasible = [(results[i]["lambda"], results[i]["nu"]) for i in ids if i in results and results[i]["feasible"]]
    limits = [results[i]["grid_limit"] for i in ids if i in results]
    return {
        "method": config.method,
        "grid_limit": limits[0] if limits else None,
        "points": len(ids),
        "finished": sum(i in results for i in ids),
        "failed": [e for e in errors if e in ids],
        "ran_this_call": ran,
        "wall_time_s": wall,
        "mean_trial_seconds": float(np.mean(trial_seconds)) if trial_seconds else None,
        "trials_per_hour_per_cpu": 3600.0 / float(np.mean(trial_seconds)) if trial_seconds else None,
        "feasible_pairs": feasible,
    }


# ---------------------------------------------------------------- outputs
def grid_arrays(config: GridSearchConfig, results: dict[str, dict]) -> dict[str, np.ndarray]:
    """(lambda x nu) arrays of mean grid consumption and |backlog rate|; NaN where no result."""
    lams = _axis(config.lambda_min, config.lambda_max, config.lambda_step)
    nus = _axis(config.nu_min, config.nu_max, config.nu_step)
    grid = np.full((len(lams), len(nus)), np.nan)
    rate = np.full_like(grid, np.nan)
    for a, lam in enumerate(lams):
        for b, nu in enumerate(nus):
            r = results.get(trial_id(lam, nu))
            if r is not None:
                grid[a, b] = r["grid_use_ratio"]
                rate[a, b] = r["abs_backlog_rate_kwh_per_step"]
    return {"lambda": np.array(lams), "nu": np.array(nus), "grid_ratio": grid, "backlog_rate": rate}


def write_outputs(config: GridSearchConfig, results: dict[str, dict], out: Path, summary: dict[str, Any]) -> None:
    ids = [trial_id(*p) for p in config.points()]
    rows = [results[i] for i in ids if i in results]
    with open(out / "grid.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        writer.writerows([r.get(c, "") for c in CSV_COLUMNS] for r in rows)
    table = ["| lambda | nu | avg grid / limit | backlog slope [kWh/step/agent] | total cost |", "|---|---|---|---|---|"]
    table += [f"| {r['lambda']:g} | {r['nu']:g} | {r['grid_use_ratio']:.3f} | {r['backlog_slope_per_agent']:+.5f} "
              f"| {r['total_cost']:.1f} |" for r in rows if r["feasible"]]
    limits = sorted({round(r["grid_limit"], 9) for r in rows})
    rule = (f"feasible (cmarl_env.evaluation.judge): average grid use <= {1 + feasibility.GRID_TOLERANCE:g} x the grid "
            f"limit and backlog slope <= {feasibility.BACKLOG_SLOPE_LIMIT:g} kWh/step/agent; grid limit "
            + (", ".join(f"{v:.4f}" for v in limits) or "n/a") + f" kWh/step (c = {config.constraint:g} x the peak "
            f"over hours [{config.start_hour}, {config.start_hour + config.eval_steps}))")
    (out / "table1.md").write_text(f"Fixed multipliers that satisfy both constraints ({config.method}, "
                                   f"{len(table) - 2} of {len(ids)} points)\n\n{rule}\n\n" + "\n".join(table) + "\n")
    _atomic_json(out / "summary.json", summary)
    plot_heatmaps(config, results, out / f"figure_A1_{config.method}.png")


def plot_heatmaps(config: GridSearchConfig, results: dict[str, dict], path: Path) -> None:
    """Figure A.1: (a) mean grid consumption / limit, (b) |rate of change of backlog|; blank = no result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = grid_arrays(config, results)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    extent = [arrays["nu"][0] - 0.5 * config.nu_step, arrays["nu"][-1] + 0.5 * config.nu_step,
              arrays["lambda"][0] - 0.5 * config.lambda_step, arrays["lambda"][-1] + 0.5 * config.lambda_step]
    for ax, key, title in ((axes[0], "grid_ratio", "(a) mean grid consumption / limit"),
                           (axes[1], "backlog_rate", "(b) |rate of change of backlog| [kWh/step]")):
        image = ax.imshow(np.ma.masked_invalid(arrays[key]), origin="lower", aspect="auto", extent=extent, cmap="viridis")
        fig.colorbar(image, ax=ax)
        ax.set_xlabel("nu")
        ax.set_ylabel("lambda")
        ax.set_title(title)
    for r in results.values():
        if r.get("feasible"):
            for ax in axes:
                ax.plot(r["nu"], r["lambda"], marker="s", mfc="none", mec="red", ms=9)
    fig.suptitle(f"Fixed-penalty grid ({config.method}); red squares satisfy both constraints")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
