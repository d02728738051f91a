"""Aggregation with rliable: score matrices (runs x scenarios) in, interval estimates out.

* A run's value of a metric is the mean over its roll-outs (``metrics.json``);
  the runs of a method in a scenario are its seeds (one run for methods whose
  results do not depend on the seed).
* Point estimates are the interquartile mean (``rliable.metrics.aggregate_iqm``);
  95 % intervals come from rliable's stratified bootstrap
  (``rliable.library.get_interval_estimates``, percentile method, seeded).
* Ranking: within a scenario, non-reference methods are ordered by the IQM
  infeasible fraction, then the IQM cost over the LP (the mean total cost when
  the scenario has no LP reference). The overall ranking uses only the
  scenarios that **every** ranked method ran; with none in common there is no
  overall ranking, only the per-scenario ones.
* Probability of improvement (``rliable.metrics.probability_of_improvement``)
  of dual consensus over every other ranked method, on the common scenarios,
  with the score ``-(cost_ratio + 1000 x infeasible_fraction)``: a run with an
  infeasible roll-out loses to every feasible run, feasible runs compare on
  cost over the LP.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_REPS = 2000
PI_REPS = 1000
CONFIDENCE = 0.95
OURS = "consensus"  # the kind whose probability of improvement over the others is reported
INFEASIBLE_PENALTY = 1000.0


@dataclass(frozen=True)
class MetricDef:
    key: str
    label: str
    unit: str = ""
    lower_is_better: bool | None = True
    scale: float = 1.0      # display multiplier (e.g. s -> ms)
    digits: int = 3
    interval: bool = True   # bootstrap an interval (else the IQM alone)


# The columns both domains' leaderboards share.
INFEASIBLE = MetricDef("infeasible_fraction", "Infeasible", "fraction of roll-outs", True, 1.0, 2)
CONSENSUS_ERROR = MetricDef("consensus_error_final", "Consensus err", "final weighted consensus error of lambda", True,
                            1.0, 3, False)
TIMINGS = (MetricDef("train_wall_time_s", "Train s", "training wall time, s", True, 1.0, 0, False),
           MetricDef("exec_seconds_per_step", "Exec ms/step", "execution wall time per step, ms", True, 1000.0, 3, False))

METRICS: tuple[MetricDef, ...] = (
    MetricDef("total_cost", "Cost", "energy + terminal backlog at the horizon's highest price, per roll-out", True,
              1.0, 0),
    MetricDef("cost_ratio", "Cost / LP", "total cost over the unbounded clairvoyant LP's", True, 1.0, 3),
    MetricDef("grid_use_ratio", "Grid / limit", "average grid use over the limit", None, 1.0, 3),
    MetricDef("backlog_slope_per_agent", "Backlog slope", "kWh per step per agent, last third", True, 1000.0, 2),
    MetricDef("max_agent_backlog_kwh", "Max backlog", "largest backlog of any agent, kWh", True, 1.0, 1, False),
    INFEASIBLE,
    CONSENSUS_ERROR,
    MetricDef("lambda_at_cap_fraction", "lambda at cap", "fraction of agents with lambda at its cap (end)", True,
              1.0, 2, False),
    *TIMINGS,
)
METRIC_KEYS = tuple(m.key for m in METRICS)
# The columns of an EV-charging leaderboard (benchmarks.run.EV_MEAN_KEYS; the EV rule in
# cmarl_env/domains/ev_charging/evaluation.py)
EV_METRICS: tuple[MetricDef, ...] = (
    MetricDef("total_cost", "Cost", "energy + unmet and pending energy at the horizon's highest price, per roll-out",
              True, 1.0, 1),
    MetricDef("cost_ratio", "Cost / LP", "total cost over the clairvoyant LP's under the hourly cap", True, 1.0, 3),
    MetricDef("grid_use_ratio", "Load / cap", "average load over the average cap", None, 1.0, 3),
    MetricDef("overload_ratio", "Overload", "average hourly overload over the average cap", True, 1.0, 4),
    MetricDef("unmet_fraction", "Unmet", "unmet energy over the energy the departed cars requested", True, 1.0, 4),
    MetricDef("peak_ratio", "Peak / cap", "largest hourly load over its cap", True, 1.0, 2, False),
    INFEASIBLE,
    CONSENSUS_ERROR,
    *TIMINGS,
)
EV_METRIC_KEYS = tuple(m.key for m in EV_METRICS)
_INTERVAL = {m.key for m in METRICS if m.interval} | {m.key for m in EV_METRICS if m.interval}


@dataclass
class Stat:
    """IQM and 95 % interval of one metric for one method (in one scenario, or over the common scenarios)."""

    iqm: float
    ci_low: float
    ci_high: float
    n: int
    values: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"iqm": _none(self.iqm), "ci_low": _none(self.ci_low), "ci_high": _none(self.ci_high), "n": self.n,
                "values": [_none(v) for v in self.values]}


@contextlib.contextmanager
def _seeded(seed: int):
    """rliable's bootstraps draw their indices from numpy's global generator (``np.random.choice``), not from the
    ``random_state`` they are given: seed it for the call and restore the caller's state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def score_matrix(columns: Sequence[Sequence[Any]]) -> np.ndarray | None:
    """Runs x tasks from one list of run values per task (the first ``min`` runs of each; None if any is empty)."""
    cols = [[float(v) for v in c if v is not None and math.isfinite(float(v))] for c in columns]
    n = min((len(c) for c in cols), default=0)
    if n == 0:
        return None
    return np.array([c[:n] for c in cols], dtype=np.float64).T


