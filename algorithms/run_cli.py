"""``cmarl run``: execute the shipped (or given) policies with Algorithm 1 and write a run folder.

The run folder records the consensus weights twice: ``config.json`` (``dual.weights``) and ``facts.json``
(``consensus_weights``); ``metrics.json`` carries the run's ``grid_limit`` (``Rollout.metrics``). The
communication models (``--delay``, ``--message-loss``, ``--edge-up``, ``--update-prob``, ``--quantize-bits``, ...)
are ``DualConfig`` fields: ``config.json`` records them under ``dual`` and ``facts.json`` records them with what
they did (delivered messages, joint connectivity) under ``communication``.

``--domain ev_charging`` runs Algorithm 1 on EV charging sites with the shipped EV policies (one per site category,
``algorithms/pretrained/ev``) and the EV domain's dual defaults (nu in [-20, 0]); the cap is ``--constraint`` x the
peak of uncontrolled charging on the run's own week (start day, seed), as ``cmarl bench ev`` calibrates its
scenarios. Flags of one domain given with the other are refused naming the flag and what is allowed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dataclasses import dataclass, field
from typing import Any

from algorithms.dual import DualConfig
from algorithms.execute import ExecutionConfig, ExecutionResult, run_execution, write_run
from cmarl_env.config import ConfigBase
from cmarl_env.graphs import CONSENSUS_WEIGHTS

DOMAINS = ("demand_response", "ev_charging")
# defaults that differ per domain (None in argparse, resolved in ``_resolve``)
DOMAIN_DEFAULTS = {"demand_response": {"agents": 7, "graph": "two_clusters", "constraint": 0.27, "steps": 3000},
                   "ev_charging": {"agents": 10, "graph": "ring", "constraint": 0.5, "steps": 168}}
# flags of one domain only: (argparse dest, flag)
DR_ONLY = (("start_hour", "--start-hour"), ("double_demand", "--double-demand"), ("policy", "--policy"),
           ("shards", "--shards"), ("address", "--address"))
EV_ONLY = (("start_day", "--start-day"), ("split", "--split"), ("ports", "--ports"), ("limit", "--limit"))


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = DualConfig()
    parser.add_argument("--domain", choices=DOMAINS, default="demand_response",
                        help="demand_response (the paper's buildings, default) or ev_charging (charging sites under a "
                             "shared transformer cap, shipped EV policies)")
    parser.add_argument("--agents", type=int, default=None, help="number of agents (default 7; EV: 10 sites)")
    parser.add_argument("--graph", default=None, help="communication graph (ring, line, two_clusters, erdos_renyi, random_geometric, small_world, ...; default two_clusters, EV: ring)")
    parser.add_argument("--constraint", type=float, default=None, help="grid limit as a fraction of the aggregate peak (default 0.27; EV: the cap as a fraction of the uncontrolled peak, default 0.5)")
    parser.add_argument("--steps", type=int, default=None, help="hours to execute (default 3000; EV: 168)")
    parser.add_argument("--start-hour", type=int, default=None, help="first data hour (default 0; training hours are [0, 3000); 3000+ is held out). Demand response only")
    ev = parser.add_argument_group("EV charging (--domain ev_charging; docs/ev_charging.md)")
    ev.add_argument("--start-day", type=int, default=None,
                    help="first day (day index, day 0 = 2015-01-02; default the split's first day)")
    ev.add_argument("--split", default=None, help="day window: train (2023), test (2024, default) or all")
    ev.add_argument("--ports", type=int, default=None, help="ports per site (default 4, the shipped policies')")
    ev.add_argument("--limit", default=None,
                    help="the global constraint: peak (default: the cap c x P in every hour, judged by the average "
                         "hourly overload), hourly (the cap times the evening profile) or average (the week's "
                         "average load at most c x P)")
    parser.add_argument("--consensus-rounds", type=int, default=defaults.rounds, help="L consensus rounds per step; 0 = no consensus")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="dual step size on lambda")
    parser.add_argument("--eps", type=float, default=defaults.eps, help="consensus step size in (0, 1]")
    parser.add_argument("--eta", type=float, default=defaults.eta, help="dual step size on nu")
    parser.add_argument("--lambda-range", type=float, nargs=2, metavar=("LO", "HI"),
                        default=(defaults.lambda_min, defaults.lambda_max),
                        help="projection range of lambda (default 0 15); observations stay normalised by the training range")
    parser.add_argument("--nu-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                        help="projection range of nu (default -20 20; EV: -20 0); e.g. -15 15 shows the paper's "
                             "no-consensus failure")
    parser.add_argument("--weights", choices=CONSENSUS_WEIGHTS, default=defaults.weights,
                        help="consensus matrix: random_walk (the paper's D^-1 A; enforces the degree-weighted "
                             "constraint) or metropolis (Metropolis-Hastings; enforces the plain average). "
                             "Default random_walk")
    parser.add_argument("--dual-period", type=int, default=defaults.update_period, help="dual update every k steps")
    comm = parser.add_argument_group("communication models (docs/model.md, 'Faulty communication'; all off by default)")
    comm.add_argument("--delay", type=int, default=defaults.delay, metavar="D",
                      help="neighbours' multipliers arrive D hours late (default 0)")
    comm.add_argument("--delay-random", action="store_true",
                      help="each message's delay is uniform in 0..D hours instead of exactly D")
    comm.add_argument("--message-loss", type=float, default=defaults.message_loss, metavar="P",
                      help="each message is lost with probability P (default 0)")
    comm.add_argument("--loss-mode", choices=("hold", "drop"), default=defaults.loss_mode,
                      help="hold: use the last value received from a neighbour (default); drop: only this round's "
                           "arrivals; weights renormalised over the contributing neighbours either way")
    comm.add_argument("--edge-up", type=float, default=defaults.edge_up, metavar="Q",
                      help="each link is up with probability Q each hour (default 1: fixed graph)")
    comm.add_argument("--graph-redraw", type=int, default=defaults.graph_redraw, metavar="K",
                      help="redraw the graph from its random family every K hours (default 0: never)")
    comm.add_argument("--update-prob", type=float, default=defaults.update_prob, metavar="R",
                      help="each agent performs its dual update with probability R each hour (default 1)")
    comm.add_argument("--agent-period-max", type=int, default=defaults.agent_period_max, metavar="M",
                      help="agent i updates every T_i hours, T_i uniform in 1..M at a random phase (default 1)")
    comm.add_argument("--async-catch-up", action="store_true",
                      help="an agent that wakes applies the dual steps it missed (signals summed) instead of one "
                           "step on their mean")
    comm.add_argument("--quantize-bits", type=int, default=defaults.quantize_bits, metavar="B",
                      help="multipliers sent with B bits over the lambda range (default 0: exact)")
    comm.add_argument("--comm-seed", type=int, default=defaults.comm_seed,
                      help="seed of the communication models' random draws (default 0)")
    parser.add_argument("--double-demand", default=None,
                        help="comma-separated agent indices with double demand (default: the paper's, agents 0 and ceil(N/2))")
    parser.add_argument("--policy", action="append", default=[], metavar="SCALE=PATH",
                        help="use a checkpoint for the agents of a demand scale, e.g. 2.0=runs/train/policy.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record-agents", type=int, default=1000, help="agents whose lambda/nu trajectories are stored")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/run_<agents>_<graph>_c<constraint>_L<rounds>)")
    parser.add_argument("--no-progress", action="store_true")
    dist = parser.add_argument_group("distributed execution on Ray (algorithms/shards.py; needs the [scale] extra)")
    dist.add_argument("--shards", type=int, default=None, metavar="K",
                      help="split the agents over K Ray actors (1 <= K <= agents); each hour the shards exchange only "
                           "the multipliers on cut edges. Without --address, K actors run on this machine. "
                           "With every communication fault off the results are bit-identical to the default run")
    dist.add_argument("--address", default=None, metavar="ADDR",
                      help="an existing Ray cluster (ray.init address, e.g. auto or ray://head:10001); needs --shards")


def _demand_scales(spec: str | None, n: int):
    if spec is None:
        return None
    scales = [1.0] * n
    for token in filter(None, (t.strip() for t in spec.split(","))):
        try:
            i = int(token)
        except ValueError:
            raise SystemExit(f"cmarl run: --double-demand {spec!r}: {token!r} is not an agent index; "
                             f"give comma-separated integers in 0..{n - 1}") from None
        if not 0 <= i < n:
            raise SystemExit(f"cmarl run: --double-demand index {i} is out of range; allowed 0..{n - 1}")
        scales[i] = 2.0
    return tuple(scales)


def _policies(specs: list[str], config: ExecutionConfig):
    """``--policy SCALE=PATH`` options as {scale: AugmentedPolicy}: the scale must be one the run's agents have and
    the checkpoint must have been trained for it; observation layout, multiplier ranges and dataset are checked
    against the run's environment before it starts (``algorithms.execute.policies_for``)."""
    if not specs:
        return None
    from cmarl_env.config import paper_demand_scales

    given = config.demand_scales
    run_scales = sorted({float(v) for v in (paper_demand_scales(config.n_agents) if given is None else
                                            (given if isinstance(given, tuple) else (given,)))})
    from algorithms.policy import CheckpointError, load_policy, parse_scale

    out = {}
    for spec in specs:
        scale, _, path = spec.partition("=")
        if not path or not scale:
            raise SystemExit(f"cmarl run: --policy {spec!r} must look like SCALE=PATH, e.g. 2.0=runs/train/policy.pt")
        try:
            value = parse_scale(scale)
        except ValueError as err:
            raise SystemExit(f"cmarl run: --policy {spec!r}: {err}") from None
        if value not in run_scales:
            raise SystemExit(f"cmarl run: --policy {spec!r}: no agent has demand scale {value:g}; the run's demand "
                             f"scales are {run_scales} (see --double-demand)")
        if value in out:
            raise SystemExit(f"cmarl run: --policy gives demand scale {value:g} twice; give one checkpoint per scale")
        try:
            out[value] = load_policy(path, demand_scale=value)
        except (CheckpointError, ValueError) as err:
            raise SystemExit(f"cmarl run: --policy {spec!r}: {err}") from None
    return out


