"""Aggregation over seeds: interquartile mean and stratified-bootstrap 95 % confidence intervals.

Follows Agarwal et al. (2021), "Deep RL at the edge of the statistical
precipice" (the rliable library), implemented with numpy and scipy:

* IQM: the mean of the middle 50 % of the values,
  ``scipy.stats.trim_mean(x, 0.25)`` (cuts ``floor(0.25 n)`` values at each
  end; for n < 4 nothing is cut and the IQM is the mean).
* Stratified bootstrap: each stratum (a scenario; one stratum for a single
  scenario's table) is resampled with replacement to its own size, the strata
  are pooled and the statistic recomputed; the 95 % interval is the 2.5 and
  97.5 percentiles of ``reps`` such replicates (percentile method, as
  rliable's default). The generator is seeded, so tables are reproducible.

A run's value of a metric is the mean over its roll-outs (``metrics.json``);
runs are the seeds. Overall numbers pool all scenarios a method ran in, with
the scenarios as strata.

Ranking (non-reference methods): within each scenario, methods are ordered by
IQM infeasible fraction, then IQM cost ratio to the LP optimum (the mean cost
when the scenario has no LP reference); tied keys share the mean of their
positions. The overall ranking orders methods by their mean rank over the
scenarios they ran in, ties broken by pooled infeasible fraction and cost ratio.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy.stats import trim_mean

DEFAULT_REPS = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    unit: str = ""
    lower_is_better: bool | None = True
    scale: float = 1.0      # display multiplier (e.g. s -> ms)
    digits: int = 3


METRICS: tuple[MetricDef, ...] = (
    MetricDef("mean_cost", "Cost", "price units per roll-out", True, 1.0, 1),
    MetricDef("cost_ratio", "Cost / LP", "ratio to the clairvoyant LP optimum", True, 1.0, 3),
    MetricDef("grid_use_ratio", "Grid / limit", "average grid use over the limit", None, 1.0, 3),
    MetricDef("grid_violation_pct", "Violation %", "grid use above the limit, %", True, 1.0, 1),
    MetricDef("backlog_slope_kwh_per_step", "Backlog slope", "kWh per step, last third", True, 1.0, 3),
    MetricDef("infeasible_fraction", "Infeasible", "fraction of roll-outs", True, 1.0, 2),
    MetricDef("consensus_error_final", "Consensus err", "final weighted consensus error of lambda", True, 1.0, 3),
    MetricDef("train_wall_time_s", "Train s", "training wall time, s", True, 1.0, 0),
    MetricDef("exec_seconds_per_step", "Exec ms/step", "execution wall time per step, ms", True, 1000.0, 3),
)
METRIC_KEYS = tuple(m.key for m in METRICS)


# --------------------------------------------------------------------------- statistics
def iqm(values: Sequence[float] | np.ndarray, axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean: ``trim_mean(values, 0.25)``; NaN for no values."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return math.nan
    out = trim_mean(arr, 0.25, axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def stratified_bootstrap_ci(
    strata: Sequence[Sequence[float]],
    statistic: Callable[..., Any] = iqm,
    *,
    reps: int = DEFAULT_REPS,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of ``statistic`` under the stratified bootstrap.

    ``strata`` is a list of 1-D samples (empty ones are ignored);
    ``statistic(array, axis=1)`` must reduce each row of a (reps, n) array.
    """
    groups = [np.asarray(s, dtype=np.float64) for s in strata]
    groups = [g for g in groups if g.size]
    if not groups:
        return math.nan, math.nan
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must lie in (0, 1)")
    rng = np.random.default_rng(seed)
    samples = [g[rng.integers(0, g.size, size=(reps, g.size))] for g in groups]
    stats = np.asarray(statistic(np.concatenate(samples, axis=1), axis=1), dtype=np.float64)
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(stats, [tail, 100.0 - tail])
    return float(lo), float(hi)


@dataclass
class Stat:
    """IQM and bootstrap CI of one metric for one method (in one scenario, or pooled)."""

    iqm: float
    ci_low: float
    ci_high: float
    n: int
    values: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"iqm": _none(self.iqm), "ci_low": _none(self.ci_low), "ci_high": _none(self.ci_high), "n": self.n,
                "values": [_none(v) for v in self.values]}


