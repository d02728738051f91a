"""The paper's Figures 2, 3, 4, A.1, A.2 and A.3, regenerated from a results folder (PNG and PDF).

Sources (all read from files; nothing is re-run):

* Figures 2, 3, 4 and A.3: benchmark runs (``benchmarks.runner`` folders,
  ``runs/<scenario>/<method>/seed_<s>/trajectories.npz``, roll-out 0). The
  main scenario is the 7-agent two-clusters one with the constraint closest to
  0.27; the first seed is drawn. Figure 2b draws the consensus runs of every
  constraint level of that topology.
* Figure A.1: a fixed-multiplier grid search (``baselines/grid_search.py``):
  JSON files, one per (lambda, nu) trial, with the trial's mean grid
  consumption and backlog slope, found under ``RESULTS/grid_search/`` or a
  folder given with ``grid_search=``.
* Figure A.2: consensus runs of several agent counts (the ``scaling`` suite)
  in the same results folder or one given with ``scaling=``, or the
  ``scaling.json`` written by ``python -m benchmarks.scaling``.
* Figure A.3: MARL baseline runs (MAPPO, MADDPG, MASAC, ISAC) next to the
  consensus method in the main scenario.

A figure whose data is missing is skipped with the reason (``make_figures``
returns it), never drawn empty.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from algorithms.dual import NU_RANGE
from benchmarks import registry
from benchmarks.aggregate import RunRecord, interval_estimate, load_runs, score_matrix

FIGURES = ("figure_2", "figure_3", "figure_4", "figure_A1", "figure_A2", "figure_A3", "figure_topology",
           "figure_robustness", "figure_dual_steps")
FORMATS = ("png", "pdf")
DEMAND_COLOUR = "0.35"


def colour(kind: str) -> str:
    """A method's plot colour, from its registration (``benchmarks.registry``)."""
    if kind == "demand":
        return DEMAND_COLOUR
    return registry.get(kind).colour


def is_learned_baseline(kind: str) -> bool:
    """Methods trained during the run (the MARL baselines), from their registration."""
    return registry.get(kind).trains
PAPER_CONSTRAINT = 0.27


class MissingData(LookupError):
    """The results do not hold what a figure needs."""


@dataclass
class FigureResult:
    name: str
    paths: list[Path]
    skipped: str | None = None


# --------------------------------------------------------------------------- selection
def _params(r: RunRecord) -> dict[str, Any]:
    return dict(r.spec.get("method", {}).get("params", {}) or {})


def _scenario(r: RunRecord) -> dict[str, Any]:
    return dict(r.spec.get("scenario", {}) or {})


def is_consensus(r: RunRecord) -> bool:
    p = _params(r)
    return r.kind == "consensus" and p.get("rounds", 1) != 0


def is_no_consensus(r: RunRecord) -> bool:
    return r.kind == "no_consensus" or (r.kind == "consensus" and _params(r).get("rounds") == 0)


def _plainness(r: RunRecord) -> tuple[int, int, str]:
    """Prefer the default method (no extra parameters, L = 1) named plainly."""
    p = {k: v for k, v in _params(r).items() if k != "policies"}
    extra = sum(1 for k, v in p.items() if not (k == "rounds" and v in (0, 1)))
    return extra, len(r.method), r.method


def _main_pair(records: Sequence[RunRecord]) -> tuple[RunRecord, RunRecord | None]:
    main = main_scenario(records)
    cons = _pick(records, lambda r: r.scenario == main and is_consensus(r))
    if cons is None:
        raise MissingData(f"the consensus runs of scenario {main!r} have no trajectories.npz")
    return cons, _pick(records, lambda r: r.scenario == main and is_no_consensus(r), cons.seed)


def _pick(records: Iterable[RunRecord], pred: Callable[[RunRecord], bool], seed: int | None = None) -> RunRecord | None:
    cands = [r for r in records if pred(r) and (r.path / "trajectories.npz").is_file()]
    if not cands:
        return None
    best_method = min(cands, key=_plainness).method
    cands = [r for r in cands if r.method == best_method]
    if seed is not None:
        same = [r for r in cands if r.seed == seed]
        if same:
            return same[0]
    return min(cands, key=lambda r: r.seed)


def main_scenario(records: Sequence[RunRecord]) -> str:
    """The two-clusters, 7-agent scenario with the constraint closest to 0.27 that has consensus runs."""
    cands = {}
    for r in records:
        sc = _scenario(r)
        if is_consensus(r):
            cands[r.scenario] = sc
    if not cands:
        raise MissingData("no consensus runs (kind 'consensus', rounds >= 1)")

    def key(name: str):
        sc = cands[name]
        return (sc.get("graph") != "two_clusters", sc.get("n_agents") != 7,
                abs(float(sc.get("constraint", 0.0)) - PAPER_CONSTRAINT), -int(sc.get("steps", 0)), name)

    return min(cands, key=key)


