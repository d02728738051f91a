"""``cmarl oracle``: the clairvoyant LP's feasibility frontier and cost optimum for one horizon, with references.

Example::

    cmarl oracle --agents 7 --constraint 0.27 --steps 3000 --start-hour 0 --json

The scenario is built with :func:`cmarl_env.evaluation.evaluation_config`: its
data window is exactly the evaluated hours ``[start, start + steps)``, so the
grid limit is ``c`` times the aggregate peak over those hours -- the same
``grid_limit`` as ``cmarl run`` with the same flags. The command prints a few
human-readable lines and, with ``--json``, one JSON object as the last line:
``grid_limit``, ``min_grid_fraction`` (the LP frontier under ``--backlog-cap``),
``frontier`` and ``frontier_se`` (the unbounded LP frontier solved agent by
agent, ``baselines.oracle.frontier_fraction``), ``binding``
(``cmarl_env.evaluation.is_binding``: the level lies at or above the frontier
and the serve-all controller exceeds it), ``min_cost`` at the given constraint
(null when it is infeasible), ``status``, ``solve_seconds``, the scenario, and
the reference controllers' roll-outs on the same hours through
``cmarl_env.evaluation.rollout``: ``serve_all`` (always: it decides
``binding``), and unless ``--no-reference`` ``rule_based`` (the share rule),
``price_rule`` (tuned with ``tune_price_rule`` on the training hours [0, 3000)
of the same scenario; its parameters and tuning table size recorded) and
``grid_only``. Each reference row holds its cost (terminal backlog valued at
the horizon's highest price), grid use, verdict of the one feasibility rule and
its cost over the LP's.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from cmarl_env.config import MAX_AGENTS, SPLITS, TRAIN_HOURS, EnvConfig


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
                        help="first hour of the horizon (default: the first hour of the split)")
    parser.add_argument("--split", choices=SPLITS, default="train",
                        help="hours the horizon must stay in: train = [0, 3000), test = [3000, end), all (default "
                             "train); the grid limit is set by the horizon's own hours")
    parser.add_argument("--backlog-cap", type=_nonnegative, default=None,
                        help="maximum postponed demand per agent in kWh (default: unbounded, all served by the end)")
    parser.add_argument("--seed", type=_bounded_int("--seed", 0, 2**63 - 1), default=0,
                        help="scenario seed (time offsets of agents beyond the buildings; default 0)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the share-rule, price-rule (and its tuning) and grid-only roll-outs "
                             "(serve-all still runs: it decides whether the level binds)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(_parser=parser)


def _clean(value):
    """JSON-safe: non-finite floats become null, recursively."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


REFERENCE_KEYS = ("total_cost", "energy_cost", "terminal_backlog_value", "avg_grid_consumption", "grid_use_ratio",
                  "grid_fraction_of_peak", "feasible", "infeasible_reason", "final_backlog_kwh",
                  "max_agent_backlog_kwh", "backlog_slope_per_agent")


def _row(result, lp_cost: float | None) -> dict:
    m = result.metrics()
    row = {k: m[k] for k in REFERENCE_KEYS}
    row["cost_over_lp"] = m["total_cost"] / lp_cost if lp_cost else None
    return row


