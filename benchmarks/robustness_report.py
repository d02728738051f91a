"""The tables of the README's "Algorithm 1 under faulty communication" from a `cmarl bench robustness` folder.

    python -m benchmarks.robustness_report results/bench/robustness

prints (1) both scenarios side by side, (2) the metrics per scenario, model and fault level
(``benchmarks.figures.robustness_table``) and (3) the
consensus error of roll-out 0 of each faulty run against the theory (``facts.json``, ``communication.theory``:
``algorithms.comm_theory.fault_theory``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

from benchmarks.aggregate import RunRecord, load_runs
from benchmarks.figures import robustness_markdown, robustness_table


def theory_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per faulty robustness run with a theory record: measured error and the bounds."""
    rows = []
    by_id = {r.run_id: r for r in records}
    for row in robustness_table(records):
        if row["field"] is None:
            continue
        rec = next((r for r in by_id.values() if r.scenario == row["scenario"] and _matches(r, row)), None)
        if rec is None:
            continue
        facts_path = rec.path / "facts.json"
        if not facts_path.is_file():
            continue
        comm = json.loads(facts_path.read_text()).get("communication", {})
        th = comm.get("theory")
        if th is None:
            continue
        rows.append({**{k: row[k] for k in ("n_agents", "model", "level", "field")}, "theory": th,
                     "joint_window_hours": comm.get("joint_window_hours")})
    return rows


def _matches(rec: RunRecord, row: dict[str, Any]) -> bool:
    params = dict(rec.spec.get("method", {}).get("params", {}) or {})
    if row["field"] not in params or float(params[row["field"]]) != row["level"]:
        return False
    from benchmarks.figures import _robustness_model

    return _robustness_model(row["field"], params)[0] == row["model"]


def compact_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Both scenarios side by side, one line per model and fault level: grid use / limit (bold when feasible),
    the largest backlog of an agent, cost relative to the fault-free run, consensus error."""
    def f(v, fmt):
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)

    sizes = sorted({x["n_agents"] for x in rows})
    head = " | ".join(f"N = {n}: grid / limit, max backlog, cost, error" for n in sizes)
    lines = [f"| model | level | {head} |", "|---|---|" + "---|" * len(sizes)]
    from benchmarks.figures import ROBUSTNESS_FAULT_FREE

    keys = list(dict.fromkeys((x["model"], x["level"], x["field"]) for x in rows))
    # the fault-free level is the same run for every model: one line, first
    free = [k for k in keys if k[2] is not None and k[1] == ROBUSTNESS_FAULT_FREE[k[2]]]
    keys = free[:1] + [k for k in keys if k not in free and k[2] is not None] + [k for k in keys if k[2] is None]
    for model, level, field in keys:
        cells = []
        for n in sizes:
            x = next((y for y in rows if y["n_agents"] == n and y["model"] == model and y["level"] == level), None)
            if x is None:
                cells.append("-")
                continue
            use = f(x["grid_use_ratio"], ".3f")
            use = f"**{use}**" if x["infeasible"] == 0 else f"{use} ({100 * x['infeasible']:.0f} % inf.)"
            cells.append(f"{use}, {f(x['max_agent_backlog_kwh'], '.0f')}, {f(x['cost_vs_fault_free'], '.3f')}, "
                         f"{f(x['consensus_error'], '.3f')}")
        lv = "-" if field is None else (("exact" if field == "quantize_bits" else "never")
                                        if field in ("quantize_bits", "graph_redraw") and level == 0 else f"{level:g}")
        if free and (model, level, field) == free[0]:
            model, lv = "none (fault-free)", "-"
        lines.append(f"| {model} | {lv} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def theory_markdown(rows: Sequence[dict[str, Any]]) -> str:
    def f(v, fmt=".3f"):
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)

    lines = ["| N | model | level | error: mean / RMS / max | Thm 5.1, nominal graph | model bound | kind | holds | "
             "joint window [h] | joint bound (log10) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        th, m = x["theory"], x["theory"]["measured"]
        lines.append(f"| {x['n_agents']} | {x['model']} | {x['level']:g} | {f(m['mean_2nd_half'])} / "
                     f"{f(m['rms_2nd_half'])} / {f(m['max'])} | {f(th['theorem_5_1_nominal'], '.2f')} | "
                     f"{f(th['model_bound'], '.2f')} | {th['model_bound_kind']} | "
                     f"{'-' if th['model_bound_holds'] is None else ('yes' if th['model_bound_holds'] else 'NO')} | "
                     f"{x['joint_window_hours'] if x['field'] in ('edge_up', 'graph_redraw') else '-'} | "
                     f"{f(th.get('joint_bound_log10'), '.0f')} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness_report", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a `cmarl bench robustness` results folder")
    args = parser.parse_args(argv)
    records, _ = load_runs(args.results)
    rows = robustness_table(records)
    print(compact_markdown(rows))
    print()
    print(robustness_markdown(rows))
    print()
    print(theory_markdown(theory_rows(records)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
