"""Leaderboard files from a results folder: Markdown, CSV and JSON (marl-eval layout).

``write_leaderboard(results_dir)`` writes ``RESULTS/leaderboard/``:

* ``leaderboard.md``: an overall ranking and one table per scenario; every
  cell is ``IQM [95 % CI]`` over seeds (``benchmarks.aggregate``); the
  "Training" column says how each method was obtained (shipped pretrained
  policies, short or full training budget in env steps, no training).
* ``leaderboard.csv``: the same numbers in long form, one row per
  (scope, scenario, method, metric) with ``iqm, ci_low, ci_high, n, rank``.
* ``leaderboard.json``: raw per-roll-out values in the layout of marl-eval
  (instadeepai/marl-eval; BenchMARL writes the same), so its tools read it::

      {env_name: {task_name: {algo_name: {"seed_<s>": {
          "step_0": {"step_count": <training env steps>, "<metric>": [one value per roll-out]},
          "absolute_metrics": {"<metric>": [one value per roll-out]}}}}}}

  ``env_name`` is ``cmarl_<experiment>`` (within an experiment every scenario
  has the same methods and seeds, as marl-eval requires), ``task_name`` the
  scenario, ``algo_name`` the method. Metrics: ``return`` (minus the roll-out's
  operating cost, so higher is better as marl-eval assumes), ``cost``,
  ``cost_ratio``, ``grid_use_ratio``, ``grid_violation_pct``,
  ``backlog_slope``, ``infeasible`` (0/1) and, for the dual methods,
  ``consensus_error``; a metric is listed only with its finite values (e.g.
  no ``cost_ratio`` for a roll-out whose LP is infeasible).
* ``summary.json``: everything the tables show, machine-readable.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

from benchmarks.aggregate import METRICS, Aggregate, RunRecord, Stat, load_runs, aggregate
from benchmarks.methods import atomic_write_text, dump_json

ENV_PREFIX = "cmarl_"
README_START = "<!-- cmarl-leaderboard:start -->"
README_END = "<!-- cmarl-leaderboard:end -->"
OVERALL_METRICS = ("infeasible_fraction", "cost_ratio", "grid_violation_pct", "backlog_slope_kwh_per_step")
CSV_FIELDS = ("scope", "scenario", "method", "label", "kind", "reference", "training", "metric", "iqm", "ci_low",
              "ci_high", "n", "rank")


def fmt_stat(st: Stat | None, scale: float = 1.0, digits: int = 3, ci: bool = True) -> str:
    if st is None or st.n == 0 or not math.isfinite(st.iqm):
        return "—"
    v = f"{st.iqm * scale:.{digits}f}"
    if not ci or st.n < 2:
        return v
    return f"{v} [{st.ci_low * scale:.{digits}f}, {st.ci_high * scale:.{digits}f}]"


def _training(agg: Aggregate, method: str) -> str:
    info = agg.methods[method]
    text = info.budget_detail or info.budget or ""
    if text in ("none", ""):
        text = "no training"
    if info.note:
        text = f"{text}; {info.note}"
    return text


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(agg: Aggregate, suite: str = "", *, scenarios: Sequence[str] | None = None) -> str:
    """The leaderboard as Markdown: overall ranking, then one table per scenario."""
    metric_defs = {m.key: m for m in METRICS}
    out = io.StringIO()
    title = f"Leaderboard: suite `{suite}`" if suite else "Leaderboard"
    out.write(f"### {title}\n\n")
    out.write("Each cell: interquartile mean over seeds [95 % stratified-bootstrap CI]. A run = roll-outs of the "
              "scenario's horizon from the same start hours for every method; roll-out metrics are averaged per run. "
              "Infeasible = average grid use > 1.02 x limit or backlog slope > 0.05 kWh/step. Cost / LP = cost over "
              "the clairvoyant LP optimum of the same hours (a lower bound; below 1 only by postponing demand). "
              "Lower is better everywhere except Grid / limit (at most 1.02 is feasible).\n\n")
    if agg.failures:
        out.write(f"**{len(agg.failures)} failed run(s)** (see their error.json): "
                  + ", ".join(f"`{f.run_id}`" for f in agg.failures[:10])
                  + (" ..." if len(agg.failures) > 10 else "") + "\n\n")
    # overall
    out.write("#### Overall ranking\n\n")
    cols = ["Rank", "Method", "Training", "Mean rank", "Scenarios"] + [metric_defs[k].label for k in OVERALL_METRICS]
    out.write("| " + " | ".join(cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n")
    for i, m in enumerate(agg.ranking, 1):
        n_sc = sum(1 for s in agg.scenarios if m in agg.per_scenario[s])
        row = [str(i), _md_escape(agg.methods[m].label), _md_escape(_training(agg, m)),
               f"{agg.mean_rank[m]:.2f}", str(n_sc)]
        row += [fmt_stat(agg.overall[m].get(k), metric_defs[k].scale, metric_defs[k].digits) for k in OVERALL_METRICS]
        out.write("| " + " | ".join(row) + " |\n")
    refs = [m for m, info in agg.methods.items() if info.reference]
    for m in refs:
        n_sc = sum(1 for s in agg.scenarios if m in agg.per_scenario[s])
        row = ["ref.", _md_escape(agg.methods[m].label), _md_escape(_training(agg, m)), "—", str(n_sc)]
        row += [fmt_stat(agg.overall[m].get(k), metric_defs[k].scale, metric_defs[k].digits) for k in OVERALL_METRICS]
        out.write("| " + " | ".join(row) + " |\n")
    out.write("\nRank: mean over scenarios of the within-scenario rank (by infeasible fraction, then cost / LP); "
              "references are not ranked.\n\n")
    # per scenario
    for s in scenarios or agg.scenarios:
        f = agg.scenario_facts.get(s, {})
        seeds = sorted({x for v in agg.seeds[s].values() for x in v})
        desc = (f"{f.get('n_agents')} agents, {f.get('graph')} graph, c = {f.get('constraint')}, "
                f"{f.get('steps')} h from hour {f.get('start_hour')} (+ up to {f.get('start_jitter')} h), "
                f"{f.get('rollouts')} roll-outs x {len(seeds)} seed(s)")
        if f.get("grid_limit_kwh") is not None:
            desc += f", grid limit about {f['grid_limit_kwh']:.2f} kWh/h"
        out.write(f"#### Scenario `{s}`\n\n{desc}.\n\n")
        cols = ["Rank", "Method", "Training"] + [m.label for m in METRICS] + ["Seeds"]
        out.write("| " + " | ".join(cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n")
        methods = sorted(agg.per_scenario[s], key=lambda m: (agg.methods[m].reference,
                                                             agg.ranks[s].get(m, math.inf)))
        for m in methods:
            stats = agg.per_scenario[s][m]
            rank = agg.ranks[s].get(m)
            row = ["ref." if rank is None else f"{rank:g}", _md_escape(agg.methods[m].label),
                   _md_escape(_training(agg, m))]
            row += [fmt_stat(stats.get(d.key), d.scale, d.digits) for d in METRICS]
            row.append(str(len(agg.seeds[s][m])))
            out.write("| " + " | ".join(row) + " |\n")
        out.write("\n")
    out.write("Units: Cost in the dataset's price units per roll-out; Backlog slope in kWh per step over the last "
              "third of a roll-out; Consensus err is the degree-weighted norm of lambda minus its consensus value at "
              "the end (dual methods only); Train s is the training wall time (the shipped policies' recorded time for "
              "the dual methods); Exec ms/step is execution wall time per environment step.\n")
    return out.getvalue()


def csv_text(agg: Aggregate) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()

    def rows(scope: str, scenario: str, method: str, stats: dict[str, Stat], rank: float | None):
        info = agg.methods[method]
        for d in METRICS:
            st = stats.get(d.key)
            if st is None:
                continue
            w.writerow({"scope": scope, "scenario": scenario, "method": method, "label": info.label,
                        "kind": info.kind, "reference": info.reference, "training": _training(agg, method),
                        "metric": d.key, "iqm": _num(st.iqm), "ci_low": _num(st.ci_low), "ci_high": _num(st.ci_high),
                        "n": st.n, "rank": "" if rank is None else f"{rank:g}"})

    for i, m in enumerate(agg.ranking, 1):
        rows("overall", "", m, agg.overall[m], float(i))
    for m, info in agg.methods.items():
        if info.reference:
            rows("overall", "", m, agg.overall[m], None)
    for s in agg.scenarios:
        for m, stats in agg.per_scenario[s].items():
            rows("scenario", s, m, stats, agg.ranks[s].get(m))
    return buf.getvalue()


def marl_eval_json(records: Sequence[RunRecord]) -> dict[str, Any]:
    """Per-roll-out values in marl-eval's raw-data layout (see the module docstring)."""
    data: dict[str, Any] = {}
    for r in sorted(records, key=lambda r: (r.scenario, r.method, r.seed)):
        env = ENV_PREFIX + str(r.metrics.get("experiment") or "bench")
        values: dict[str, list[float]] = {}
        rollouts = r.rollouts()
        series = {
            "return": [None if x.get("total_cost") is None else -x["total_cost"] for x in rollouts],
            "cost": [x.get("total_cost") for x in rollouts],
            "cost_ratio": [x.get("cost_ratio") for x in rollouts],
            "grid_use_ratio": [x.get("grid_use_ratio") for x in rollouts],
            "grid_violation_pct": [x.get("grid_violation_pct") for x in rollouts],
            "backlog_slope": [x.get("backlog_slope_kwh_per_step") for x in rollouts],
            "infeasible": [float(bool(x.get("infeasible"))) for x in rollouts],
            "consensus_error": [x.get("consensus_error_final") for x in rollouts],
        }
        for k, vals in series.items():
            finite = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
            if finite:
                values[k] = finite
        train = r.metrics.get("train") or {}
        step_count = int(train.get("env_steps") or 0)
        run = {"step_0": {"step_count": step_count, **values}, "absolute_metrics": dict(values)}
        data.setdefault(env, {}).setdefault(r.scenario, {}).setdefault(r.method, {})[f"seed_{r.seed}"] = run
    return data