def _resolve(args: argparse.Namespace) -> None:
    """Fill the per-domain defaults; a flag of the other domain is refused naming it and what is allowed."""
    ev = args.domain == "ev_charging"
    wrong = [(dest, flag) for dest, flag in (DR_ONLY if ev else EV_ONLY) if getattr(args, dest) not in (None, [])]
    if wrong:
        flags = ", ".join(flag for _, flag in wrong)
        own = ", ".join(flag for _, flag in (EV_ONLY if ev else DR_ONLY))
        raise SystemExit(f"cmarl run: {flags}: not used by --domain {args.domain}; its domain-specific flags are "
                         f"{own} (the shared ones: --agents --graph --constraint --steps, the dual and "
                         "communication flags, --seed --record-agents --out)")
    for key, value in DOMAIN_DEFAULTS[args.domain].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not ev:
        if args.start_hour is None:
            args.start_hour = 0
        if args.nu_range is None:
            args.nu_range = (DualConfig().nu_min, DualConfig().nu_max)


def run(args: argparse.Namespace) -> int:
    from cmarl_env.records import FolderLock, FolderLockedError, OutputPathError, check_output_dir

    _resolve(args)
    if args.domain == "ev_charging":
        return _run_ev(args)
    _check_distributed(args)
    suffix = ("" if args.weights == "random_walk" else f"_{args.weights}") + _comm_suffix(args)
    out = args.out or Path("runs") / f"run_{args.agents}_{args.graph}_c{args.constraint:g}_L{args.consensus_rounds}{suffix}"
    try:
        check_output_dir(out, "--out")  # before any work: an existing file or a read-only folder is refused now
        dual = DualConfig(alpha=args.alpha, eps=args.eps, eta=args.eta, rounds=args.consensus_rounds,
                          update_period=args.dual_period, lambda_min=args.lambda_range[0], lambda_max=args.lambda_range[1],
                          nu_min=args.nu_range[0], nu_max=args.nu_range[1], weights=args.weights,
                          delay=args.delay, delay_random=args.delay_random, message_loss=args.message_loss,
                          loss_mode=args.loss_mode, edge_up=args.edge_up, graph_redraw=args.graph_redraw,
                          update_prob=args.update_prob, agent_period_max=args.agent_period_max,
                          async_catch_up=args.async_catch_up,
                          quantize_bits=args.quantize_bits, comm_seed=args.comm_seed)
        config = ExecutionConfig(
            n_agents=args.agents, graph=args.graph, constraint=args.constraint, steps=args.steps,
            start_hour=args.start_hour, demand_scales=_demand_scales(args.double_demand, args.agents),
            dual=dual, seed=args.seed, record_agents=args.record_agents,
        )
        policies = _policies(args.policy, config)
        with FolderLock(out, "run folder"):  # a second `cmarl run --out` on the same folder is refused
            if args.shards is None:
                result = run_execution(config, policies, progress=not args.no_progress)
            else:
                from algorithms.shards import run_sharded

                result = run_sharded(config, args.shards, policies, address=args.address,
                                     progress=not args.no_progress)
            write_run(result, out)
    except (ValueError, FolderLockedError) as err:
        raise SystemExit(f"cmarl run: {_one_line(err)}") from None
    except OSError as err:  # a folder made read-only during the run, a full disk, ...
        raise SystemExit(f"cmarl run: cannot write the run folder {str(out)!r}: {err}") from None
    m = result.metrics
    print(f"avg total grid use {m['avg_grid_consumption']:.3f} kWh vs limit {m['grid_limit']:.3f} kWh "
          f"({100 * m['avg_grid_consumption'] / m['grid_limit']:.1f} %)")
    print(f"final backlog {m['final_backlog_kwh']:.2f} kWh, slope {m['backlog_slope_kwh_per_step']:+.4f} kWh/step, "
          f"lambda spread {m['lambda_spread_final']:.3f}, total cost {m['total_cost']:.2f}")
    print(f"{m['agent_steps_per_s']:,.0f} agent-steps/s; run folder: {out}")
    if "sharding" in result.facts:
        sh = result.facts["sharding"]
        print(f"{sh['shards']} shards, {sh['cut_edges']} cut edges: {1e3 * sh['per_hour_s']:.2f} ms/hour, "
              f"{100 * sh['exchange_share']:.0f} % outside the shards' compute (exchange)")
    print(json.dumps({k: v for k, v in m.items() if k != "lambda_final"}))
    return 0


