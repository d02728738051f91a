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
import functools
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

from algorithms.execute import FixedMultipliers
from cmarl_env.config import DEFAULT_DATASET, ConfigBase
from cmarl_env.evaluation import feasibility

METHODS = ("ippo", "augmented")
SHARING = ("per_agent", "per_type")
CSV_COLUMNS = ("constraint", "lambda", "nu", "avg_grid_consumption", "grid_limit", "grid_use_ratio",
               "backlog_slope_kwh_per_step", "backlog_slope_per_agent", "final_backlog_kwh", "energy_cost",
               "total_cost", "feasible", "feasible_fraction", "rollouts", "infeasible_reason", "train_env_steps",
               "train_seconds", "trial_seconds")


@dataclass(frozen=True)
class GridSearchConfig(ConfigBase):
    """One grid search. ``train_steps`` counts env steps per learner: per agent with ``sharing="per_agent"``
    (independent PPO learners, agent i on its own building and demand scale: IPPO proper), per agent type with
    ``"per_type"`` (one policy shared by the agents of a type, trained on copies that cycle through every
    building of the dataset: the earlier, cheaper variant). Each point is judged on ``rollouts`` start hours
    (``cmarl_env.evaluation.rollout_start_hours`` with ``start_jitter`` and the scenario ``seed``) for each of
    ``train_seeds``, at ``constraint`` and at each of ``extra_constraints``: with fixed multipliers the level
    only shifts the reward by the constant ``lambda c / N``, so one training per seed serves every level.

    ``grid_values`` adds, for every lambda on the lambda axis, the points ``(lambda, -lambda - v)``: with
    ``r2 = d - e_grid - e_bat`` the fixed-penalty reward is ``(v - price) e_grid + (lambda + v) e_bat`` plus terms
    the action does not change, so ``v`` is what the reward pays for a kWh of grid energy. A learner that
    converges buys in the hours whose price is below ``v`` and not in the others: ``v`` below the cheapest price
    makes it stop buying (the degenerate pairs, :func:`degenerate_reason`), ``v`` above the dearest makes it
    serve everything at once, and only ``v`` inside the tariff's range (0.21-0.54) asks for a trade-off. The
    rectangle's nu step of 3 never lands in that band of width 0.33; ``rectangle=False`` searches the band alone."""

    method: str = "ippo"
    sharing: str = "per_agent"
    lambda_min: float = 0.0
    lambda_max: float = 15.0
    lambda_step: float = 1.0
    nu_min: float = -20.0
    nu_max: float = 8.0
    nu_step: float = 1.0
    train_steps: int = 200_000
    eval_steps: int = 3000
    start_hour: int = 0
    rollouts: int = 3
    start_jitter: int = 168
    constraint: float = 0.27
    extra_constraints: tuple[float, ...] = ()
    n_agents: int = 7
    seed: int = 0
    train_seeds: tuple[int, ...] = (0,)
    cpus_per_trial: float = 1.0
    grid_values: tuple[float, ...] = ()
    rectangle: bool = True
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
        if self.sharing not in SHARING:
            raise ValueError(f"sharing={self.sharing!r} is not allowed; choose one of {SHARING}")
        for name, low in (("rollouts", 1), ("start_jitter", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        if not isinstance(self.extra_constraints, (tuple, list)):
            raise ValueError(f"extra_constraints={self.extra_constraints!r} must be a sequence of levels in (0, 1]")
        object.__setattr__(self, "extra_constraints", tuple(float(c) for c in self.extra_constraints))
        for c in (self.constraint, *self.extra_constraints):
            if not 0.0 < c <= 1.0:
                raise ValueError(f"constraint={c!r} is out of range; allowed: (0, 1]")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"constraint levels {self.levels} repeat a level; give each once")
        if (not isinstance(self.train_seeds, (tuple, list)) or not self.train_seeds
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.train_seeds)):
            raise ValueError(f"train_seeds={self.train_seeds!r} must be a non-empty sequence of integers >= 0")
        object.__setattr__(self, "train_seeds", tuple(int(v) for v in self.train_seeds))
        if not self.cpus_per_trial > 0:
            raise ValueError(f"cpus_per_trial={self.cpus_per_trial!r} must be > 0")
        if not isinstance(self.grid_values, (tuple, list)):
            raise ValueError(f"grid_values={self.grid_values!r} must be a sequence of values per kWh of grid energy")
        object.__setattr__(self, "grid_values", tuple(float(v) for v in self.grid_values))
        if not isinstance(self.rectangle, bool):
            raise ValueError(f"rectangle={self.rectangle!r} must be true or false")
        if not self.rectangle and not self.grid_values:
            raise ValueError("rectangle=False leaves no point to search: give grid_values (the diagonal band)")
        lams = _axis(self.lambda_min, self.lambda_max, self.lambda_step)
        for v in self.grid_values:
            bad = [lam for lam in lams if not -20.0 <= -lam - v <= 20.0]
            if not math.isfinite(v) or bad:
                raise ValueError(f"grid value {v!r} puts nu = -lambda - v outside [-20, 20] (lambda in {bad}); "
                                 "allowed: finite values with every -lambda - v in [-20, 20]")

    @property
    def levels(self) -> tuple[float, ...]:
        """Every constraint level a point is judged at; the first is the main one (top-level trial metrics)."""
        return (float(self.constraint), *self.extra_constraints)

    def start_hours(self) -> tuple[int, ...]:
        from cmarl_env.evaluation import rollout_start_hours

        return rollout_start_hours(self.start_hour, self.rollouts, self.start_jitter, self.seed)

    def learners(self) -> str:
        """What ``train_steps`` counts per, for the tables."""
        return "agent" if self.sharing == "per_agent" else "agent type"

    def points(self) -> list[tuple[float, float]]:
        """The rectangle lambda-axis x nu-axis (if ``rectangle``), then the band ``(lambda, -lambda - v)``."""
        lams = _axis(self.lambda_min, self.lambda_max, self.lambda_step)
        nus = _axis(self.nu_min, self.nu_max, self.nu_step)
        points = [(lam, nu) for lam in lams for nu in nus] if self.rectangle else []
        band = [(lam, round(-lam - v, 10)) for lam in lams for v in self.grid_values]
        return points + [p for p in band if p not in points]