def interval_estimate(matrix: np.ndarray | None, *, reps: int = DEFAULT_REPS, seed: int = 0,
                      interval: bool = True) -> Stat:
    """rliable's IQM of a (runs x tasks) matrix with its stratified-bootstrap percentile interval."""
    from rliable import library as rly
    from rliable import metrics

    if matrix is None or matrix.size == 0:
        return Stat(math.nan, math.nan, math.nan, 0, [])
    point = float(metrics.aggregate_iqm(matrix))
    values = matrix.ravel().tolist()
    if not interval:
        return Stat(point, math.nan, math.nan, matrix.shape[0], values)
    if matrix.shape[0] < 2 or np.all(matrix == matrix[0]):
        return Stat(point, point, point, matrix.shape[0], values)
    with warnings.catch_warnings(), _seeded(seed):
        warnings.simplefilter("ignore", FutureWarning)
        _, ci = rly.get_interval_estimates({"m": matrix}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps,
                                           confidence_interval_size=CONFIDENCE,
                                           random_state=np.random.RandomState(seed))
    lo, hi = np.asarray(ci["m"]).ravel()[:2]
    return Stat(point, float(lo), float(hi), matrix.shape[0], values)


def probability_of_improvement(x: np.ndarray, y: np.ndarray, *, reps: int = PI_REPS, seed: int = 0) -> Stat:
    """P(X > Y) over tasks (rliable), with its stratified-bootstrap interval; higher scores are better."""
    from rliable import library as rly
    from rliable import metrics

    point = float(metrics.probability_of_improvement(x, y))
    if x.shape[0] < 2 and y.shape[0] < 2:
        return Stat(point, point, point, x.shape[0] + y.shape[0], [])
    with warnings.catch_warnings(), _seeded(seed):
        warnings.simplefilter("ignore", FutureWarning)
        _, ci = rly.get_interval_estimates({"pi": [x, y]},
                                           lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
                                           reps=reps, confidence_interval_size=CONFIDENCE,
                                           random_state=np.random.RandomState(seed))
    lo, hi = np.asarray(ci["pi"]).ravel()[:2]
    return Stat(point, float(lo), float(hi), x.shape[0] + y.shape[0], [])


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
        if m.get("format") != "cmarl-bench-run/2":
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
    common_scenarios: list[str] = field(default_factory=list)   # the scenarios every ranked method ran
    ours: str | None = None                                      # the method the improvement probabilities are of
    improvement: dict[str, Stat] = field(default_factory=dict)   # P(ours better than method) with its interval
    # scenario -> method -> each run's training description (learned multipliers differ by scenario and seed)
    training_details: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "cmarl-leaderboard/1",
            "statistic": "rliable: IQM (aggregate_iqm) over runs; 95 % stratified-bootstrap percentile intervals",
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
            "common_scenarios": self.common_scenarios,
            "probability_of_improvement": {"of": self.ours, "score": "-(cost_ratio + 1000 x infeasible_fraction)",
                                           "over": {m: st.to_dict() for m, st in self.improvement.items()}},
        }