def _check_distributed(args: argparse.Namespace) -> None:
    """``--shards`` / ``--address``: one-line errors naming the bad value and what is allowed."""
    if args.address is not None and args.shards is None:
        raise SystemExit(f"cmarl run: --address {args.address!r} needs --shards K (the number of Ray actors)")
    if args.shards is None:
        return
    if args.agents < 1:
        return  # ExecutionConfig names the bad --agents
    if not 1 <= args.shards <= args.agents:
        raise SystemExit(f"cmarl run: --shards {args.shards} is out of range; allowed 1..{args.agents} "
                         f"(at least one agent per shard, --agents {args.agents})")
    if args.graph_redraw > 0:
        raise SystemExit(f"cmarl run: --graph-redraw {args.graph_redraw} is not supported with --shards "
                         "(the cut between shards would change at every redraw); allowed: --graph-redraw 0")
    if args.address is not None and not args.address.strip():
        raise SystemExit("cmarl run: --address '' is empty; give a Ray address such as auto or ray://head:10001")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit("cmarl run: --shards needs Ray; install the [scale] extra (pip install 'cmarl-env[scale]')") from None


def _comm_suffix(args: argparse.Namespace) -> str:
    """The communication models that are on, for the default run folder name (e.g. ``_p0.3_d2``)."""
    parts = [(args.delay > 0, f"d{args.delay}" + ("r" if args.delay_random else "")),
             (args.message_loss > 0, f"p{args.message_loss:g}" + ("drop" if args.loss_mode == "drop" else "")),
             (args.edge_up < 1, f"q{args.edge_up:g}"), (args.graph_redraw > 0, f"k{args.graph_redraw}"),
             (args.update_prob < 1, f"r{args.update_prob:g}" + ("c" if args.async_catch_up else "")),
             (args.agent_period_max > 1, f"T{args.agent_period_max}"),
             (args.quantize_bits > 0, f"b{args.quantize_bits}")]
    return "".join(f"_{text}" for on, text in parts if on)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


