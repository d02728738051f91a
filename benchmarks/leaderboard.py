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

from benchmarks.aggregate import (EV_METRIC_KEYS, EV_METRICS, METRICS, Aggregate, RunRecord, Stat, aggregate, load_runs,
                                  load_scenario_facts)
from cmarl_env.records import atomic_write_text, dump_json

ENV_PREFIX = "cmarl_"
README_START = "<!-- cmarl-leaderboard:start -->"
README_END = "<!-- cmarl-leaderboard:end -->"
OVERALL_METRICS = ("infeasible_fraction", "cost_ratio", "grid_use_ratio", "backlog_slope_per_agent")
EV_OVERALL_METRICS = ("infeasible_fraction", "cost_ratio", "overload_ratio", "unmet_fraction")
CSV_FIELDS = ("scope", "scenario", "method", "label", "kind", "reference", "training", "metric", "iqm", "ci_low",
              "ci_high", "n", "rank")


def fmt_stat(st: Stat | None, scale: float = 1.0, digits: int = 3, ci: bool = True) -> str:
    if st is None or st.n == 0 or not math.isfinite(st.iqm):
        return "—"
    v = f"{st.iqm * scale:.{digits}f}"
    if not ci or st.n < 2 or not (math.isfinite(st.ci_low) and math.isfinite(st.ci_high)):
        return v
    return f"{v} [{st.ci_low * scale:.{digits}f}, {st.ci_high * scale:.{digits}f}]"


def shared_detail(details: Sequence[str]) -> str:
    """One training description for several runs: the ``"; "``-separated parts they all share, then each part
    that differs as its values over the runs joined by " / " (e.g. the multipliers MAPPO-L learned per seed), so a
    table never shows one run's learned values for another's."""
    split = [d.split("; ") for d in details if d]
    if not split:
        return ""
    if all(parts == split[0] for parts in split):
        return "; ".join(split[0])
    if len({len(parts) for parts in split}) != 1:
        return "; ".join(p for p in split[0] if all(p in parts for parts in split))
    return "; ".join(col[0] if len(set(col)) == 1 else " / ".join(dict.fromkeys(col)) for col in zip(*split))


def _training(agg: Aggregate, method: str, scenario: str | None = None) -> str:
    """The Training column: over one scenario's runs of the method, or (``scenario=None``) over all of them."""
    info = agg.methods[method]
    runs = (agg.training_details.get(scenario, {}).get(method, []) if scenario is not None
            else [d for ms in agg.training_details.values() for d in ms.get(method, [])])
    text = shared_detail(runs) or info.budget_detail or info.budget or ""
    if text in ("none", ""):
        text = "no training"
    if info.note:
        text = f"{text}; {info.note}"
    return text


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def is_ev(records: Sequence[RunRecord]) -> bool:
    """Every run is an EV-charging run (its leaderboard shows the EV columns)."""
    return bool(records) and all(r.metrics.get("domain") == "ev_charging" for r in records)


