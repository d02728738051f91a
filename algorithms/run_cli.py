"""``cmarl run``: execute the shipped (or given) policies with Algorithm 1 and write a run folder.

The run folder records the consensus weights twice: ``config.json`` (``dual.weights``) and ``facts.json``
(``consensus_weights``); ``metrics.json`` carries the run's ``grid_limit`` (``Rollout.metrics``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from algorithms.dual import DualConfig
from algorithms.execute import ExecutionConfig, run_execution, write_run
from cmarl_env.graphs import CONSENSUS_WEIGHTS


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = DualConfig()
    parser.add_argument("--agents", type=int, default=7, help="number of agents (default 7)")
    parser.add_argument("--graph", default="two_clusters", help="communication graph (ring, line, two_clusters, erdos_renyi, random_geometric, small_world, ...)")
    parser.add_argument("--constraint", type=float, default=0.27, help="grid limit as a fraction of the aggregate peak (default 0.27)")
    parser.add_argument("--steps", type=int, default=3000, help="hours to execute (default 3000)")
    parser.add_argument("--start-hour", type=int, default=0, help="first data hour (training hours are [0, 3000); 3000+ is held out)")
    parser.add_argument("--consensus-rounds", type=int, default=defaults.rounds, help="L consensus rounds per step; 0 = no consensus")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="dual step size on lambda")
    parser.add_argument("--eps", type=float, default=defaults.eps, help="consensus step size in (0, 1]")
    parser.add_argument("--eta", type=float, default=defaults.eta, help="dual step size on nu")
    parser.add_argument("--lambda-range", type=float, nargs=2, metavar=("LO", "HI"),
                        default=(defaults.lambda_min, defaults.lambda_max),
                        help="projection range of lambda (default 0 15); observations stay normalised by the training range")
    parser.add_argument("--nu-range", type=float, nargs=2, metavar=("LO", "HI"), default=(defaults.nu_min, defaults.nu_max),
                        help="projection range of nu (default -20 20); e.g. -15 15 shows the paper's no-consensus failure")
    parser.add_argument("--weights", choices=CONSENSUS_WEIGHTS, default=defaults.weights,
                        help="consensus matrix: random_walk (the paper's D^-1 A; enforces the degree-weighted "
                             "constraint) or metropolis (Metropolis-Hastings; enforces the plain average). "
                             "Default random_walk")
    parser.add_argument("--dual-period", type=int, default=defaults.update_period, help="dual update every k steps")
    parser.add_argument("--double-demand", default=None,
                        help="comma-separated agent indices with double demand (default: the paper's, agents 0 and ceil(N/2))")
    parser.add_argument("--policy", action="append", default=[], metavar="SCALE=PATH",
                        help="use a checkpoint for the agents of a demand scale, e.g. 2.0=runs/train/policy.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record-agents", type=int, default=1000, help="agents whose lambda/nu trajectories are stored")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/run_<agents>_<graph>_c<constraint>_L<rounds>)")
    parser.add_argument("--no-progress", action="store_true")


def _demand_scales(spec: str | None, n: int):
    if spec is None:
        return None
    scales = [1.0] * n
    for token in filter(None, spec.split(",")):
        i = int(token)
        if not 0 <= i < n:
            raise SystemExit(f"cmarl run: --double-demand index {i} is out of range; allowed 0..{n - 1}")
        scales[i] = 2.0
    return tuple(scales)


def _policies(specs: list[str]):
    if not specs:
        return None
    from algorithms.policy import load_policy

    out = {}
    for spec in specs:
        scale, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"cmarl run: --policy {spec!r} must look like SCALE=PATH, e.g. 2.0=runs/train/policy.pt")
        out[float(scale)] = load_policy(path).act
    return out


def run(args: argparse.Namespace) -> int:
    try:
        dual = DualConfig(alpha=args.alpha, eps=args.eps, eta=args.eta, rounds=args.consensus_rounds,
                          update_period=args.dual_period, lambda_min=args.lambda_range[0], lambda_max=args.lambda_range[1],
                          nu_min=args.nu_range[0], nu_max=args.nu_range[1], weights=args.weights)
        config = ExecutionConfig(
            n_agents=args.agents, graph=args.graph, constraint=args.constraint, steps=args.steps,
            start_hour=args.start_hour, demand_scales=_demand_scales(args.double_demand, args.agents),
            dual=dual, seed=args.seed, record_agents=args.record_agents,
        )
        result = run_execution(config, _policies(args.policy), progress=not args.no_progress)
    except ValueError as err:
        raise SystemExit(f"cmarl run: {err}") from None
    suffix = "" if args.weights == "random_walk" else f"_{args.weights}"
    out = args.out or Path("runs") / f"run_{args.agents}_{args.graph}_c{args.constraint:g}_L{args.consensus_rounds}{suffix}"
    write_run(result, out)
    m = result.metrics
    print(f"avg total grid use {m['avg_grid_consumption']:.3f} kWh vs limit {m['grid_limit']:.3f} kWh "
          f"({100 * m['avg_grid_consumption'] / m['grid_limit']:.1f} %)")
    print(f"final backlog {m['final_backlog_kwh']:.2f} kWh, slope {m['backlog_slope_kwh_per_step']:+.4f} kWh/step, "
          f"lambda spread {m['lambda_spread_final']:.3f}, total cost {m['total_cost']:.2f}")
    print(f"{m['agent_steps_per_s']:,.0f} agent-steps/s; run folder: {out}")
    print(json.dumps({k: v for k, v in m.items() if k != "lambda_final"}))
    return 0