def summarize_values(strata: Sequence[Sequence[float]], *, reps: int = DEFAULT_REPS, seed: int = 0) -> Stat:
    groups = [[float(v) for v in s if v is not None and math.isfinite(float(v))] for s in strata]
    pooled = [v for g in groups for v in g]
    if not pooled:
        return Stat(math.nan, math.nan, math.nan, 0, [])
    lo, hi = stratified_bootstrap_ci(groups, reps=reps, seed=seed)
    return Stat(iqm(pooled), lo, hi, len(pooled), pooled)


# --------------------------------------------------------------------------- results
@dataclass
class RunRecord:
    run_id: str
    scenario: str
    method: str
    seed: int
    metrics: dict[str, Any]
    path: Path
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.metrics.get("kind", self.spec.get("method", {}).get("kind", "")))

    @property
    def reference(self) -> bool:
        return bool(self.metrics.get("reference", False))

    def trajectories(self) -> dict[str, np.ndarray]:
        p = self.path / "trajectories.npz"
        if not p.is_file():
            return {}
        with np.load(p) as z:
            return {k: z[k] for k in z.files}

    def rollouts(self) -> list[dict[str, Any]]:
        p = self.path / "rollouts.json"
        return json.loads(p.read_text()) if p.is_file() else []


@dataclass
class Failure:
    run_id: str
    path: Path
    error: str


def load_runs(results_dir: str | Path) -> tuple[list[RunRecord], list[Failure]]:
    """Every finished run (a folder with metrics.json) under ``results_dir/runs`` and every failed one."""
    root = Path(results_dir)
    runs_root = root / "runs" if (root / "runs").is_dir() else root
    records: list[RunRecord] = []
    failures: list[Failure] = []
    for metrics_path in sorted(runs_root.rglob("metrics.json")):
        folder = metrics_path.parent
        try:
            m = json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("format") != "cmarl-bench-run/1":
            continue
        spec_path = folder / "spec.json"
        spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
        records.append(RunRecord(m["run_id"], m["scenario"], m["method"], int(m["seed"]), m, folder, spec))
    for err_path in sorted(runs_root.rglob("error.json")):
        if (err_path.parent / "metrics.json").is_file():
            continue
        try:
            e = json.loads(err_path.read_text())
        except (OSError, json.JSONDecodeError):
            e = {}
        failures.append(Failure(e.get("run_id", str(err_path.parent)), err_path.parent,
                                f"{e.get('error_type', 'Error')}: {e.get('error', '?')}"))
    return records, failures


@dataclass
class MethodInfo:
    name: str
    kind: str
    label: str
    reference: bool
    budget: str
    budget_detail: str
    note: str


@dataclass
class Aggregate:
    scenarios: list[str]
    methods: dict[str, MethodInfo]
    per_scenario: dict[str, dict[str, dict[str, Stat]]]   # scenario -> method -> metric -> Stat
    seeds: dict[str, dict[str, list[int]]]                 # scenario -> method -> seeds
    overall: dict[str, dict[str, Stat]]                    # method -> metric -> Stat (strata = scenarios)
    ranks: dict[str, dict[str, float]]                     # scenario -> method -> rank
    ranking: list[str]                                     # non-reference methods, best first
    mean_rank: dict[str, float]
    scenario_facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    reps: int = DEFAULT_REPS

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "cmarl-leaderboard/1",
            "statistic": "IQM (scipy.stats.trim_mean 0.25) over seeds; 95 % stratified bootstrap percentile CI",
            "bootstrap_reps": self.reps,
            "scenarios": self.scenarios,
            "methods": {k: vars(v) for k, v in self.methods.items()},
            "per_scenario": {s: {m: {k: st.to_dict() for k, st in d.items()} for m, d in ms.items()}
                             for s, ms in self.per_scenario.items()},
            "seeds": self.seeds,
            "overall": {m: {k: st.to_dict() for k, st in d.items()} for m, d in self.overall.items()},
            "ranks": self.ranks,
            "mean_rank": {k: _none(v) for k, v in self.mean_rank.items()},
            "ranking": self.ranking,
            "scenario_facts": self.scenario_facts,
            "failures": [{"run_id": f.run_id, "error": f.error} for f in self.failures],
        }


