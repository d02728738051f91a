"""Per-hour time of Algorithm 1 sharded over Ray actors, against N and K, and the share spent in exchange.

    python -m benchmarks.shard_scaling                       # N = 1k, 10k, 100k; K = 1, 2, 4 (about 3 min, 2 cores)
    python -m benchmarks.shard_scaling --agents 1000000 --shards 1 2 --hours 12
    python -m benchmarks.shard_scaling --address auto        # on a running Ray cluster

For each N it also times the single-process run (``algorithms.execute.run_execution``). "Exchange" is the time
of an hour outside the slowest shard's own compute: the cut-edge values through the object store, Ray's task
scheduling and the driver's sums. Per-hour figures are the mean over the hours (the first hour of an actor
carries its warm-up: the median is printed too). The extrapolation takes the per-agent cost of one shard (one core: one torch
thread, one numba thread) at the largest N and K = 1, and the exchange share measured at K = the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def measure(n: int, shards: list[int], hours: int, graph: str, address: str | None, data) -> list[dict]:
    from algorithms.execute import ExecutionConfig, run_execution
    from algorithms.shards import run_sharded

    config = ExecutionConfig(n_agents=n, graph=graph, steps=hours, record_agents=min(n, 100))
    rows = []
    run_execution(config.replace(steps=2), data=data)  # warm-up: JIT caches, torch threads
    t0 = time.perf_counter()
    single = run_execution(config, data=data)
    rows.append({"n_agents": n, "shards": 0, "per_hour_ms": 1e3 * single.metrics["seconds_per_step"],
                 "total_s": time.perf_counter() - t0})
    for k in shards:
        if k > n:
            continue
        t0 = time.perf_counter()
        res = run_sharded(config, k, data=data, address=address, diagnostics="partial")
        sh = res.facts["sharding"]
        same = bool(np.array_equal(res.trajectories["total_grid"], single.trajectories["total_grid"])
                    and np.array_equal(res.trajectories["lambda"], single.trajectories["lambda"]))
        rows.append({"n_agents": n, "shards": k, "per_hour_ms": 1e3 * sh["per_hour_s"],
                     "per_hour_median_ms": 1e3 * sh["per_hour_median_s"],
                     "shard_compute_ms": 1e3 * sh["shard_compute_per_hour_s"],
                     "shard_compute_mean_ms": 1e3 * sh["shard_compute_mean_per_hour_s"],
                     "exchange_share": sh["exchange_share"], "cut_edges": sh["cut_edges"],
                     "boundary_values": sh["boundary_values"], "setup_s": sh["setup_s"],
                     "identical_to_single": same, "total_s": time.perf_counter() - t0})
    return rows


def extrapolate(rows: list[dict], cores: int, machines: int = 100) -> dict:
    """Agents at one hour per second: per-core agent cost from the largest N at K = 1, exchange share at K = cores."""
    sharded = [r for r in rows if r["shards"] == 1]
    big = max(sharded, key=lambda r: r["n_agents"])
    per_agent_s = big["shard_compute_mean_ms"] / 1e3 / big["n_agents"]
    at_cores = [r for r in rows if r["shards"] == cores and r["n_agents"] == big["n_agents"]]
    share = at_cores[0]["exchange_share"] if at_cores else max(r["exchange_share"] for r in rows if r["shards"] > 1)
    one = cores * (1.0 - share) / per_agent_s
    return {"per_agent_hour_us": 1e6 * per_agent_s, "from_n_agents": big["n_agents"], "cores": cores,
            "exchange_share_used": share, "agents_one_machine": one, "machines": machines,
            "agents_cluster": machines * one}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--graph", default="small_world")
    ap.add_argument("--address", default=None, help="a running Ray cluster (default: a local Ray on this machine)")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores per machine for the extrapolation")
    ap.add_argument("--out", type=Path, default=None, help="write the rows and the estimate as JSON")
    args = ap.parse_args(argv)
    for n in args.agents:
        if n < 1:
            raise SystemExit(f"shard_scaling: --agents {n} must be >= 1")
    for k in args.shards:
        if k < 1:
            raise SystemExit(f"shard_scaling: --shards {k} must be >= 1")
    if 1 not in args.shards:
        raise SystemExit("shard_scaling: --shards must include 1 (the per-shard cost of the extrapolation)")
    if args.hours < 2:
        raise SystemExit(f"shard_scaling: --hours {args.hours} must be >= 2")
    from algorithms.shards import ray_session
    from cmarl_env.data import load_dataset

    data = load_dataset()
    rows: list[dict] = []
    with ray_session(args.address):
        for n in args.agents:
            rows += measure(n, args.shards, args.hours, args.graph, args.address, data)
            for r in rows[-(1 + sum(k <= n for k in args.shards)):]:
                if r["shards"] == 0:
                    print(f"N={n:>9,}  single process                   {r['per_hour_ms']:9.2f} ms/hour", flush=True)
                else:
                    print(f"N={n:>9,}  K={r['shards']:<2} {r['cut_edges']:>6} cut edges  {r['per_hour_ms']:9.2f} "
                          f"ms/hour (median {r['per_hour_median_ms']:.2f}), slowest shard "
                          f"{r['shard_compute_ms']:.2f} ms, exchange {100 * r['exchange_share']:4.1f} %, "
                          f"identical={r['identical_to_single']}", flush=True)
    est = extrapolate(rows, args.cores)
    print(f"per-shard cost {est['per_agent_hour_us']:.2f} us per agent-hour (N={est['from_n_agents']:,}, one core); "
          f"with {100 * est['exchange_share_used']:.0f} % exchange: one {est['cores']}-core machine runs "
          f"~{est['agents_one_machine']:,.0f} agents at one hour per second, {est['machines']} machines "
          f"~{est['agents_cluster']:,.0f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "estimate": est, "args": {k: (str(v) if isinstance(v, Path) else v)
                                                                                  for k, v in vars(args).items()}},
                                       indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