def write_leaderboard(results_dir: str | Path, out_dir: str | Path | None = None, *, suite: str | None = None,
                      reps: int | None = None) -> dict[str, Path]:
    """Aggregate ``results_dir`` and write the four leaderboard files; returns their paths."""
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "leaderboard"
    records, failures = load_runs(results_dir)
    if not records:
        raise FileNotFoundError(f"no finished runs (runs/**/metrics.json) under {results_dir}")
    kwargs = {} if reps is None else {"reps": reps}
    agg = aggregate(records, failures, **kwargs)
    if suite is None:
        suite = _suite_name(results_dir)
    md = markdown(agg, suite)
    paths = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv", "json": out / "leaderboard.json",
             "summary": out / "summary.json"}
    atomic_write_text(paths["markdown"], md)
    atomic_write_text(paths["csv"], csv_text(agg))
    atomic_write_text(paths["json"], dump_json(marl_eval_json(records)))
    atomic_write_text(paths["summary"], dump_json(agg.to_dict() | {"suite": suite}))
    return paths


def update_readme(readme: str | Path, block: str) -> bool:
    """Replace the text between the leaderboard markers of a README; False (unchanged) without markers."""
    path = Path(readme)
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    new = text[:start + len(README_START)] + "\n" + block.rstrip() + "\n" + text[end:]
    if new != text:
        atomic_write_text(path, new)
    return True


def _suite_name(results_dir: Path) -> str:
    p = results_dir / "suite.json"
    if p.is_file():
        try:
            return str(json.loads(p.read_text()).get("suite", ""))
        except (OSError, json.JSONDecodeError):
            pass
    return ""


def _num(v: float) -> str:
    return "" if v is None or not math.isfinite(v) else repr(float(v))