def aggregate(records: Sequence[RunRecord], failures: Sequence[Failure] = (), *, reps: int = DEFAULT_REPS,
              seed: int = 0, metrics: Sequence[str] = METRIC_KEYS) -> Aggregate:
    scenarios = list(dict.fromkeys(r.scenario for r in records))
    methods: dict[str, MethodInfo] = {}
    for r in records:
        if r.method not in methods:
            m = r.metrics
            methods[r.method] = MethodInfo(r.method, r.kind, m.get("label") or r.method, r.reference,
                                           m.get("budget", ""), m.get("budget_detail", ""), m.get("note", ""))
    by: dict[str, dict[str, list[RunRecord]]] = {}
    for r in records:
        by.setdefault(r.scenario, {}).setdefault(r.method, []).append(r)
    per: dict[str, dict[str, dict[str, Stat]]] = {}
    seeds: dict[str, dict[str, list[int]]] = {}
    facts: dict[str, dict[str, Any]] = {}
    for s in scenarios:
        per[s], seeds[s] = {}, {}
        for mname in methods:
            runs = sorted(by.get(s, {}).get(mname, []), key=lambda r: r.seed)
            if not runs:
                continue
            seeds[s][mname] = [r.seed for r in runs]
            per[s][mname] = {k: summarize_values([[r.metrics.get(k) for r in runs]], reps=reps, seed=seed)
                             for k in metrics}
        any_run = next(iter(by[s].values()))[0]
        sc = any_run.spec.get("scenario", {})
        facts[s] = {k: sc.get(k) for k in ("n_agents", "graph", "constraint", "steps", "start_hour", "start_jitter",
                                              "demand_scales")} | {
            "grid_limit_kwh": _none(np.nanmean([_nan(r.metrics.get("grid_limit")) for m in by[s].values() for r in m])),
            "rollouts": any_run.metrics.get("n_rollouts")}
    overall: dict[str, dict[str, Stat]] = {}
    for mname in methods:
        overall[mname] = {}
        for k in metrics:
            strata = [[r.metrics.get(k) for r in by.get(s, {}).get(mname, [])] for s in scenarios]
            overall[mname][k] = summarize_values(strata, reps=reps, seed=seed)
    ranks: dict[str, dict[str, float]] = {}
    for s in scenarios:
        cands = [m for m in per[s] if not methods[m].reference]
        ranks[s] = rank_methods({m: per[s][m] for m in cands})
    mean_rank = {}
    for mname, info in methods.items():
        if info.reference:
            continue
        rs = [ranks[s][mname] for s in scenarios if mname in ranks[s]]
        mean_rank[mname] = float(np.mean(rs)) if rs else math.nan
    ranking = sorted(mean_rank, key=lambda m: (_inf(mean_rank[m]), _inf(overall[m]["infeasible_fraction"].iqm)
                                               if "infeasible_fraction" in overall[m] else math.inf,
                                               _inf(overall[m]["cost_ratio"].iqm) if "cost_ratio" in overall[m]
                                               else math.inf))
    return Aggregate(scenarios, methods, per, seeds, overall, ranks, ranking, mean_rank, facts, list(failures), reps)


def rank_key(stats: Mapping[str, Stat]) -> tuple[float, float]:
    inf = stats.get("infeasible_fraction")
    ratio = stats.get("cost_ratio")
    cost = stats.get("mean_cost")
    first = round(_inf(inf.iqm), 6) if inf is not None else math.inf
    second = _inf(ratio.iqm) if ratio is not None and ratio.n else (_inf(cost.iqm) if cost is not None else math.inf)
    return first, second


def rank_methods(stats: Mapping[str, Mapping[str, Stat]]) -> dict[str, float]:
    """Rank (1 = best) by :func:`rank_key`; equal keys share the mean of their positions."""
    keys = {m: rank_key(s) for m, s in stats.items()}
    order = sorted(keys, key=lambda m: keys[m])
    out: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and keys[order[j + 1]] == keys[order[i]]:
            j += 1
        for m in order[i:j + 1]:
            out[m] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def load_aggregate(results_dir: str | Path, **kwargs: Any) -> Aggregate:
    records, failures = load_runs(results_dir)
    return aggregate(records, failures, **kwargs)


def _nan(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _inf(v: Any) -> float:
    f = _nan(v)
    return math.inf if math.isnan(f) else f


def _none(v: Any) -> Any:
    f = _nan(v)
    return None if not math.isfinite(f) else f