def _axis(lo: float, hi: float, step: float) -> list[float]:
    count = int(math.floor((hi - lo) / step + 1e-9)) + 1
    return [round(lo + i * step, 10) for i in range(count)]


def trial_id(lam: float, nu: float) -> str:
    return f"lam{lam:g}_nu{nu:g}"


# ------------------------------------------------------------------ one trial
def evaluate_point(config: GridSearchConfig, lam: float, nu: float, policies=None, *, data=None,
                   constraint: float | None = None, start_hour: int | None = None):
    """One roll-out at the point: fixed multipliers through the one roll-out loop on the evaluated hours.

    ``policies=None`` (``augmented``): the shipped state-augmented policies see the fixed multipliers; a mapping
    (IPPO per type) or a sequence (IPPO per agent) of policies acts on plain observations. ``constraint`` and
    ``start_hour`` default to the config's. Returns the :class:`cmarl_env.evaluation.Rollout`.
    """
    from cmarl_env.core import DemandResponseCore
    from cmarl_env.data import load_dataset
    from cmarl_env.evaluation import evaluation_config, rollout

    constraint = config.constraint if constraint is None else float(constraint)
    start_hour = config.start_hour if start_hour is None else int(start_hour)
    controller = fixed_controller(lam, nu, policies)
    data = data if data is not None else load_dataset(DEFAULT_DATASET)
    env = evaluation_config(n_agents=config.n_agents, constraint=constraint, start_hour=start_hour,
                            steps=config.eval_steps, n_hours=data.n_steps, dataset=DEFAULT_DATASET, seed=config.seed,
                            augment=controller.augment)
    return rollout(controller, DemandResponseCore(env, data), start_hour, config.eval_steps)


def fixed_controller(lam: float, nu: float, policies=None) -> FixedMultipliers:
    """The controller of a point: shipped augmented policies (None), per-type IPPO (mapping) or per-agent IPPO
    (sequence: agent i acts with policy i)."""
    if policies is None or isinstance(policies, dict):
        return FixedMultipliers(lam, nu, policies, augment=policies is None)
    return PerAgentFixedMultipliers(lam, nu, list(policies))