def markdown(agg: Aggregate, suite: str = "", *, scenarios: Sequence[str] | None = None,
             ev: bool | None = None) -> str:
    """The leaderboard as Markdown: overall ranking, then one table per scenario (``ev``: the EV columns; None:
    when every scenario's recorded facts are EV charging's)."""
    from cmarl_env.evaluation import BACKLOG_SLOPE_LIMIT, GRID_TOLERANCE

    if ev is None:
        ev = bool(agg.scenarios) and all(agg.scenario_facts.get(s, {}).get("domain") == "ev_charging"
                                         for s in agg.scenarios)
    METRICS_ = EV_METRICS if ev else METRICS
    OVERALL_ = EV_OVERALL_METRICS if ev else OVERALL_METRICS
    metric_defs = {m.key: m for m in METRICS_}
    out = io.StringIO()
    title = f"Leaderboard: suite `{suite}`" if suite else "Leaderboard"
    out.write(f"### {title}\n\n")
    n_runs = sum(len(v) for ms in agg.seeds.values() for v in ms.values())
    if suite:
        out.write(f"Generated by `cmarl bench {suite}` from {n_runs} runs.\n\n")
    if ev:
        from cmarl_env.domains.ev_charging.evaluation import UNMET_TOLERANCE

        out.write("Each cell: interquartile mean over runs [95 % stratified-bootstrap interval] (rliable). A run = "
                  "roll-outs of the scenario's week from the same days with the same cars for every method (days and "
                  "cars come from the scenario's seed); methods whose results do not depend on the seed run once. "
                  f"Infeasible = average hourly overload > {GRID_TOLERANCE:g} x the average cap or unmet energy > "
                  f"{UNMET_TOLERANCE:g} x the energy the departed cars requested "
                  "(`cmarl_env/domains/ev_charging/evaluation.py`). Cost = energy cost at the day-ahead price + unmet "
                  "and pending energy at the week's highest price. Cost / LP = cost over the clairvoyant LP under the "
                  "hourly cap on the same cars (a lower bound for controllers that keep every hour under the cap; "
                  "a controller that overloads some hours can fall below it).\n\n")
    else:
        out.write("Each cell: interquartile mean over runs [95 % stratified-bootstrap interval] (rliable). A run = "
              "roll-outs of the scenario's horizon from the same start hours for every method (the hours come from "
              "the scenario's seed, not the training seed); methods whose results do not depend on the seed run once. "
              f"Infeasible = average grid use > {1 + GRID_TOLERANCE:g} x limit or backlog slope > "
              f"{BACKLOG_SLOPE_LIMIT * 1000:g} Wh/step per agent (`cmarl_env.evaluation.feasibility`). Cost = energy "
              "bought + the backlog left at the end at the horizon's highest price. Cost / LP = cost over the "
              "unbounded clairvoyant LP on the same hours (a lower bound). Lower is better everywhere except "
              "Grid / limit.\n\n")
    if agg.failures:
        out.write(f"**{len(agg.failures)} failed run(s)** (see their error.json): "
                  + ", ".join(f"`{f.run_id}`" for f in agg.failures[:10])
                  + (" ..." if len(agg.failures) > 10 else "") + "\n\n")
    out.write("#### Overall ranking\n\n")
    if agg.ranking:
        out.write("Over the scenarios every ranked method ran: " + ", ".join(f"`{s}`" for s in agg.common_scenarios)
                  + ".\n\n")
        pi = bool(agg.improvement)
        cols = (["Rank", "Method", "Training", "Mean rank"] + [metric_defs[k].label for k in OVERALL_]
                + (["P(ours better)"] if pi else []))
        out.write("| " + " | ".join(cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n")
        for i, m in enumerate(agg.ranking, 1):
            row = [str(i), _md_escape(agg.methods[m].label), _md_escape(_training(agg, m)), f"{agg.mean_rank[m]:.2f}"]
            row += [fmt_stat(agg.overall[m].get(k), metric_defs[k].scale, metric_defs[k].digits)
                    for k in OVERALL_]
            if pi:
                row.append(fmt_stat(agg.improvement.get(m), 1.0, 2) if m != agg.ours else "—")
            out.write("| " + " | ".join(row) + " |\n")
        out.write("\nRank: mean over those scenarios of the within-scenario rank (by infeasible fraction, then "
                  "cost / LP); references (clairvoyant LPs) are not ranked. P(ours better): rliable's probability of "
                  "improvement of dual consensus over the method, score -(cost / LP + 1000 x infeasible fraction).\n\n")
    else:
        out.write("No scenario was run by every ranked method: see the per-scenario rankings.\n\n")
    for s in scenarios or agg.scenarios:
        f = agg.scenario_facts.get(s, {})
        seeds = sorted({x for v in agg.seeds[s].values() for x in v})
        c = f.get("constraint")
        level = f"c = {c:.4g}" if isinstance(c, (int, float)) else f"c = {c}"
        if f.get("calibrated"):
            level += f" (calibrated: {f.get('constraint_rule')})"
        desc = (f"{f.get('n_agents')} agents, {f.get('graph')} graph, {level}, "
                f"{f.get('steps')} h from hour {f.get('start_hour')} (+ up to {f.get('start_jitter')} h), "
                f"{f.get('rollouts')} roll-outs, seeds {seeds}")
        if ev:
            desc = (f"{f.get('n_agents')} sites, {f.get('graph')} graph, {level}, {f.get('steps')} h from day "
                    f"{(f.get('days') or ['?'])[0]} (+ up to {f.get('start_jitter')} h), {f.get('rollouts')} roll-outs, "
                    f"seeds {seeds}")
        if ev and f.get("lp_frontier") is not None:
            binding = "**binding**" if f.get("binding") else "**not binding**"
            desc += (f", cap {f['grid_limit']:.1f} kWh/h (peak of uncontrolled charging {f['peak_uncontrolled_kwh']:.1f})"
                     f". LP frontier c = {f['lp_frontier']:.3f}, uncontrolled charging breaks the rule below c = "
                     f"{f['uncontrolled_threshold']:.3f} (roll-out 0's cars): {binding}")
        elif f.get("grid_limit") is not None:
            desc += f", grid limit about {f['grid_limit']:.2f} kWh/h"
        if f.get("lp_frontier") is not None and not ev:
            if f.get("binding"):
                binding = "**binding**"
            elif f["lp_frontier"] > (c if isinstance(c, (int, float)) else math.inf):
                binding = "**not binding: below the LP frontier, no controller can meet it**"
            else:
                binding = "**not binding: the serve-all controller already meets it**"
            desc += (f". LP frontier {f['lp_frontier']:.3f} and serve-all grid use {f['serve_all_grid']:.3f} of the "
                     f"peak on hours {f['hours'][0]}-{f['hours'][1]}: {binding}")
        label = f" ({f['label']})" if f.get("label") else ""
        out.write(f"#### Scenario `{s}`{label}\n\n{desc}.\n\n")
        cols = ["Rank", "Method", "Training"] + [m.label for m in METRICS_] + ["Runs"]
        out.write("| " + " | ".join(cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n")
        methods = sorted(agg.per_scenario[s], key=lambda m: (agg.methods[m].reference,
                                                             agg.ranks[s].get(m, math.inf)))
        for m in methods:
            stats = agg.per_scenario[s][m]
            rank = agg.ranks[s].get(m)
            row = ["ref." if rank is None else f"{rank:g}", _md_escape(agg.methods[m].label),
                   _md_escape(_training(agg, m, s))]
            row += [fmt_stat(stats.get(d.key), d.scale, d.digits) for d in METRICS_]
            row.append(str(len(agg.seeds[s][m])))
            out.write("| " + " | ".join(row) + " |\n")
        out.write("\n")
    if ev:
        out.write("Units: Cost in EUR per roll-out (one week); Peak / cap is the largest hourly load over its cap (the "
                  "cap is met on average, the paper's sense, not in every hour); Consensus err is the weighted norm "
                  "of lambda minus its consensus value at the end (dual methods only); Train s is the shipped EV "
                  "policies' recorded training time (dual methods); Exec ms/step is the execution wall time per hour.\n")
        return out.getvalue()
    out.write("Units: Cost in the dataset's price units per roll-out; Backlog slope in Wh per step per agent over the "
              "last third of a roll-out; Max backlog is the largest backlog any agent carried (compare with the "
              "capped LPs); Consensus err is the weighted norm of lambda minus its consensus value at the end and "
              "lambda at cap the fraction of agents whose lambda ends at its cap (dual methods only); Train s is the "
              "training wall time (the shipped policies' recorded time for the dual methods); Exec ms/step is the "
              "execution wall time per environment step.\n")
    return out.getvalue()


def csv_text(agg: Aggregate, *, ev: bool = False) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()

    def rows(scope: str, scenario: str, method: str, stats: dict[str, Stat], rank: float | None):
        info = agg.methods[method]
        for d in (EV_METRICS if ev else METRICS):
            st = stats.get(d.key)
            if st is None:
                continue
            w.writerow({"scope": scope, "scenario": scenario, "method": method, "label": info.label,
                        "kind": info.kind, "reference": info.reference,
                        "training": _training(agg, method, None if scope == "overall" else scenario),
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
    ev = is_ev(records)
    if ev:
        kwargs["metrics"] = EV_METRIC_KEYS
    agg = aggregate(records, failures, scenario_facts=load_scenario_facts(results_dir), **kwargs)
    if suite is None:
        suite = _suite_name(results_dir)
    md = markdown(agg, suite, ev=ev)
    paths = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv", "json": out / "leaderboard.json",
             "summary": out / "summary.json"}
    atomic_write_text(paths["markdown"], md)
    atomic_write_text(paths["csv"], csv_text(agg, ev=ev))
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