def run(args: argparse.Namespace) -> int:
    from baselines.oracle import frontier_fraction, lp_rollout, solve_min_grid
    from baselines.rule_based import PriceRule, ShareRule, tune_price_rule
    from cmarl_env.core import DemandResponseCore, resolve_window
    from cmarl_env.data import load_dataset
    from cmarl_env.evaluation import GridOnly, ServeAll, evaluation_config, is_binding, rollout

    parser: argparse.ArgumentParser = args._parser
    data = load_dataset()
    try:
        lo, hi = resolve_window(EnvConfig(n_agents=args.agents, split=args.split, seed=args.seed), data.n_steps)
    except ValueError as exc:
        parser.error(str(exc))
    if args.start_hour is None:
        args.start_hour = lo
    if not lo <= args.start_hour < hi:
        parser.error(f"--start-hour={args.start_hour} is outside the {args.split} data window; allowed: [{lo}, {hi - 1}]")
    if args.steps > hi - args.start_hour:
        parser.error(
            f"--steps={args.steps} from --start-hour={args.start_hour} goes beyond the {args.split} data window "
            f"[{lo}, {hi}); allowed: 1..{hi - args.start_hour}"
        )

    def scenario(start: int, steps: int) -> DemandResponseCore:
        return DemandResponseCore(evaluation_config(n_agents=args.agents, constraint=args.constraint, start_hour=start,
                                                    steps=steps, n_hours=data.n_steps, seed=args.seed), data)

    try:
        core = scenario(args.start_hour, args.steps)
    except ValueError as exc:
        parser.error(str(exc))
    start, end = args.start_hour, args.start_hour + args.steps
    print(f"oracle LP: {args.agents} agents x {args.steps} hours [{start}, {end}), {5 * args.agents * args.steps} variables")
    print(f"aggregate peak over hours [{start}, {end}) {core.peak_demand:.4f} kWh, grid limit c = {args.constraint} x peak "
          f"= {core.grid_limit:.4f} kWh/step" + ("" if args.backlog_cap is None else
                                                f", backlog cap {args.backlog_cap} kWh per agent"))
    t0 = time.perf_counter()
    t_frontier = time.perf_counter()
    frontier, frontier_se = frontier_fraction(core, args.steps, start, seed=args.seed)
    frontier_seconds = time.perf_counter() - t_frontier
    capped = solve_min_grid(core, args.steps, start, backlog_cap=args.backlog_cap) if args.backlog_cap is not None else None
    lp, optimum = lp_rollout(core, args.steps, start, backlog_cap=args.backlog_cap)
    wall = time.perf_counter() - t0
    solve_seconds = frontier_seconds + optimum.solve_seconds + (capped.solve_seconds if capped is not None else 0.0)
    frontier_ok = capped is None or capped.ok
    min_grid_fraction = frontier if capped is None else (capped.grid_fraction if capped.ok else None)

    se = f" +- {frontier_se:.4f} (sampled agents)" if frontier_se > 0 else ""
    print(f"LP frontier: min average grid use {frontier * core.peak_demand:.4f} kWh/step = {frontier:.4f} x peak{se} "
          f"({frontier_seconds:.2f} s)")
    if capped is not None:
        print(f"LP frontier with the backlog cap: " + (f"{capped.grid_fraction:.4f} x peak" if capped.ok else
                                                      f"{capped.status}: {capped.message}"))
    if optimum.ok:
        print(f"min cost at constraint {args.constraint}: {optimum.min_cost:.4f} (average grid use "
              f"{optimum.avg_grid:.4f} kWh/step = {optimum.grid_fraction:.4f} x peak, largest backlog of an agent "
              f"{lp.max_agent_backlog:.2f} kWh; {optimum.solve_seconds:.2f} s)")
    else:
        print(f"min cost at constraint {args.constraint}: {optimum.status}: {optimum.message}")
    lp_cost = optimum.min_cost if optimum.ok else None

    serve = rollout(ServeAll(), core, start, args.steps)
    serve_fraction = serve.avg_grid / core.peak_demand
    binding = is_binding(args.constraint, frontier, serve_fraction)
    reference = {"serve_all": _row(serve, lp_cost)}
    price_params = tuning = None
    if not args.no_reference:
        train_lo, train_hi = TRAIN_HOURS
        price_params, tuning = tune_price_rule(lambda: scenario(train_lo, train_hi - train_lo), train_hi - train_lo,
                                               train_lo)
        for controller in (ShareRule(), PriceRule(price_params), GridOnly()):
            reference[controller.name] = _row(rollout(controller, core, start, args.steps), lp_cost)
        reference["price_rule"]["params"] = price_params.to_dict()
    for name, row in reference.items():
        ratio = f", {row['cost_over_lp']:.3f} x LP" if row["cost_over_lp"] else ""
        verdict = "feasible" if row["feasible"] else f"infeasible: {row['infeasible_reason']}"
        print(f"{name}: cost {row['total_cost']:.4f}{ratio}, average grid use {row['avg_grid_consumption']:.4f} kWh/step "
              f"({row['grid_use_ratio']:.3f} x limit, {row['grid_fraction_of_peak']:.4f} x peak), final backlog "
              f"{row['final_backlog_kwh']:.2f} kWh; {verdict}")
    if price_params is not None:
        print(f"price rule tuned on hours [{TRAIN_HOURS[0]}, {TRAIN_HOURS[1]}) over {len(tuning)} candidates: "
              f"{price_params.to_dict()}")
    if binding:
        how = "binds"
    elif frontier > args.constraint:
        how = "is below the LP frontier (no controller can meet it)"
    else:
        how = "does not bind (serve-all meets it within the tolerance)"
    print(f"constraint {args.constraint} {how}: LP frontier {frontier:.4f}, serve-all {serve_fraction:.4f} x peak")
    print("the LP is a relaxation (linear battery at nominal efficiency and power): its figures are bounds, not a replay")

    if args.json:
        status = optimum.status if frontier_ok else capped.status
        record = {
            "grid_limit": core.grid_limit,
            "grid_limit_hours": [start, end],
            "peak_demand": core.peak_demand,
            "frontier": frontier,
            "frontier_se": frontier_se,
            "binding": binding,
            "serve_all_fraction": serve_fraction,
            "min_grid_fraction": min_grid_fraction,
            "min_avg_grid": min_grid_fraction * core.peak_demand if min_grid_fraction is not None else None,
            "min_cost": lp_cost,
            "avg_grid_at_min_cost": optimum.avg_grid if optimum.ok else None,
            "max_agent_backlog_kwh_at_min_cost": lp.max_agent_backlog if lp is not None else None,
            "max_backlog_kwh_at_min_cost": float(optimum.total_backlog.max()) if optimum.ok else None,
            "status": status,
            "message": optimum.message if frontier_ok else capped.message,
            "frontier_status": "optimal" if frontier_ok else capped.status,
            "solve_seconds": solve_seconds,
            "wall_seconds": wall,
            "n_agents": args.agents,
            "steps": args.steps,
            "start_hour": start,
            "split": args.split,
            "window": [lo, hi],
            "constraint": args.constraint,
            "backlog_cap": args.backlog_cap,
            "seed": args.seed,
            "price_rule_tuning": None if tuning is None else {
                "hours": list(TRAIN_HOURS), "candidates": len(tuning), "params": price_params.to_dict(),
                "feasible_candidates": sum(row["feasible"] for row in tuning)},
        } | {name: reference.get(name) for name in ("serve_all", "rule_based", "price_rule", "grid_only")}
        print(json.dumps(_clean(record)))
    return 0 if frontier_ok and optimum.status in ("optimal", "infeasible") else 1
