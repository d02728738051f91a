"""``cmarl oracle``: the clairvoyant LP's feasibility frontier and cost optimum for one horizon.

Example::

    cmarl oracle --agents 7 --constraint 0.27 --steps 3000 --start-hour 0 --json

prints a few human-readable lines and, with ``--json``, one JSON object as
the last line: ``min_grid_fraction`` (the frontier, as a fraction of the
aggregate peak), ``min_cost`` at the given constraint (null when it is
infeasible), ``status``, ``solve_seconds``, the scenario, and the rule-based
and grid-only controllers' figures on the same horizon for reference.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from cmarl_env.config import MAX_AGENTS, SPLITS, EnvConfig


def _bounded_int(name: str, low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}={text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{name}={value} is out of range; allowed: {allowed}")
        return value

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--constraint={text!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(f"--constraint={value} is out of range; allowed: (0, 1] (fraction of the aggregate peak)")
    return value


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--backlog-cap={text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0.0):
        raise argparse.ArgumentTypeError(f"--backlog-cap={value} is out of range; allowed: finite kWh >= 0")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=_bounded_int("--agents", 1, MAX_AGENTS), default=7,
                        help="number of agents (default 7, the paper scenario)")
    parser.add_argument("--constraint", type=_fraction, default=0.27,
                        help="grid limit c as a fraction of the aggregate peak, in (0, 1] (default 0.27)")
    parser.add_argument("--steps", type=_bounded_int("--steps", 1), default=3000,
                        help="horizon T in hours; start-hour + steps must stay in the data window (default 3000)")
    parser.add_argument("--start-hour", type=_bounded_int("--start-hour", 0), default=None,
                        help="first hour of the horizon (default: the first hour of the split's window)")
    parser.add_argument("--split", choices=SPLITS, default="train",
                        help="data window: train = hours [0, 3000), test = [3000, end), all (default train)")
    parser.add_argument("--backlog-cap", type=_nonnegative, default=None,
                        help="maximum postponed demand per agent in kWh (default: unbounded, all served by the end)")
    parser.add_argument("--seed", type=_bounded_int("--seed", 0, 2**63 - 1), default=0,
                        help="scenario seed (time offsets of agents beyond the buildings; default 0)")
    parser.add_argument("--no-reference", action="store_true", help="skip the rule-based and grid-only rollouts")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(_parser=parser)


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run(args: argparse.Namespace) -> int:
    from baselines.oracle import solve_min_cost, solve_min_grid
    from baselines.rule_based import GridOnly, RuleBasedController, rollout
    from cmarl_env.core import DemandResponseCore

    parser: argparse.ArgumentParser = args._parser
    try:
        config = EnvConfig(n_agents=args.agents, constraint_fraction=args.constraint, seed=args.seed, split=args.split)
        core = DemandResponseCore(config)
    except ValueError as exc:
        parser.error(str(exc))
    lo, hi = core.window
    if args.start_hour is None:
        args.start_hour = lo
    if not lo <= args.start_hour < hi:
        parser.error(f"--start-hour={args.start_hour} is outside the {args.split} data window; allowed: [{lo}, {hi - 1}]")
    if args.steps > hi - args.start_hour:
        parser.error(
            f"--steps={args.steps} from --start-hour={args.start_hour} goes beyond the {args.split} data window "
            f"[{lo}, {hi}); allowed: 1..{hi - args.start_hour}"
        )

    print(f"oracle LP: {args.agents} agents x {args.steps} hours from hour {args.start_hour} ({args.split} window "
          f"[{lo}, {hi})), {5 * args.agents * args.steps} variables")
    print(f"aggregate peak {core.peak_demand:.4f} kWh, grid limit c = {args.constraint} x peak = {core.grid_limit:.4f} kWh/step"
          + ("" if args.backlog_cap is None else f", backlog cap {args.backlog_cap} kWh per agent"))
    t0 = time.perf_counter()
    frontier = solve_min_grid(core, args.steps, args.start_hour, backlog_cap=args.backlog_cap)
    optimum = solve_min_cost(core, args.steps, args.start_hour, constraint_fraction=args.constraint,
                             backlog_cap=args.backlog_cap)
    wall = time.perf_counter() - t0
    solve_seconds = frontier.solve_seconds + optimum.solve_seconds

    if frontier.ok:
        print(f"feasibility frontier: min average grid use {frontier.avg_grid:.4f} kWh/step = "
              f"{frontier.grid_fraction:.4f} x peak ({frontier.solve_seconds:.2f} s)")
    else:
        print(f"feasibility frontier: {frontier.status}: {frontier.message}")
    if optimum.ok:
        print(f"min cost at constraint {args.constraint}: {optimum.min_cost:.4f} (average grid use "
              f"{optimum.avg_grid:.4f} kWh/step = {optimum.grid_fraction:.4f} x peak, largest total backlog "
              f"{optimum.total_backlog.max():.2f} kWh; {optimum.solve_seconds:.2f} s)")
    else:
        print(f"min cost at constraint {args.constraint}: {optimum.status}: {optimum.message}")

    reference = {}
    if not args.no_reference:
        for controller in (RuleBasedController(), GridOnly()):
            m = rollout(controller, core, args.steps, args.start_hour, seed=args.seed)
            reference[m["controller"]] = {
                k: m[k] for k in ("total_cost", "avg_grid_consumption", "grid_fraction", "constraint_satisfied",
                                  "final_backlog_kwh", "backlog_slope_kwh_per_step")
            }
            print(f"{m['controller']}: cost {m['total_cost']:.4f}, average grid use {m['avg_grid_consumption']:.4f} "
                  f"kWh/step ({m['grid_fraction']:.4f} x peak), final backlog {m['final_backlog_kwh']:.2f} kWh")
    print("the LP is a relaxation (linear battery at nominal efficiency and power): its figures are bounds, not a replay")

    if args.json:
        status = optimum.status if frontier.ok else frontier.status
        record = {
            "min_grid_fraction": frontier.grid_fraction if frontier.ok else None,
            "min_avg_grid": frontier.avg_grid if frontier.ok else None,
            "min_cost": optimum.min_cost if optimum.ok else None,
            "avg_grid_at_min_cost": optimum.avg_grid if optimum.ok else None,
            "max_backlog_kwh_at_min_cost": float(optimum.total_backlog.max()) if optimum.ok else None,
            "status": status,
            "message": optimum.message if frontier.ok else frontier.message,
            "frontier_status": frontier.status,
            "solve_seconds": solve_seconds,
            "wall_seconds": wall,
            "n_agents": args.agents,
            "steps": args.steps,
            "start_hour": args.start_hour,
            "split": args.split,
            "window": [lo, hi],
            "constraint": args.constraint,
            "grid_limit": core.grid_limit,
            "peak_demand": core.peak_demand,
            "backlog_cap": args.backlog_cap,
            "seed": args.seed,
            "rule_based": reference.get("rule_based"),
            "grid_only": reference.get("grid_only"),
        }
        print(json.dumps({k: _clean(v) for k, v in record.items()}))
    return 0 if frontier.ok and optimum.status in ("optimal", "infeasible") else 1