@dataclass(frozen=True)
class EVRunConfig(ConfigBase):
    """What an EV ``cmarl run`` executed (``config.json``): the scenario, Algorithm 1's settings, the roll-out."""

    domain: str
    ev: Any
    dual: DualConfig
    start_day: int
    steps: int
    seed: int
    policies: dict = field(default_factory=dict)


def _dual_ev(args: argparse.Namespace) -> DualConfig:
    """The run's DualConfig on EV: the domain's dual defaults (nu <= 0), the flags on top."""
    from cmarl_env.domains import get_domain

    base = DualConfig(**get_domain("ev_charging").dual_defaults)
    nu = args.nu_range if args.nu_range is not None else (base.nu_min, base.nu_max)
    return DualConfig(alpha=args.alpha, eps=args.eps, eta=args.eta, rounds=args.consensus_rounds,
                      update_period=args.dual_period, lambda_min=args.lambda_range[0], lambda_max=args.lambda_range[1],
                      nu_min=nu[0], nu_max=nu[1], weights=args.weights, delay=args.delay,
                      delay_random=args.delay_random, message_loss=args.message_loss, loss_mode=args.loss_mode,
                      edge_up=args.edge_up, graph_redraw=args.graph_redraw, update_prob=args.update_prob,
                      agent_period_max=args.agent_period_max, async_catch_up=args.async_catch_up,
                      quantize_bits=args.quantize_bits, comm_seed=args.comm_seed)