class PerAgentFixedMultipliers(FixedMultipliers):
    """Fixed multipliers with one policy per agent (independent learners) acting on plain observations."""

    def __init__(self, lam: float, nu: float, agent_policies: list):
        super().__init__(lam, nu, None, augment=False)
        self.agent_policies = list(agent_policies)

    def reset(self, core) -> None:
        if len(self.agent_policies) != core.n_agents:
            raise ValueError(f"{len(self.agent_policies)} per-agent policies for a scenario of {core.n_agents} "
                             "agents; IPPO per agent needs exactly one policy per agent")
        self.core = core
        self.groups = [(np.array([i]), p) for i, p in enumerate(self.agent_policies)]


def aggregate_rollouts(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """One point's verdict over its roll-outs (start hours x training seeds): feasible only when every roll-out is
    (the one rule, per roll-out); numbers are means over the roll-outs. One roll-out is returned as it is."""
    if not metrics:
        raise ValueError("aggregate_rollouts needs at least one roll-out")
    n_ok = sum(bool(m["feasible"]) for m in metrics)
    if len(metrics) == 1:
        return dict(metrics[0]) | {"feasible_fraction": float(n_ok), "rollouts": 1}
    out: dict[str, Any] = {}
    for key, value in metrics[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(np.mean([m[key] for m in metrics]))
        elif not isinstance(value, bool):
            out[key] = value
    reasons = [m["infeasible_reason"] for m in metrics if not m["feasible"]]
    out.update(
        feasible=n_ok == len(metrics), feasible_fraction=n_ok / len(metrics), rollouts=len(metrics),
        infeasible_reason=(f"{len(reasons)}/{len(metrics)} roll-outs infeasible ({reasons[0]})" if reasons else ""),
        worst_grid_use_ratio=max(m["grid_use_ratio"] for m in metrics),
        worst_backlog_slope_per_agent=max(m["backlog_slope_per_agent"] for m in metrics),
        abs_backlog_rate_kwh_per_step=float(np.mean([abs(m["backlog_slope_kwh_per_step"]) for m in metrics])),
    )
    if "n_agents" in metrics[0]:
        out["n_agents"] = int(metrics[0]["n_agents"])
    return out


def run_trial(config: GridSearchConfig, lam: float, nu: float) -> dict[str, Any]:
    """Train (IPPO, once per training seed) or take (augmented) the policies at (lam, nu), roll them out from every
    start hour at every constraint level, judge each roll-out with the one rule and aggregate per level."""
    import torch

    from cmarl_env.data import load_dataset

    torch.set_num_threads(1)
    if (lam, nu) in {tuple(p) for p in config.fail_points}:
        raise RuntimeError(f"injected failure at (lambda, nu) = ({lam}, {nu})")
    start = time.perf_counter()
    data = load_dataset(DEFAULT_DATASET)
    seeds = config.train_seeds if config.method == "ippo" else config.train_seeds[:1]
    per_level: dict[float, list[dict[str, Any]]] = {c: [] for c in config.levels}
    train_seconds, env_steps = 0.0, 0
    for seed in seeds:
        if config.method == "augmented":
            policies = None
        else:
            t0 = time.perf_counter()
            policies = train_ippo(config, lam, nu, seed=seed, data=data)
            train_seconds += time.perf_counter() - t0
            env_steps += config.train_steps * len(policies)
        for c in config.levels:
            for hour in config.start_hours():
                per_level[c].append(evaluate_point(config, lam, nu, policies, data=data, constraint=c,
                                                   start_hour=hour).metrics())
    levels = {f"{c:g}": aggregate_rollouts(ms) for c, ms in per_level.items()}
    metrics = dict(levels[f"{config.constraint:g}"])
    metrics.setdefault("abs_backlog_rate_kwh_per_step", abs(metrics["backlog_slope_kwh_per_step"]))
    metrics.update(
        {"lambda": float(lam), "nu": float(nu)},
        method=config.method,
        sharing=config.sharing if config.method == "ippo" else "",
        train_env_steps=env_steps,
        train_seconds=train_seconds,
        trial_seconds=time.perf_counter() - start,
        levels=levels,
    )
    return metrics


def train_ippo(config: GridSearchConfig, lam: float, nu: float, *, seed: int | None = None,
               data=None, out_dir: Path | None = None) -> dict[float, Any] | list[Any]:
    """PPO on plain observations and the fixed-penalty reward at (lam, nu), ``config.train_steps`` env steps per
    learner: one policy per agent on its own building and demand scale (``per_agent``, returned as a list in
    agent order), or one per agent type on copies cycling through every building (``per_type``, a mapping).
    With ``out_dir`` each learner's training folder (checkpoint, config, training curve in ``metrics.json``)
    is kept there (``agent<i>/`` or ``scale<s>/``); otherwise in a temporary folder."""
    from algorithms.train import TrainConfig, train
    from cmarl_env.config import paper_demand_scales

    seed = config.train_seeds[0] if seed is None else int(seed)

    def learn(tmp: str, name: str, scale: float, buildings: tuple[int, ...] | None):
        train_config = TrainConfig(
            demand_scale=scale, total_steps=config.train_steps, fixed_multipliers=(lam, nu),
            constraint_fraction=config.constraint, seed=seed, out_dir=str(Path(tmp) / name), buildings=buildings,
            num_envs=64, epochs=max(1, min(10, config.train_steps // 20_000)), eval_episodes=8,
        )
        return train(train_config, progress=False, data=data).policy.act

    with tempfile.TemporaryDirectory(prefix="ippo_") as tmp:
        tmp = str(out_dir) if out_dir is not None else tmp
        if config.sharing == "per_type":
            return {scale: learn(tmp, f"scale{scale:g}", scale, None)
                    for scale in sorted(set(paper_demand_scales(config.n_agents)))}
        layout = scenario_layout(config, data)
        return [learn(tmp, f"agent{i}", float(scale), (int(building),))
                for i, (building, scale) in enumerate(zip(layout.building, layout.scale))]


def scenario_layout(config: GridSearchConfig, data=None):
    """The scenario's agents: which building each replays and its demand scale (``cmarl_env.core.AgentLayout``)."""
    from cmarl_env.core import DemandResponseCore
    from cmarl_env.data import load_dataset
    from cmarl_env.evaluation import evaluation_config

    data = data if data is not None else load_dataset(DEFAULT_DATASET)
    env = evaluation_config(n_agents=config.n_agents, constraint=config.constraint, start_hour=config.start_hour,
                            steps=config.eval_steps, n_hours=data.n_steps, dataset=DEFAULT_DATASET, seed=config.seed)
    return DemandResponseCore(env, data).layout


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
                _record_result(out, {k: result[k] for k in result if k == "levels" or not isinstance(result[k], dict)})

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


def level_results(config: GridSearchConfig, results: dict[str, dict], level: float) -> dict[str, dict]:
    """Each trial's aggregate at one constraint level (the main level's are the trial's top-level metrics)."""
    key = f"{float(level):g}"
    out = {}
    for tid, r in results.items():
        if float(level) == config.constraint:
            out[tid] = r
        elif key in r.get("levels", {}):
            out[tid] = r["levels"][key] | {"lambda": r["lambda"], "nu": r["nu"]}
    return out


def grid_value(lam: float, nu: float) -> float:
    """What the fixed-penalty reward pays per kWh of grid energy before its price: ``-(lambda + nu)``."""
    return -(float(lam) + float(nu))


@functools.lru_cache(maxsize=None)
def cheapest_price(dataset: str = DEFAULT_DATASET) -> float:
    """The dataset's lowest tariff (0.21 per kWh in the embedded CityLearn data)."""
    from cmarl_env.data import load_dataset

    return float(np.min(load_dataset(dataset).price))


def degenerate_reason(lam: float, nu: float, min_price: float | None = None) -> str:
    """Why a pair cannot be a fixed-penalty baseline's ('' if it can): the reward pays less for a kWh of grid
    energy than its cheapest price, so a learner that converges stops buying and postpones demand without end;
    it can look feasible only while under-trained (the grid search's budget), not at the suites' budgets."""
    v = grid_value(lam, nu)
    min_price = cheapest_price() if min_price is None else min_price
    if v < min_price:
        return (f"degenerate: the reward pays {v:g} per kWh of grid energy, below the cheapest price {min_price:g}, "
                "so a converged learner stops buying")
    return ""


def selected_pair(config: GridSearchConfig, results: dict[str, dict], level: float) -> dict[str, Any] | None:
    """The fixed-penalty pair a baseline should use at ``level``: not degenerate (:func:`degenerate_reason`),
    feasible in every roll-out of every training seed, lowest mean cost."""
    rows = [r for r in level_results(config, results, level).values()
            if r.get("feasible") and not degenerate_reason(r["lambda"], r["nu"])]
    if not rows:
        return None
    best = min(rows, key=lambda r: (r["total_cost"], r["lambda"], r["nu"]))
    return {"lambda": best["lambda"], "nu": best["nu"], "total_cost": best["total_cost"],
            "grid_use_ratio": best["grid_use_ratio"]}


def summarize(config: GridSearchConfig, results: dict[str, dict], out: Path, *, ran: int, wall: float) -> dict[str, Any]:
    ids = [trial_id(*p) for p in config.points()]
    errors = sorted(p.stem for p in (out / "errors").glob("*.json")) if (out / "errors").exists() else []
    trial_seconds = [results[i]["trial_seconds"] for i in ids if i in results]
    feasible = [(results[i]["lambda"], results[i]["nu"]) for i in ids if i in results and results[i]["feasible"]]
    limits = [results[i]["grid_limit"] for i in ids if i in results]
    return {
        "method": config.method,
        "sharing": config.sharing if config.method == "ippo" else "",
        "train_steps_per_learner": config.train_steps if config.method == "ippo" else 0,
        "learner": config.learners(),
        "start_hours": list(config.start_hours()),
        "train_seeds": list(config.train_seeds),
        "grid_limit": limits[0] if limits else None,
        "points": len(ids),
        "finished": sum(i in results for i in ids),
        "failed": [e for e in errors if e in ids],
        "ran_this_call": ran,
        "wall_time_s": wall,
        "mean_trial_seconds": float(np.mean(trial_seconds)) if trial_seconds else None,
        "trials_per_hour_per_cpu": 3600.0 / float(np.mean(trial_seconds)) if trial_seconds else None,
        "feasible_pairs": feasible,
        "selected": {f"{c:g}": selected_pair(config, results, c) for c in config.levels},
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
                rate[a, b] = r.get("abs_backlog_rate_kwh_per_step", abs(r["backlog_slope_kwh_per_step"]))
    return {"lambda": np.array(lams), "nu": np.array(nus), "grid_ratio": grid, "backlog_rate": rate}


def _budget(config: GridSearchConfig) -> str:
    hours = ", ".join(str(h) for h in config.start_hours())
    judged = (f"judged on {config.rollouts} roll-out(s) of {config.eval_steps} h from hours {hours}"
              + (f" x {len(config.train_seeds)} training seeds {list(config.train_seeds)}" if config.method == "ippo"
                 else ""))
    if config.method != "ippo":
        return f"shipped state-augmented policies held at each point; {judged}"
    sharing = ("independent PPO per agent, each on its own building and demand scale" if config.sharing == "per_agent"
               else "one PPO per agent type shared by its agents, on copies cycling through every building")
    return f"{sharing}; {config.train_steps:,} env steps per {config.learners()} and seed; {judged}"


def write_outputs(config: GridSearchConfig, results: dict[str, dict], out: Path, summary: dict[str, Any]) -> None:
    ids = [trial_id(*p) for p in config.points()]
    with open(out / "grid.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for c in config.levels:
            at = level_results(config, results, c)
            writer.writerows([({"constraint": c} | at[i]).get(col, "") for col in CSV_COLUMNS] for i in ids if i in at)
    sections = []
    for c in config.levels:
        at = level_results(config, results, c)
        rows = [at[i] for i in ids if i in at]
        feasible = [r for r in rows if r["feasible"]]
        limits = sorted({round(r["grid_limit"], 4) for r in rows})
        rule = (f"feasible (cmarl_env.evaluation.judge, every roll-out): average grid use <= "
                f"{1 + feasibility.GRID_TOLERANCE:g} x the grid limit and backlog slope <= "
                f"{feasibility.BACKLOG_SLOPE_LIMIT:g} kWh/step/agent; grid limit c x the peak over each roll-out's "
                f"hours (mean over the roll-outs: " + (", ".join(f"{v:.4f}" for v in limits) or "n/a") + " kWh/step)")
        sel = summary["selected"].get(f"{c:g}")
        chosen = (f"Selected pair (not degenerate, feasible, lowest mean cost): **({sel['lambda']:g}, {sel['nu']:g})**, "
                  f"cost {sel['total_cost']:.1f}" if sel
                  else "Selected pair: none (no pair that is not degenerate is feasible in every roll-out)")
        table = ["| lambda | nu | grid value -(lambda+nu) | avg grid / limit | backlog slope [kWh/step/agent] | total cost "
                 "| feasible roll-outs | degenerate |",
                 "|---|---|---|---|---|---|---|---|"]
        table += [f"| {r['lambda']:g} | {r['nu']:g} | {grid_value(r['lambda'], r['nu']):g} | {r['grid_use_ratio']:.3f} "
                  f"| {r['backlog_slope_per_agent']:+.5f} | {r['total_cost']:.1f} | {r.get('feasible_fraction', 1.0):.0%} "
                  f"| {'yes' if degenerate_reason(r['lambda'], r['nu']) else 'no'} |"
                  for r in sorted(feasible, key=lambda r: r["total_cost"])]
        sections.append(f"## c = {c:g}: {len(feasible)} of {len(ids)} points feasible\n\n{rule}\n\n{chosen}\n\n"
                        + "\n".join(table) + "\n")
        suffix = "" if c == config.constraint else f"_c{c:g}"
        if config.rectangle:
            plot_heatmaps(config, at, out / f"figure_A1_{config.method}{suffix}.png", level=c)
        if config.grid_values:
            plot_band(config, at, out / f"figure_band_{config.method}{suffix}.png", level=c)
    (out / "table1.md").write_text(f"Fixed multipliers that satisfy both constraints ({config.method}; "
                                   f"{_budget(config)})\n\n" + "\n".join(sections))
    _atomic_json(out / "summary.json", summary)


def plot_heatmaps(config: GridSearchConfig, results: dict[str, dict], path: Path, level: float | None = None) -> None:
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
    level = config.constraint if level is None else level
    fig.suptitle(f"Fixed-penalty grid ({config.method}, c = {level:g}); red squares satisfy both constraints "
                 "in every roll-out")
    _save_figure(fig, path)


def plot_band(config: GridSearchConfig, results: dict[str, dict], path: Path, level: float | None = None) -> None:
    """The band ``(lambda, -lambda - v)``: (a) mean grid use / limit and (b) total cost against the grid value v,
    one line per lambda; filled markers are feasible in every roll-out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lams = _axis(config.lambda_min, config.lambda_max, config.lambda_step)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for lam in lams:
        rows = [(v, results.get(trial_id(lam, round(-lam - v, 10)))) for v in config.grid_values]
        rows = [(v, r) for v, r in rows if r is not None]
        if not rows:
            continue
        v = [x for x, _ in rows]
        for ax, key in ((axes[0], "grid_use_ratio"), (axes[1], "total_cost")):
            line, = ax.plot(v, [r[key] for _, r in rows], label=f"lambda = {lam:g}")
            ax.scatter(v, [r[key] for _, r in rows], c=[line.get_color() if r.get("feasible") else "white" for _, r in rows],
                       edgecolors=line.get_color(), zorder=3)
    axes[0].axhline(1 + feasibility.GRID_TOLERANCE, color="red", lw=0.8, ls="--")
    for ax, title in ((axes[0], "(a) mean grid use / limit"), (axes[1], "(b) total cost")):
        ax.set_xlabel("grid value v = -(lambda + nu) per kWh")
        ax.set_title(title)
    axes[0].legend()
    level = config.constraint if level is None else level
    fig.suptitle(f"Fixed-penalty band ({config.method}, c = {level:g}); filled markers satisfy both constraints in "
                 "every roll-out; dashed: the grid tolerance")
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    """PNG (for the README) and PDF (for papers) of one grid-search figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
