"""``cmarl train-baseline NAME``: train a MARL baseline: MAPPO / MADDPG / MASAC / ISAC with fixed penalties, or
MAPPO-L / networked PD (``mappo_lagrangian``, ``networked_pd``) with multipliers learned during training.

Examples::

    cmarl train-baseline mappo --steps 100000 --agents 7 --lambda 6 --nu -11 --seed 0 --out runs/mappo --eval-start-hours 0
    cmarl train-baseline mappo_lagrangian --steps 100000 --constraint 0.20 --out runs/mappo_l
    cmarl train-baseline networked_pd --steps 100000 --constraint 0.20 --graph two_clusters --out runs/npd

For the fixed-penalty baselines ``--lambda``/``--nu`` are the fixed pair (default 8, -8); for the learned-multiplier
ones they are the initial multipliers (default 0, 0; ``--nu`` <= 0, the demand multiplier starting at ``-nu``).

The run folder receives ``config.json``, ``policy.pt``, ``metrics.json`` and
``versions.json`` (see ``baselines.marl.training``); Tianshou's trainer shows
the progress bars. The final policy is then evaluated with one roll-out of
``--eval-steps`` hours from each ``--eval-start-hours`` hour (default 0: the
paper scenario's hours [0, 3000)), through the one roll-out loop and
feasibility rule (``baselines.marl.common.evaluate``); ``--eval-start-hours``
with no value skips the evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from baselines.marl_names import ALL_BASELINES as BASELINE_NAMES
from baselines.marl_names import LAGRANGIAN_BASELINES


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 64,64") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must list positive layer widths, e.g. 64,64")
    return sizes


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=BASELINE_NAMES, metavar="NAME",
                        help=f"baseline to train; one of {', '.join(BASELINE_NAMES)}")
    parser.add_argument("--steps", type=int, default=100_000,
                        help="training env steps (hours of one scenario copy, all agents acting; default 100000)")
    parser.add_argument("--agents", type=int, default=7, help="number of agents N (default 7, the paper scenario)")
    parser.add_argument("--lambda", dest="lambda_", metavar="LAMBDA", type=float, default=None,
                        help="fixed global penalty lambda (default 8); learned-multiplier baselines: its initial value "
                             "(default 0)")
    parser.add_argument("--nu", type=float, default=None,
                        help="fixed local penalty nu (default -8); learned-multiplier baselines: minus the initial "
                             "demand multiplier (default 0)")
    parser.add_argument("--constraint", type=float, default=0.27,
                        help="constraint level c of the training scenario (fraction of the peak; default 0.27)")
    parser.add_argument("--dual-lr-grid", type=float, default=2.0,
                        help="learned-multiplier baselines: dual step per kWh of mean grid excess (default 2)")
    parser.add_argument("--dual-lr-demand", type=float, default=20.0,
                        help="learned-multiplier baselines: dual step per kWh of mean backlog growth (default 20)")
    parser.add_argument("--graph", default="two_clusters",
                        help="networked_pd: the communication graph (default two_clusters, the paper's)")
    parser.add_argument("--consensus-rounds", type=int, default=1,
                        help="networked_pd: neighbour-averaging rounds of the grid multipliers per update (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--eval-start-hours", type=int, nargs="*", default=[0], metavar="HOUR",
                        help="evaluate the final policy with one roll-out from each of these hours "
                             "(default 0; give the flag with no value to skip)")
    parser.add_argument("--eval-steps", type=int, default=3000, help="hours per evaluation roll-out (default 3000)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs (a training-return estimate after each; default 10)")
    parser.add_argument("--num-envs", type=int, default=4, help="parallel scenario copies (default 4)")
    parser.add_argument("--lr", type=float, default=3e-4, help="actor learning rate (MAPPO: actor and critic; default 3e-4)")
    parser.add_argument("--critic-lr", type=float, default=1e-3, help="critic learning rate, off-policy (default 1e-3)")
    parser.add_argument("--batch-size", type=int, default=256, help="minibatch size (default 256)")
    parser.add_argument("--hidden", type=_hidden, default=(64, 64), help="actor hidden sizes (default 64,64)")
    parser.add_argument("--critic-hidden", type=_hidden, default=(128, 128), help="critic hidden sizes (default 128,128)")
    parser.add_argument("--episode-length", type=int, default=80, help="training episode length in hours (default 80)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from baselines.marl import BaselineConfig, train_baseline

    try:
        config = BaselineConfig(
            name=args.name, n_agents=args.agents, lambda_=args.lambda_, nu=args.nu, total_steps=args.steps,
            constraint_fraction=args.constraint, dual_lr_grid=args.dual_lr_grid, dual_lr_demand=args.dual_lr_demand,
            graph=args.graph, consensus_rounds=args.consensus_rounds,
            seed=args.seed, epochs=args.epochs, num_envs=args.num_envs, lr=args.lr, critic_lr=args.critic_lr,
            batch_size=args.batch_size, hidden_sizes=args.hidden, critic_hidden_sizes=args.critic_hidden,
            episode_length=args.episode_length,
            # off-policy: collect about 8 env steps per iteration, a multiple of the copies
            collect_steps=args.num_envs * max(1, 8 // args.num_envs) if args.num_envs > 0 else 8,
        )
    except ValueError as err:
        raise SystemExit(f"cmarl train-baseline: error: {err}") from None
    if any(h < 0 for h in args.eval_start_hours):
        raise SystemExit("cmarl train-baseline: error: --eval-start-hours must be hours >= 0")
    if args.eval_steps < 1:
        raise SystemExit("cmarl train-baseline: error: --eval-steps must be >= 1")
    from cmarl_env.records import OutputPathError, check_output_dir

    try:  # before any training
        check_output_dir(args.out, "--out")
    except OutputPathError as err:
        raise SystemExit(f"cmarl train-baseline: error: {err}") from None
    pair = f"({config.lambda_:g}, {config.nu:g})"
    what = (f"multipliers learned from (lambda, nu) = {pair}" if args.name in LAGRANGIAN_BASELINES
            else f"fixed (lambda, nu) = {pair}")
    print(f"training {args.name} on {args.agents} agents (c = {args.constraint:g}) with {what}, "
          f"{args.steps} env steps, seed {args.seed} -> {args.out}")
    try:
        summary = train_baseline(config, Path(args.out), progress=not args.quiet,
                                 eval_start_hours=args.eval_start_hours, eval_steps=args.eval_steps)
    except ValueError as err:  # argument problems found before training starts
        raise SystemExit(f"cmarl train-baseline: error: {err}") from None
    print(f"done in {summary['wall_time_s']:.1f} s ({summary['iterations']} iterations, "
          f"{summary['seconds_per_iteration']:.4f} s/iteration); training return per agent "
          f"{summary['eval_return_initial']:.2f} -> {summary['eval_return_final']:.2f}")
    if "multipliers_final" in summary:
        m = summary["multipliers_final"]
        print(f"learned multipliers (training only, not used at execution): lambda "
              f"{', '.join(f'{v:.2f}' for v in m['lambda'])}; mu {', '.join(f'{v:.2f}' for v in m['mu'])}")
    if "evaluation" in summary:
        ev = summary["evaluation"]
        best = ev["best"]
        print(f"evaluation: infeasible roll-outs {100 * ev['infeasible_fraction']:.0f} %; best roll-out "
              f"(from hour {best['start_hour']}): avg grid {best['avg_grid_consumption']:.3f} kWh vs limit "
              f"{best['grid_limit']:.3f}, cost {best['total_cost']:.1f}, backlog slope "
              f"{best['backlog_slope_per_agent']:.4f} kWh/step/agent"
              + (f" ({best['infeasible_reason']})" if best["infeasible_reason"] else ""))
    print(json.dumps({k: summary[k] for k in ("checkpoint", "wall_time_s", "seconds_per_iteration", "env_steps")}))
    return 0