def running_mean(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.cumsum(x) / np.arange(1, len(x) + 1)


def _setup():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo") and not _has_pyplot():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
                         "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110, "savefig.bbox": "tight"})
    return plt


def _has_pyplot() -> bool:
    import sys

    return "matplotlib.pyplot" in sys.modules


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        p = out_dir / f"{name}.{ext}"
        fig.savefig(p, dpi=150 if ext == "png" else None)
        paths.append(p)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _limit_line(ax, limit: float, constraint: Any, color: str = "k") -> None:
    label = f"grid limit (c = {constraint:g} of peak)" if isinstance(constraint, (int, float)) else "grid limit"
    ax.axhline(limit, color=color, ls="--", lw=1.2, label=label)


def _subtitle(r: RunRecord) -> str:
    sc = _scenario(r)
    return (f"{sc.get('n_agents')} agents, {str(sc.get('graph', '')).replace('_', '-')}, c = {sc.get('constraint')}, "
            f"seed {r.seed}")


# --------------------------------------------------------------------------- figures 2-4
def figure_2(records: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    plt = _setup()
    cons, nocons = _main_pair(records)
    t_c = cons.trajectories()
    sc = _scenario(cons)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    steps = np.arange(1, len(t_c["total_grid"]) + 1)
    ax.plot(steps, running_mean(t_c["total_demand"]), color=colour("demand"), lw=1.6, label="Demand")
    ax.plot(steps, running_mean(t_c["total_grid"]), color=colour("consensus"), lw=1.6,
            label="Grid consumption with consensus")
    if nocons is not None:
        t_n = nocons.trajectories()
        ax.plot(np.arange(1, len(t_n["total_grid"]) + 1), running_mean(t_n["total_grid"]), color=colour("no_consensus"),
                lw=1.6, ls="-.", label="Grid consumption without consensus")
    _limit_line(ax, float(np.mean(t_c["grid_limit"])), sc.get("constraint"))
    ax.set(xlabel="Timestep [h]", ylabel="Average total energy [kWh/h] (running mean)",
           title="(a) Avg. total grid consumption")
    ax.legend(loc="best")
    ax = axes[1]
    graph, n = sc.get("graph"), sc.get("n_agents")
    levels = {}
    for r in records:
        s = _scenario(r)
        if is_consensus(r) and s.get("graph") == graph and s.get("n_agents") == n and (r.path / "trajectories.npz").is_file():
            levels.setdefault(float(s.get("constraint")), []).append(r)
    cmap = plt.get_cmap("viridis")
    ordered = sorted(levels)
    for i, c in enumerate(ordered):
        rr = min(levels[c], key=lambda r: (_plainness(r), r.seed))
        t = rr.trajectories()
        ax.plot(np.arange(1, len(t["total_backlog"]) + 1), t["total_backlog"],
                color=cmap(i / max(len(ordered) - 1, 1)), lw=1.4, label=f"Constraint = {c:.2f}")
    ax.axhline(0.0, color="k", ls="--", lw=1.0)
    ax.set(xlabel="Timestep [h]", ylabel="Unmet (postponed) demand [kWh]", title="(b) Unmet demand with consensus")
    ax.legend(loc="best")
    fig.suptitle(f"Figure 2: effect of consensus on grid consumption and unmet demand ({_subtitle(cons)})")
    return _save(fig, out_dir, "figure_2")


def _narrow_nu(r: RunRecord) -> bool:
    """A run whose nu is projected onto a range narrower than the training range."""
    return float(_params(r).get("nu_min", NU_RANGE[0])) > NU_RANGE[0]


def _narrow_nu_pair(records: Sequence[RunRecord], main: str) -> list[RunRecord]:
    pair = [_pick(records, lambda r: r.scenario == main and is_consensus(r) and _narrow_nu(r)),
            _pick(records, lambda r: r.scenario == main and is_no_consensus(r) and _narrow_nu(r))]
    return [r for r in pair if r is not None]


def figure_3(records: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    """Cost and backlog with and without consensus; a third panel when runs with a narrower nu range exist."""
    plt = _setup()
    cons, nocons = _main_pair(records)
    narrow = _narrow_nu_pair(records, cons.scenario)
    fig, axes = plt.subplots(1, 3 if narrow else 2, figsize=(18 if narrow else 12, 4.2))
    series = [(cons, "With consensus", colour("consensus"), "-")]
    if nocons is not None:
        series.append((nocons, "Without consensus", colour("no_consensus"), "-."))
    for r, label, color, ls in series:
        t = r.trajectories()
        x = np.arange(1, len(t["cost"]) + 1)
        axes[0].plot(x, np.cumsum(t["cost"]), color=color, ls=ls, lw=1.6, label=label)
        axes[1].plot(x, t["total_backlog"], color=color, ls=ls, lw=1.6, label=label)
    axes[0].set(xlabel="Timestep [h]", ylabel="Cumulative operating cost [price units]", title="(a) Operating cost")
    axes[1].axhline(0.0, color="k", ls="--", lw=1.0, label="zero unmet demand")
    axes[1].set(xlabel="Timestep [h]", ylabel="Unmet (postponed) demand [kWh]",
                title="(b) Demand satisfaction" + (f" (nu in [{NU_RANGE[0]:g}, {NU_RANGE[1]:g}])" if narrow else ""))
    for r in narrow:
        t = r.trajectories()
        label, color, ls = ("With consensus", colour("consensus"), "-") if is_consensus(r) else \
            ("Without consensus", colour("no_consensus"), "-.")
        axes[2].plot(np.arange(1, len(t["total_backlog"]) + 1), t["total_backlog"], color=color, ls=ls, lw=1.6, label=label)
    if narrow:
        p = _params(narrow[0])
        axes[2].axhline(0.0, color="k", ls="--", lw=1.0, label="zero unmet demand")
        axes[2].set(xlabel="Timestep [h]", ylabel="Unmet (postponed) demand [kWh]",
                    title=f"(c) nu projected onto [{p.get('nu_min'):g}, {p.get('nu_max', NU_RANGE[1]):g}]")
    for ax in axes:
        ax.legend(loc="best")
    fig.suptitle(f"Figure 3: cost and demand-satisfaction trajectories ({_subtitle(cons)})")
    return _save(fig, out_dir, "figure_3")


def figure_4(records: Sequence[RunRecord], out_dir: Path, agents: int = 3) -> list[Path]:
    plt = _setup()
    cons, nocons = _main_pair(records)
    panels = [(cons, "(a) With consensus")] + ([(nocons, "(b) Without consensus")] if nocons is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    scales = _scenario(cons).get("demand_scales")
    for ax, (r, title) in zip(axes[0], panels):
        t = r.trajectories()
        lam = t.get("lambda")
        if lam is None or lam.ndim != 2 or lam.shape[1] == 0:
            raise MissingData(f"run {r.run_id} recorded no per-agent multipliers")
        shown = list(range(min(agents, lam.shape[1])))
        # the paper's point (Figure 4b): the high-demand agents; add any not among the first ones
        extra = [i for i in range(lam.shape[1]) if i not in shown and _agent_tag(i, scales, r)][:2]
        for i in shown + extra:
            ax.plot(np.arange(1, lam.shape[0] + 1), lam[:, i], lw=1.4, ls="--" if i in extra else "-",
                    label=f"Agent {i}{_agent_tag(i, scales, r)}")
        ax.axhline(15.0, color="0.5", ls=":", lw=1.0, label="cap lambda = 15")
        ax.set(xlabel="Timestep [h]", ylabel="Global multiplier lambda_i", title=title)
        ax.legend(loc="best")
    fig.suptitle(f"Figure 4: evolution of the global multipliers of the first {agents} agents ({_subtitle(cons)})")
    return _save(fig, out_dir, "figure_4")


def _agent_tag(i: int, scales: Any, r: RunRecord) -> str:
    if scales is None:
        n = int(_scenario(r).get("n_agents", 0))
        double = {0, math.ceil(n / 2)} if n > 1 else set()
        return " (double demand)" if i in double else ""
    if isinstance(scales, list) and i < len(scales) and scales[i] != 1:
        return f" (demand x{scales[i]:g})"
    return ""


# --------------------------------------------------------------------------- A.1 grid search
_LAM_KEYS = ("lambda", "lambda_", "lam", "fixed_lambda")
_NU_KEYS = ("nu", "fixed_nu")
_GRID_KEYS = ("mean_grid", "mean_grid_consumption", "avg_grid_consumption", "avg_grid", "grid_consumption",
              "mean_total_grid")
_SLOPE_KEYS = ("backlog_slope", "backlog_slope_kwh_per_step", "abs_backlog_slope", "postponed_slope",
               "backlog_derivative")
_LIMIT_KEYS = ("grid_limit", "grid_limit_kwh")


def _flat(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        return {}
    out = dict(d)
    for sub in ("config", "params", "trial", "metrics", "result", "results", "summary", "evaluation"):
        if isinstance(d.get(sub), dict):
            for k, v in _flat(d[sub]).items():
                out.setdefault(k, v)
    return out


def _first(d: dict[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def load_grid_search(folders: Sequence[Path]) -> list[dict[str, float]]:
    """(lambda, nu, grid, slope, limit, diverged, feasible) of every trial JSON under the folders.

    ``feasible`` is the verdict of the one feasibility rule: the trial's stored
    ``feasible`` (``baselines.grid_search`` records ``Rollout.verdict``), else
    ``cmarl_env.evaluation.judge`` on its grid use, limit, total backlog slope
    and number of agents; None when the trial does not hold enough to judge.
    """
    from cmarl_env.evaluation import judge

    trials = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in sorted(folder.rglob("*.json")):
            try:
                d = _flat(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            lam, nu = _first(d, _LAM_KEYS), _first(d, _NU_KEYS)
            grid, slope = _first(d, _GRID_KEYS), _first(d, _SLOPE_KEYS)
            if not all(isinstance(v, (int, float)) for v in (lam, nu)) or (grid is None and slope is None):
                continue
            diverged = bool(d.get("diverged", False))
            limit, n_agents = _num(_first(d, _LIMIT_KEYS)), d.get("n_agents")
            feasible = d.get("feasible")
            if not isinstance(feasible, bool):
                feasible = None
                if (not diverged and all(v is not None and np.isfinite(v) for v in (_num(grid), _num(slope), limit))
                        and limit > 0 and isinstance(n_agents, int) and n_agents >= 1):
                    feasible = judge(_num(grid), limit, _num(slope), n_agents).feasible
            trials[(float(lam), float(nu))] = {
                "lambda": float(lam), "nu": float(nu),
                "grid": _num(grid), "slope": _num(slope), "limit": limit, "diverged": diverged,
                "feasible": None if feasible is None else bool(feasible and not diverged),
                "method": str(d.get("method", "ippo"))}
    return list(trials.values())


def figure_A1(trials: Sequence[dict[str, float]], out_dir: Path) -> list[Path]:
    if not trials:
        raise MissingData("no grid-search trials (JSON files with lambda, nu, mean grid consumption, backlog slope)")
    plt = _setup()
    lams = sorted({t["lambda"] for t in trials})
    nus = sorted({t["nu"] for t in trials})
    grid = np.full((len(nus), len(lams)), np.nan)
    slope = np.full_like(grid, np.nan)
    for t in trials:
        i, j = nus.index(t["nu"]), lams.index(t["lambda"])
        if t["diverged"]:
            continue
        grid[i, j] = t["grid"]
        slope[i, j] = abs(t["slope"]) if t["slope"] is not None and np.isfinite(t["slope"]) else np.nan
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.8))
    for ax, data, title, cbar in ((axes[0], grid, "(a) Mean grid consumption", "kWh/h"),
                                  (axes[1], slope, "(b) |rate of change of postponed demand|", "kWh/h per h")):
        masked = np.ma.masked_invalid(data)
        im = ax.pcolormesh(_edges(lams), _edges(nus), masked, cmap="viridis", shading="flat")
        fig.colorbar(im, ax=ax, label=cbar)
        ax.set(xlabel="lambda (fixed global penalty)", ylabel="nu (fixed local penalty)", title=title)
        ax.grid(False)
    # markers: the verdict of the one feasibility rule (cmarl_env.evaluation.judge), as in table1.md
    ok = [(t["lambda"], t["nu"]) for t in trials if t.get("feasible")]
    for ax in axes:
        if ok:
            ax.scatter(*zip(*ok), marker="o", facecolors="none", edgecolors="red", linewidths=1.5, s=45,
                       label="feasible (cmarl_env.evaluation.judge)")
            ax.legend(loc="upper right", fontsize=8)
    methods = sorted({t.get("method", "ippo") for t in trials})
    what = {"ippo": "IPPO", "augmented": "state-augmented policy"}
    label = " + ".join(what.get(m, m) for m in methods)
    fig.suptitle(f"Figure A.1: fixed-multiplier grid, {label} ({len(trials)} trials; blank cells: diverged or missing)")
    return _save(fig, out_dir, "figure_A1")


def _edges(values: Sequence[float]) -> np.ndarray:
    """Cell edges around sorted, possibly unevenly spaced grid values (midpoints, half a step outside)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2.0
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


# --------------------------------------------------------------------------- A.2 scaling
def scaling_from_runs(records: Sequence[RunRecord]) -> dict[str, Any] | None:
    """Per agent count: seconds per step, steps and the lambda_mean trajectory, from consensus runs.

    Uses the graph family with the most agent counts (the scaling suite), not a mix of topologies.
    """
    groups: dict[tuple, dict[int, list[RunRecord]]] = {}
    for r in records:
        if is_consensus(r) and r.metrics.get("exec_seconds_per_step"):
            sc = _scenario(r)
            level = f"calibrated ({sc['calibrate']:g})" if sc.get("calibrate") is not None else sc.get("constraint")
            key = (sc.get("graph"), level)
            groups.setdefault(key, {}).setdefault(int(r.metrics.get("n_agents", 0)), []).append(r)
    if not groups:
        return None
    key, by_n = max(groups.items(), key=lambda kv: len(kv[1]))
    points = []
    for n in sorted(by_n):
        runs = by_n[n]
        best = min(runs, key=lambda r: (_plainness(r), r.seed))
        lam = best.trajectories().get("lambda_mean")
        points.append({"n": n, "seconds_per_step": float(np.median([r.metrics["exec_seconds_per_step"] for r in runs])),
                       "steps": int(best.metrics.get("steps", 0)), "lambda_mean": lam})
    return {"graph": key[0], "constraint": key[1], "points": points}


def scaling_from_json(path: Path) -> dict[str, Any] | None:
    """The summary written by ``python -m benchmarks.scaling`` (``results/scaling/scaling.json``)."""
    if path.is_dir():
        path = path / "scaling.json"
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    lam = d.get("lambda_mean", {}) or {}
    points = [{"n": int(n), "seconds_per_step": float(s), "steps": int(d.get("steps", 0)),
               "lambda_mean": np.asarray(lam[str(n)]) if str(n) in lam else None}
              for n, s in zip(d.get("agents", []), d.get("seconds_per_step", []))]
    return {"graph": d.get("graph"), "constraint": d.get("constraint"), "points": points}


def figure_A2(data: dict[str, Any] | None, out_dir: Path, curves: Sequence[int] = (10, 100, 500, 1000)) -> list[Path]:
    if not data or len(data["points"]) < 2:
        raise MissingData("consensus runs with at least two agent counts (the 'scaling' suite or "
                          "`python -m benchmarks.scaling` output)")
    plt = _setup()
    pts = sorted(data["points"], key=lambda p: p["n"])
    ns = np.array([p["n"] for p in pts], dtype=float)
    per_step = np.array([p["seconds_per_step"] for p in pts])
    wall = per_step * np.array([p["steps"] for p in pts])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    ax = axes[0]
    ax.loglog(ns, per_step * 1000.0, "o-", color=colour("consensus"), label="execution time per step")
    ax.loglog(ns, per_step[-1] * 1000.0 * ns / ns[-1], "--", color="0.5", label="linear in N (reference)")
    for n, ms, w in zip(ns, per_step * 1000.0, wall):
        if w > 0:
            ax.annotate(f"{w:.3g} s", (n, ms), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="Number of agents N", ylabel="Wall-clock time per step [ms]",
           title="(a) Execution time vs agent count (labels: whole run)")
    ax.legend(loc="upper left")
    ax = axes[1]
    with_lam = {p["n"]: p["lambda_mean"] for p in pts if p["lambda_mean"] is not None and len(p["lambda_mean"])}
    chosen = [n for n in curves if n in with_lam] or sorted(with_lam)[:4]
    cmap = plt.get_cmap("plasma")
    for i, n in enumerate(chosen):
        lam = np.asarray(with_lam[n], dtype=float)
        ax.plot(np.arange(1, len(lam) + 1), running_mean(lam), color=cmap(i / max(len(chosen), 1)), lw=1.5,
                label=f"{n:,} agents")
    ax.set(xlabel="Timestep [h]", ylabel="Running mean of mean lambda", title="(b) Mean lambda across agents")
    if chosen:
        ax.legend(loc="best")
    where = ", ".join(x for x in (f"{data['graph']} graph" if data.get("graph") else "",
                                  f"c = {data['constraint']}" if data.get("constraint") is not None else "") if x)
    fig.suptitle("Figure A.2: scalability of the execution phase (dual consensus" + (f", {where})" if where else ")"))
    return _save(fig, out_dir, "figure_A2")


# --------------------------------------------------------------------------- A.3 baselines
def figure_A3(records: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    base = [r for r in records if is_learned_baseline(r.kind)]
    if not base:
        raise MissingData("no runs of a baseline trained in the suite (registry: trains=True)")
    plt = _setup()
    scen_counts: dict[str, int] = {}
    for r in base:
        scen_counts[r.scenario] = scen_counts.get(r.scenario, 0) + 1
    try:
        main = main_scenario(records)
        scenario = main if main in scen_counts else max(scen_counts, key=scen_counts.get)
    except MissingData:
        scenario = max(scen_counts, key=scen_counts.get)
    in_sc = [r for r in records if r.scenario == scenario]
    methods: list[tuple[str, str, str]] = []
    cons = _pick(in_sc, is_consensus)
    if cons is not None:
        methods.append((cons.method, "Dual consensus (ours)", colour("consensus")))
    for m in sorted({r.method for r in in_sc if is_learned_baseline(r.kind)}):
        kind = next(r.kind for r in in_sc if r.method == m)
        label = next(r.metrics.get("label") or m for r in in_sc if r.method == m)
        budget = next(r.metrics.get("budget_detail", "") for r in in_sc if r.method == m)
        methods.append((m, f"{label} ({budget})" if "short" in budget else label, colour(kind)))
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.5), gridspec_kw={"width_ratios": [1.5, 1]})
    ax = axes[0]
    limit = None
    for m, label, color in methods:
        r = _pick(in_sc, lambda x, m=m: x.method == m)
        if r is None:
            continue
        t = r.trajectories()
        ax.plot(np.arange(1, len(t["total_grid"]) + 1), running_mean(t["total_grid"]), lw=1.5, color=color, label=label)
        limit = float(np.mean(t["grid_limit"]))
    if limit is not None:
        ax.axhline(limit, color="0.5", ls="--", lw=1.3, label="grid limit")
    ax.set(xlabel="Timestep [h]", ylabel="Average total grid consumption [kWh/h]",
           title="(a) Grid consumption (running mean, roll-out 0)")
    ax.legend(loc="best", fontsize=8)
    ax = axes[1]
    names, vals, los, his, infs, colors = [], [], [], [], [], []
    for m, label, color in methods:
        runs = [r for r in in_sc if r.method == m]
        costs = [r.metrics.get("total_cost") for r in runs if r.metrics.get("total_cost") is not None]
        if not costs:
            continue
        st = interval_estimate(score_matrix([costs]))
        names.append(label.split(" (")[0])
        colors.append(color)
        vals.append(st.iqm)
        los.append(vals[-1] - st.ci_low)
        his.append(st.ci_high - vals[-1])
        infs.append(np.mean([r.metrics.get("infeasible_fraction") or 0.0 for r in runs]))
    x = np.arange(len(names))
    ax.bar(x, vals, yerr=[los, his], capsize=4, color=colors)
    for xi, v, f in zip(x, vals, infs):
        ax.annotate(f"{100 * f:.0f}% infeas.", (xi, v), textcoords="offset points", xytext=(0, 6), ha="center",
                    fontsize=8)
    ax.set_xticks(x, names, rotation=20)
    ax.set(ylabel="Operating cost per roll-out (IQM, 95% CI)", title="(b) Mean total cost over seeds")
    ax.grid(axis="x", visible=False)
    fig.suptitle(f"Figure A.3: MARL baselines with fixed penalties vs dual consensus (scenario {scenario})")
    return _save(fig, out_dir, "figure_A3")


# --------------------------------------------------------------------------- driver
TOPOLOGY_EXPERIMENT = "topology"


def topology_table(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per run of the ablations' topology experiment: graph, N, rounds, weights and the plotted metrics."""
    rows = []
    for r in records:
        if r.metrics.get("experiment") != TOPOLOGY_EXPERIMENT or not r.kind.startswith("consensus"):
            continue
        p = _params(r)
        sc = _scenario(r)
        rows.append({"scenario": r.scenario, "graph": sc.get("graph"), "n_agents": sc.get("n_agents"),
                     "rounds": int(p.get("rounds", 1)), "weights": p.get("weights", "random_walk"),
                     "consensus_error": r.metrics.get("consensus_error_final"),
                     "grid_use_ratio": r.metrics.get("grid_use_ratio"), "cost_ratio": r.metrics.get("cost_ratio"),
                     "total_cost": r.metrics.get("total_cost"), "infeasible": r.metrics.get("infeasible_fraction")})
    return sorted(rows, key=lambda x: (x["n_agents"] or 0, str(x["graph"]), x["weights"], x["rounds"]))


def figure_topology(records: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    """Graph family x consensus rounds x weights: final consensus error and grid use over the limit."""
    rows = topology_table(records)
    if not rows:
        raise MissingData(f"no runs of the '{TOPOLOGY_EXPERIMENT}' experiment (cmarl bench ablations)")
    plt = _setup()
    scenarios = list(dict.fromkeys(x["scenario"] for x in rows))
    variants = list(dict.fromkeys((x["weights"], x["rounds"]) for x in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / max(len(variants), 1)
    cmap = plt.get_cmap("tab10")
    for j, (weights, rounds) in enumerate(variants):
        xs, err, use = [], [], []
        for i, sc in enumerate(scenarios):
            row = next((x for x in rows if x["scenario"] == sc and (x["weights"], x["rounds"]) == (weights, rounds)),
                       None)
            if row is None:
                continue
            xs.append(i + (j - (len(variants) - 1) / 2) * width)
            err.append(row["consensus_error"] if row["consensus_error"] is not None else np.nan)
            use.append(row["grid_use_ratio"] if row["grid_use_ratio"] is not None else np.nan)
        label = f"{weights.replace('_', ' ')}, L = {rounds}"
        axes[0].bar(xs, err, width=width, color=cmap(j), label=label)
        axes[1].bar(xs, use, width=width, color=cmap(j), label=label)
    names = [f"{str(next(x['graph'] for x in rows if x['scenario'] == sc)).replace('_', chr(10))}\nN = "
             f"{next(x['n_agents'] for x in rows if x['scenario'] == sc)}" for sc in scenarios]
    for ax in axes:
        ax.set_xticks(np.arange(len(scenarios)), names, fontsize=8)
    axes[0].set(ylabel="Final consensus error of lambda", title="(a) Consensus error (log scale)", yscale="log")
    from cmarl_env.evaluation import GRID_TOLERANCE

    axes[1].axhline(1.0 + GRID_TOLERANCE, color="0.4", ls="--", lw=1.2, label="feasible up to")
    finite = [x["grid_use_ratio"] for x in rows if x["grid_use_ratio"] is not None]
    axes[1].set(ylabel="Average grid use / limit", title="(b) Grid use over the limit",
                ylim=(min(finite + [1.0]) - 0.02, max(finite + [1.0 + GRID_TOLERANCE]) + 0.02))
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Topology ablation: graph family x consensus rounds x weights (dual consensus)")
    return _save(fig, out_dir, "figure_topology")


def dual_steps_table(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per (alpha, eta) pair of the consensus runs that set both step sizes (suites ``dual_steps`` and
    ``dual_steps_held_out``): infeasible and total roll-outs over the scenarios, mean cost / LP where there is one."""
    pairs: dict[tuple[float, float], dict[str, Any]] = {}
    for r in records:
        p = _params(r)
        if not is_consensus(r) or "alpha" not in p or "eta" not in p:
            continue
        row = pairs.setdefault((float(p["alpha"]), float(p["eta"])), {"alpha": float(p["alpha"]),
                                                                      "eta": float(p["eta"]), "infeasible": 0,
                                                                      "rollouts": 0, "cost_ratios": []})
        row["infeasible"] += int(r.metrics.get("n_infeasible", 0))
        row["rollouts"] += int(r.metrics.get("n_rollouts", 0))
        if r.metrics.get("cost_ratio") is not None:
            row["cost_ratios"].append(float(r.metrics["cost_ratio"]))
    rows = []
    for row in pairs.values():
        ratios = row.pop("cost_ratios")
        row["cost_ratio"] = float(np.mean(ratios)) if ratios else None
        rows.append(row)
    return sorted(rows, key=lambda x: (x["alpha"], x["eta"]))


def figure_dual_steps(records: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    """alpha x eta heat-maps: infeasible roll-outs and mean cost / LP, the default pair outlined."""
    rows = dual_steps_table(records)
    if not rows:
        raise MissingData("no consensus runs that set both alpha and eta (cmarl bench dual_steps)")
    from algorithms.dual import DualConfig

    plt = _setup()
    alphas = sorted({x["alpha"] for x in rows})
    etas = sorted({x["eta"] for x in rows})
    share = np.full((len(etas), len(alphas)), np.nan)
    cost = np.full((len(etas), len(alphas)), np.nan)
    for x in rows:
        i, j = etas.index(x["eta"]), alphas.index(x["alpha"])
        share[i, j] = x["infeasible"] / max(x["rollouts"], 1)
        cost[i, j] = np.nan if x["cost_ratio"] is None else x["cost_ratio"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = ((axes[0], share, "(a) Infeasible roll-outs (share)", "Reds", "{:.2f}"),
              (axes[1], cost, "(b) Mean cost / LP", "viridis", "{:.3f}"))
    default = (DualConfig().alpha, DualConfig().eta)
    for ax, values, title, cmap, fmt in panels:
        im = ax.imshow(values, origin="lower", cmap=cmap, aspect="auto")
        fig.colorbar(im, ax=ax)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                        color="k" if cmap == "Reds" else "w")
        if default[0] in alphas and default[1] in etas:
            ax.add_patch(plt.Rectangle((alphas.index(default[0]) - 0.5, etas.index(default[1]) - 0.5), 1, 1,
                                       fill=False, lw=2.5, ec="tab:blue", label="DualConfig default"))
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_yticks(range(len(etas)), [f"{e:g}" for e in etas])
        ax.set(xlabel="alpha (step on lambda)", ylabel="eta (step on nu)", title=title)
        ax.grid(False)
    fig.suptitle("Algorithm 1's dual step sizes (dual consensus, shipped policies)")
    return _save(fig, out_dir, "figure_dual_steps")


ROBUSTNESS_PREFIX = "robustness"
#: communication field -> (model, title, x label); the order of the figures
ROBUSTNESS_MODELS = {
    "message_loss": ("loss", "Message loss (receiver holds the last value)", "loss probability p"),
    "delay": ("delay", "Delayed messages", "delay d [hours]"),
    "edge_up": ("links", "Time-varying graph (links up at random)", "link up probability q per hour"),
    "graph_redraw": ("redraw", "Graph redrawn from its family", "redraw every k hours (0 = never)"),
    "update_prob": ("async", "Asynchronous updates", "update probability r per hour"),
    "agent_period_max": ("period", "Agents on their own periods", "largest period M [hours]"),
    "quantize_bits": ("quantize", "Quantised messages", "bits b (0 = exact)"),
}


ROBUSTNESS_FAULT_FREE = {"message_loss": 0.0, "delay": 0.0, "edge_up": 1.0, "graph_redraw": 0.0, "update_prob": 1.0,
                         "agent_period_max": 1.0, "quantize_bits": 0.0}


#: variants of a model: (field, parameter, value) -> (model, title)
ROBUSTNESS_VARIANTS = {
    ("message_loss", "loss_mode", "drop"): ("loss_drop", "Message loss (only this round's arrivals count)"),
    ("delay", "delay_random", True): ("delay_random", "Random delays (uniform in 0..d, freshest value kept)"),
    ("update_prob", "async_catch_up", True): ("async_catch_up", "Asynchronous updates, missed steps caught up"),
    ("agent_period_max", "async_catch_up", True): ("period_catch_up", "Agents on their own periods, steps caught up"),
}


def _robustness_model(field: str, params: Mapping[str, Any]) -> tuple[str, str]:
    """(model, title) of a run sweeping ``field`` with these method parameters."""
    for (f, key, value), named in ROBUSTNESS_VARIANTS.items():
        if f == field and params.get(key) == value:
            return named
    return ROBUSTNESS_MODELS[field][0], ROBUSTNESS_MODELS[field][1]


def _severity(field: str, level: float) -> float:
    """Sort key: the fault-free level first, then ever harsher."""
    if field in ("edge_up", "update_prob"):
        return -level
    if field in ("quantize_bits", "graph_redraw"):
        return -math.inf if level == 0 else -level
    return level


def robustness_table(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per run of the robustness experiments (``cmarl bench robustness``): scenario, communication model
    and fault level (the no-consensus runs as model ``"no_consensus"``) and the metrics the figures draw."""
    rows = []
    for r in records:
        if not str(r.metrics.get("experiment", "")).startswith(ROBUSTNESS_PREFIX):
            continue
        p = _params(r)
        if is_no_consensus(r):
            field, level, (model, title) = None, None, ("no_consensus", "No consensus (L = 0)")
        else:
            fields = [f for f in ROBUSTNESS_MODELS if f in p]
            if len(fields) != 1 or not r.kind.startswith("consensus"):
                continue
            field, level = fields[0], float(p[fields[0]])
            model, title = _robustness_model(field, p)
        m = r.metrics
        rows.append({"experiment": m.get("experiment"), "scenario": r.scenario, "n_agents": m.get("n_agents"),
                     "field": field, "model": model, "title": title, "level": level, "grid_use_ratio": m.get("grid_use_ratio"),
                     "grid_violation_pct": m.get("grid_violation_pct"),
                     "backlog_slope_per_agent": m.get("backlog_slope_per_agent"),
                     "max_agent_backlog_kwh": m.get("max_agent_backlog_kwh"), "total_cost": m.get("total_cost"),
                     "cost_ratio": m.get("cost_ratio"), "consensus_error": m.get("consensus_error_mean"),
                     "consensus_bound": m.get("consensus_bound_final"), "fault_bound": m.get("fault_bound"),
                     "infeasible": m.get("infeasible_fraction")})
    models = [v[0] for v in ROBUSTNESS_MODELS.values()] + [v[0] for v in ROBUSTNESS_VARIANTS.values()]
    rows.sort(key=lambda x: (x["n_agents"] or 0, models.index(x["model"]) if x["field"] else 99,
                             _severity(x["field"], x["level"]) if x["field"] else 0))
    # cost relative to the fault-free run of the same scenario (every model's fault-free level is the same run)
    for x in rows:
        base = [y["total_cost"] for y in rows if y["scenario"] == x["scenario"] and y["field"] is not None
                and y["level"] == ROBUSTNESS_FAULT_FREE[y["field"]] and y["total_cost"] is not None]
        x["cost_vs_fault_free"] = (x["total_cost"] / float(np.median(base))
                                   if base and x["total_cost"] is not None else None)
    return rows


def figure_robustness(records: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    """One figure per communication model: grid use over the limit, backlog slope per agent, the largest backlog of
    an agent, cost relative to the fault-free run and consensus error against the fault level, a line per scenario, the no-consensus variant as
    the dashed line of the same colour (the lower end)."""
    rows = robustness_table(records)
    if not any(x["field"] for x in rows):
        raise MissingData(f"no runs of the '{ROBUSTNESS_PREFIX}*' experiments (cmarl bench robustness)")
    plt = _setup()
    from cmarl_env.evaluation import BACKLOG_SLOPE_LIMIT, GRID_TOLERANCE

    scenarios = list(dict.fromkeys(x["scenario"] for x in rows))
    cmap = plt.get_cmap("tab10")
    panels = [("grid_use_ratio", "Average grid use / limit", 1.0 + GRID_TOLERANCE, False),
              ("backlog_slope_per_agent", "Backlog slope per agent [kWh/h]", BACKLOG_SLOPE_LIMIT, False),
              ("max_agent_backlog_kwh", "Largest backlog of an agent [kWh]", None, True),
              ("cost_vs_fault_free", "Total cost / fault-free cost", None, False),
              ("consensus_error", "Consensus error (mean, 2nd half)", None, True)]
    paths: list[Path] = []
    for model in dict.fromkeys(x["model"] for x in rows if x["field"]):
        mine = [x for x in rows if x["model"] == model]
        field, title = mine[0]["field"], mine[0]["title"]
        xlabel = ROBUSTNESS_MODELS[field][2]
        levels = sorted({x["level"] for x in mine}, key=lambda v: _severity(field, v))
        fig, axes = plt.subplots(1, len(panels), figsize=(21, 3.8))
        for j, sc in enumerate(scenarios):
            pts = {x["level"]: x for x in mine if x["scenario"] == sc}
            if not pts:
                continue
            n = next(iter(pts.values()))["n_agents"]
            xs = [i for i, v in enumerate(levels) if v in pts]
            nocons = next((x for x in rows if x["scenario"] == sc and x["field"] is None), None)
            for ax, (key, ylabel, limit, log) in zip(axes, panels):
                ys = [pts[levels[i]][key] if pts[levels[i]][key] is not None else np.nan for i in xs]
                ax.plot(xs, ys, "o-", color=cmap(j), label=f"N = {n}")
                if nocons is not None and nocons.get(key) is not None:
                    ax.axhline(nocons[key], color=cmap(j), ls="--", lw=1.0, label=f"no consensus, N = {n}")
        for ax, (key, ylabel, limit, log) in zip(axes, panels):
            if limit is not None:
                ax.axhline(limit, color="0.3", ls=":", lw=1.2, label="feasible up to")
            ax.set_xticks(range(len(levels)), [("exact" if field == "quantize_bits" else "never")
                                               if (field in ("quantize_bits", "graph_redraw") and v == 0)
                                               else f"{v:g}" for v in levels])
            ax.set(xlabel=xlabel, ylabel=ylabel)
            if log:
                ax.set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"Algorithm 1 under faulty communication: {title}")
        fig.tight_layout()
        paths += _save(fig, out_dir, f"figure_robustness_{model}")
    return paths


def robustness_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The robustness table for the README: one line per scenario, model and level."""

    def f(v, fmt):
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)

    lines = ["| N | model | level | grid use / limit | backlog slope / agent | max backlog / agent [kWh] | "
             "cost / fault-free | consensus error | bound (model) | infeasible |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        level = "-" if x["field"] is None else (
            ("exact" if x["field"] == "quantize_bits" else "never")
            if x["field"] in ("quantize_bits", "graph_redraw") and x["level"] == 0 else f"{x['level']:g}")
        lines.append(f"| {x['n_agents']} | {x['model']} | {level} | {f(x['grid_use_ratio'], '.3f')} | "
                     f"{f(x['backlog_slope_per_agent'], '+.4f')} | {f(x['max_agent_backlog_kwh'], '.1f')} | "
                     f"{f(x['cost_vs_fault_free'], '.3f')} | {f(x['consensus_error'], '.3f')} | "
                     f"{f(x['fault_bound'], '.2f')} | {f(x['infeasible'], '.2f')} |")
    return "\n".join(lines)


def make_figures(results_dir: str | Path, out_dir: str | Path | None = None, *,
                 grid_search: str | Path | None = None, scaling: str | Path | None = None,
                 only: Sequence[str] | None = None) -> list[FigureResult]:
    """Draw every figure the results allow into ``out_dir`` (default ``RESULTS/figures``)."""
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "figures"
    records, _ = load_runs(results_dir) if results_dir.is_dir() else ([], [])
    # the paper's figures read demand-response trajectories (grid, backlog): EV-charging runs are left out (their
    # results are the leaderboard)
    records = [r for r in records if r.metrics.get("domain", "demand_response") == "demand_response"]
    scaling_data = None
    if scaling is not None:
        sp = Path(scaling)
        scaling_data = scaling_from_json(sp) if (sp.is_file() or (sp / "scaling.json").is_file()) else \
            scaling_from_runs(load_runs(sp)[0])
    else:
        scaling_data = scaling_from_runs(records)
        if scaling_data is None or len(scaling_data["points"]) < 2:
            scaling_data = scaling_from_json(results_dir / "scaling.json") or scaling_data
    gs_folders = [Path(grid_search)] if grid_search is not None else []
    gs_folders += [results_dir / "grid_search", results_dir / "grid-search"]
    if not records and grid_search is None:
        gs_folders.append(results_dir)
    jobs: dict[str, Callable[[], list[Path]]] = {
        "figure_2": lambda: figure_2(records, out),
        "figure_3": lambda: figure_3(records, out),
        "figure_4": lambda: figure_4(records, out),
        "figure_A1": lambda: figure_A1(load_grid_search(gs_folders), out),
        "figure_A2": lambda: figure_A2(scaling_data, out),
        "figure_A3": lambda: figure_A3(records, out),
        "figure_topology": lambda: figure_topology(records, out),
        "figure_robustness": lambda: figure_robustness(records, out),
        "figure_dual_steps": lambda: figure_dual_steps(records, out),
    }
    results = []
    for name in only or FIGURES:
        if name not in jobs:
            raise ValueError(f"unknown figure {name!r}; choose from {list(FIGURES)}")
        try:
            results.append(FigureResult(name, jobs[name]()))
        except MissingData as err:
            results.append(FigureResult(name, [], str(err)))
    return results


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
