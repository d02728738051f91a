"""``cmarl grid-search``: the fixed-penalty (lambda, nu) grid on Ray Tune, resumable.

Each point is rolled out through ``cmarl_env.evaluation.rollout`` on the hours ``[--start-hour, --start-hour +
--eval-steps)`` (whose peak sets the grid limit) and judged by ``cmarl_env.evaluation.judge``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from baselines.grid_search import METHODS, SHARING, GridSearchConfig, run_grid_search


def configure(parser: argparse.ArgumentParser) -> None:
    d = GridSearchConfig()
    parser.add_argument("--method", choices=METHODS, default=d.method,
                        help="ippo: train IPPO per point; augmented: the shipped state-augmented policies at each point")
    parser.add_argument("--lambda-range", type=float, nargs=3, metavar=("MIN", "MAX", "STEP"),
                        default=[d.lambda_min, d.lambda_max, d.lambda_step])
    parser.add_argument("--nu-range", type=float, nargs=3, metavar=("MIN", "MAX", "STEP"), default=[d.nu_min, d.nu_max, d.nu_step])
    parser.add_argument("--grid-values", type=float, nargs="+", default=list(d.grid_values), metavar="V",
                        help="also search the band (lambda, -lambda - V) for every lambda on the lambda axis: V is what "
                             "the reward pays per kWh of grid energy before its price (the tariff is 0.21-0.54)")
    parser.add_argument("--no-rectangle", dest="rectangle", action="store_false",
                        help="search only the --grid-values band, not the lambda x nu rectangle")
    parser.add_argument("--sharing", choices=SHARING, default=d.sharing,
                        help="IPPO learners: per_agent (independent PPO per agent on its own building; default) or "
                             "per_type (one PPO per agent type on every building, the cheaper variant)")
    parser.add_argument("--train-steps", type=int, default=d.train_steps,
                        help="IPPO env steps per learner (agent or type), training seed and point")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=list(d.train_seeds), metavar="SEED",
                        help="IPPO training seeds; a point is feasible only if every seed's roll-outs are")
    parser.add_argument("--eval-steps", type=int, default=d.eval_steps, help="hours of each evaluation roll-out")
    parser.add_argument("--start-hour", type=int, default=d.start_hour, help="first roll-out's start hour")
    parser.add_argument("--rollouts", type=int, default=d.rollouts,
                        help="roll-outs per point and seed; roll-out k >= 1 starts up to --start-jitter hours later")
    parser.add_argument("--start-jitter", type=int, default=d.start_jitter)
    parser.add_argument("--constraint", type=float, default=d.constraint, help="main constraint level (fraction of the peak)")
    parser.add_argument("--extra-constraints", type=float, nargs="*", default=[], metavar="C",
                        help="further levels every point is also judged at (no extra training)")
    parser.add_argument("--agents", type=int, default=d.n_agents)
    parser.add_argument("--seed", type=int, default=d.seed, help="scenario seed (graph, roll-out start hours)")
    parser.add_argument("--cpus-per-trial", type=float, default=d.cpus_per_trial)
    parser.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: all CPUs)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default results/grid_<method>)")


def config_from_args(args: argparse.Namespace) -> GridSearchConfig:
    """The search the parsed command line asks for (raises ValueError naming a bad value)."""
    return GridSearchConfig(
        method=args.method,
        lambda_min=args.lambda_range[0], lambda_max=args.lambda_range[1], lambda_step=args.lambda_range[2],
        nu_min=args.nu_range[0], nu_max=args.nu_range[1], nu_step=args.nu_range[2],
        sharing=args.sharing, train_steps=args.train_steps, train_seeds=tuple(args.train_seeds),
        eval_steps=args.eval_steps, start_hour=args.start_hour, rollouts=args.rollouts,
        start_jitter=args.start_jitter, constraint=args.constraint,
        extra_constraints=tuple(args.extra_constraints), n_agents=args.agents, seed=args.seed,
        cpus_per_trial=args.cpus_per_trial, grid_values=tuple(args.grid_values), rectangle=args.rectangle,
    )


def run(args: argparse.Namespace) -> int:
    from cmarl_env.records import FolderLockedError, check_output_dir

    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise SystemExit(f"cmarl grid-search: --max-concurrent={args.max_concurrent} must be >= 1")
    out = args.out or Path("results") / f"grid_{args.method}"
    try:
        check_output_dir(out, "--out")  # before any work
        config = config_from_args(args)
        summary = run_grid_search(config, out, address=args.address, max_concurrent=args.max_concurrent)
    except (ValueError, FolderLockedError) as err:
        raise SystemExit(f"cmarl grid-search: {err}") from None
    print(f"{summary['finished']}/{summary['points']} points finished ({summary['ran_this_call']} run now, "
          f"{len(summary['failed'])} failed); grid limit {summary['grid_limit']} kWh/step; "
          f"feasible pairs (cmarl_env.evaluation.judge): {summary['feasible_pairs']}; "
          f"selected (not degenerate, feasible, lowest cost) by level: {summary['selected']}")
    print(f"results: {out}/grid.csv, {out}/table1.md, {out}/figure_A1_{args.method}.png")
    print(json.dumps(summary))
    return 0 if not summary["failed"] else 1