def _run_ev(args: argparse.Namespace) -> int:
    """``cmarl run --domain ev_charging``: Algorithm 1 with the shipped EV policies through the one roll-out loop."""
    from cmarl_env.records import FolderLock, FolderLockedError, check_output_dir

    suffix = ("" if args.weights == "random_walk" else f"_{args.weights}") + _comm_suffix(args)
    out = args.out or Path("runs") / (f"run_ev_{args.agents}_{args.graph}_c{args.constraint:g}_L{args.consensus_rounds}"
                                      f"{suffix}")
    try:
        check_output_dir(out, "--out")
        from algorithms.execute import INFERENCE_CHUNK, DualConsensusController
        from algorithms.policy import shipped_ev_policies
        from cmarl_env.domains.ev_charging.config import SPLITS, EVConfig
        from cmarl_env.domains.ev_charging.core import EVChargingCore
        from cmarl_env.evaluation import rollout

        extra = {k: getattr(args, k) for k in ("split", "ports", "limit") if getattr(args, k) is not None}
        split = extra.get("split", "test")
        lo = EVConfig(split=split).day_window[0] if split in SPLITS else None
        day = args.start_day if args.start_day is not None else lo
        ev = EVConfig(**(extra | {"split": split}), n_agents=args.agents, constraint_fraction=args.constraint,
                      episode_length=args.steps, start_day=day, seed=args.seed, graph=args.graph, augment=True)
        dual = _dual_ev(args)
        core = EVChargingCore(ev)
        _, policies, source = shipped_ev_policies(core, chunk_size=INFERENCE_CHUNK)
        config = EVRunConfig("ev_charging", ev, dual, int(core.calibration_day), args.steps, args.seed, source)
        controller = DualConsensusController(dual, policies, record_agents=args.record_agents)
        with FolderLock(out, "run folder"):
            result = rollout(controller, core, config.start_day, args.steps, seed=args.seed,
                             progress=not args.no_progress)
            metrics = result.metrics() | {"agent_steps_per_s": core.n_agents * args.steps
                                          / max(result.wall_time_s, 1e-12)}
            facts = core.describe() | controller.facts()
            write_run(ExecutionResult(config, metrics, result.trajectories(), facts), out)
    except (ValueError, TypeError, FolderLockedError) as err:
        raise SystemExit(f"cmarl run: {_one_line(err)}") from None
    except OSError as err:
        raise SystemExit(f"cmarl run: cannot write the run folder {str(out)!r}: {err}") from None
    m = metrics
    verdict = "feasible" if m["feasible"] else f"infeasible ({m['infeasible_reason']})"
    print(f"average load {m['energy_kwh'] / m['steps']:.3f} kWh/h vs cap {core.grid_limit:.3f} kWh/h "
          f"({core.config.limit} limit); average overload {100 * m['overload_ratio']:.2f} % of the limit, "
          f"peak {m['peak_ratio']:.2f} x limit")
    print(f"unmet {m['unmet_kwh']:.2f} kWh ({100 * m['unmet_fraction']:.2f} % of requested), energy cost "
          f"{m['energy_cost']:.2f} EUR, total cost {m['total_cost']:.2f} EUR, lambda spread "
          f"{m['lambda_spread_final']:.3f}; {verdict}")
    print(f"{m['agent_steps_per_s']:,.0f} agent-steps/s; run folder: {out}")
    print(json.dumps({k: v for k, v in m.items() if k != "lambda_final"}))
    return 0