def aggregate(records: Sequence[RunRecord], failures: Sequence[Failure] = (), *, reps: int = DEFAULT_REPS,
              seed: int = 0, metrics: Sequence[str] = METRIC_KEYS,
              scenario_facts: Mapping[str, Mapping[str, Any]] | None = None) -> Aggregate:
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
            per[s][mname] = {k: interval_estimate(score_matrix([[r.metrics.get(k) for r in runs]]), reps=reps,
                                                  seed=seed, interval=k in _INTERVAL) for k in metrics}
        any_run = next(iter(by[s].values()))[0]
        sc = any_run.spec.get("scenario", {})
        facts[s] = {k: sc.get(k) for k in ("n_agents", "graph", "constraint", "steps", "start_hour", "start_jitter",
                                              "demand_scales", "label", "calibrate")} | {
            "grid_limit": _finite_mean([r.metrics.get("grid_limit") for m in by[s].values() for r in m]),
            "rollouts": any_run.metrics.get("n_rollouts")} | dict((scenario_facts or {}).get(s, {}))
    ranked = [m for m, info in methods.items() if not info.reference]
    common = [s for s in scenarios if all(m in per[s] for m in ranked)]
    overall: dict[str, dict[str, Stat]] = {}
    for mname in methods:
        sc_list = common if mname in ranked else [s for s in common if mname in per[s]]
        overall[mname] = {k: interval_estimate(score_matrix([[r.metrics.get(k) for r in sorted(
            by[s][mname], key=lambda r: r.seed)] for s in sc_list]), reps=reps, seed=seed, interval=k in _INTERVAL)
            for k in metrics} if sc_list else {}
    ranks: dict[str, dict[str, float]] = {}
    for s in scenarios:
        ranks[s] = rank_methods({m: per[s][m] for m in per[s] if not methods[m].reference})
    mean_rank = {m: float(np.mean([ranks[s][m] for s in common])) for m in ranked} if common else {}
    ranking = sorted(mean_rank, key=lambda m: (mean_rank[m],) + rank_key(overall[m]))
    improvement = {}
    ours = [m for m in ranked if methods[m].kind == OURS]
    if common and ours:
        x = _score(by, ours[0], common)
        for m in ranked:
            if m != ours[0]:
                y = _score(by, m, common)
                if x is not None and y is not None:
                    improvement[m] = probability_of_improvement(x, y, seed=seed)
    details = {sc: {m: [r.metrics.get("budget_detail", "") for r in rs] for m, rs in ms.items()} for sc, ms in by.items()}
    return Aggregate(scenarios, methods, per, seeds, overall, ranks, ranking, mean_rank, facts, list(failures), reps,
                     common, ours[0] if ours else None, improvement, details)


def _score(by, method: str, scenarios: Sequence[str]) -> np.ndarray | None:
    """The probability-of-improvement score of a method's runs: -(cost / LP + 1000 x infeasible fraction)."""
    cols = []
    for s in scenarios:
        col = []
        for r in sorted(by[s][method], key=lambda r: r.seed):
            cost = r.metrics.get("cost_ratio")
            cost = r.metrics.get("total_cost") if cost is None else cost
            inf = r.metrics.get("infeasible_fraction")
            if cost is None or inf is None:
                return None
            col.append(-(float(cost) + INFEASIBLE_PENALTY * float(inf)))
        cols.append(col)
    return score_matrix(cols)


def rank_key(stats: Mapping[str, Stat]) -> tuple[float, float]:
    inf = stats.get("infeasible_fraction")
    ratio = stats.get("cost_ratio")
    cost = stats.get("total_cost")
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
    """Aggregate every finished run under ``results_dir``, with the scenario facts the runner recorded."""
    records, failures = load_runs(results_dir)
    if records and all(r.metrics.get("domain") == "ev_charging" for r in records):
        kwargs.setdefault("metrics", EV_METRIC_KEYS)  # an EV suite: the EV columns
    return aggregate(records, failures, scenario_facts=load_scenario_facts(results_dir), **kwargs)


def load_scenario_facts(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The scenario facts the runner recorded in ``results_dir/scenarios/<scenario>.json``."""
    facts = {}
    for p in sorted((Path(results_dir) / "scenarios").glob("*.json")):
        try:
            facts[p.stem] = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return facts


def _finite_mean(values: Sequence[Any]) -> float | None:
    vals = [f for f in (_nan(v) for v in values) if math.isfinite(f)]
    return float(np.mean(vals)) if vals else None


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
