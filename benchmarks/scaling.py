"""Execution scaling (paper Figure A.2): wall time per step against the number of agents.

``python -m benchmarks.scaling --json`` runs Algorithm 1 with the shipped
policies (inference included) on random connected graphs for N = 10 ... 10^6,
each N in a fresh process so its peak memory is its own, fits the exponent of
time against N from 1,000 up, and prints one JSON object as its last line with
``agents``, ``seconds_per_step``, ``exponent``, ``agent_steps_per_s``,
``peak_rss_mb`` and the running mean of lambda across agents per N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

DEFAULT_AGENTS = (10, 100, 1_000, 10_000, 100_000, 1_000_000)

_CHILD = """
import json, resource, sys
import torch
torch.set_num_threads({threads})
from algorithms.dual import DualConfig
from algorithms.execute import ExecutionConfig, run_execution
cfg = ExecutionConfig(n_agents={n}, graph={graph!r}, steps={steps}, start_hour={start}, constraint={constraint},
                      dual=DualConfig(rounds={rounds}), seed={seed}, record_agents=0)
res = run_execution(cfg)
m = res.metrics
out = {{"n": {n}, "seconds_per_step": m["seconds_per_step"], "agent_steps_per_s": m["agent_steps_per_s"],
       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
       "lambda_mean": res.trajectories["lambda_mean"].tolist(), "avg_grid_ratio": m["avg_grid_consumption"] / m["grid_limit"],
       "lambda_spread_final": m["lambda_spread_final"]}}
print(json.dumps(out))
"""


def measure(n: int, *, graph: str, steps: int, start: int, constraint: float, rounds: int, seed: int, threads: int) -> dict:
    code = _CHILD.format(n=n, graph=graph, steps=steps, start=start, constraint=constraint, rounds=rounds, seed=seed, threads=threads)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scaling run for N={n} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit_exponent(agents, seconds, min_agents: int = 1_000) -> float:
    """Slope of log(time) against log(N) over the runs with N >= ``min_agents``."""
    a = np.asarray(agents, dtype=float)
    s = np.asarray(seconds, dtype=float)
    keep = a >= min_agents
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(a[keep]), np.log(s[keep]), 1)[0])


def plot(results: list[dict], exponent: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_lam) = plt.subplots(1, 2, figsize=(11, 4))
    agents = [r["n"] for r in results]
    ax_time.loglog(agents, [r["seconds_per_step"] for r in results], "o-")
    ax_time.set_xlabel("agents N")
    ax_time.set_ylabel("execution time per step [s]")
    ax_time.set_title(f"Algorithm 1 execution (fitted exponent {exponent:.2f})")
    ax_time.grid(True, which="both", alpha=0.3)
    for r in results:
        lam = np.asarray(r["lambda_mean"])
        ax_lam.plot(np.cumsum(lam) / np.arange(1, len(lam) + 1), label=f"N = {r['n']:,}")
    ax_lam.set_xlabel("step")
    ax_lam.set_ylabel("running mean of lambda across agents")
    ax_lam.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=list(DEFAULT_AGENTS))
    parser.add_argument("--graph", default="small_world", help="random connected family (small_world, random_geometric, erdos_renyi)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--start-hour", type=int, default=0)
    parser.add_argument("--constraint", type=float, default=0.27)
    parser.add_argument("--consensus-rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for policy inference")
    parser.add_argument("--out", type=Path, default=Path("results/scaling"))
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)

    results = []
    for n in args.agents:
        r = measure(n, graph=args.graph, steps=args.steps, start=args.start_hour, constraint=args.constraint,
                    rounds=args.consensus_rounds, seed=args.seed, threads=args.threads)
        results.append(r)
        print(f"N={n:>9,}: {r['seconds_per_step'] * 1e3:9.2f} ms/step, {r['agent_steps_per_s']:>12,.0f} agent-steps/s, "
              f"peak RSS {r['peak_rss_mb']:8,.0f} MB", flush=True)
    agents = [r["n"] for r in results]
    seconds = [r["seconds_per_step"] for r in results]
    exponent = fit_exponent(agents, seconds)
    print(f"fitted exponent of time against N (N >= 1,000): {exponent:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "agents": agents,
        "seconds_per_step": seconds,
        "exponent": exponent,
        "agent_steps_per_s": [r["agent_steps_per_s"] for r in results],
        "peak_rss_mb": [r["peak_rss_mb"] for r in results],
        "steps": args.steps,
        "graph": args.graph,
    }
    (args.out / "scaling.json").write_text(json.dumps(summary | {"lambda_mean": {str(r["n"]): r["lambda_mean"] for r in results}}))
    plot(results, exponent, args.out / "figure_A2_scaling.png")
    print(f"figure: {args.out / 'figure_A2_scaling.png'}")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
