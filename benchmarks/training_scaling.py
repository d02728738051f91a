"""Training cost vs number of agents: CTDE baselines against the consensus method's training.

``python -m benchmarks.training_scaling --json`` measures, for N = 7, 14, 28,
56, 112 agents, the seconds per training iteration and the peak resident
memory of MAPPO, MADDPG, MASAC and the learned-multiplier baselines MAPPO-L and
networked primal-dual (``baselines.marl``) and of the consensus
method's training (state-augmented PPO on the batched single-agent view, built
from ``algorithms.train`` - ``TrainConfig``, ``BatchedEnv`` copies,
``TianshouBatchedEnv``, ``make_networks``, ``make_ppo``). Its last
stdout line is one JSON object::

    {method: {"agents": [...], "seconds_per_iteration": [...], "peak_rss_mb": [...],
              "start_rss_mb": [...], "stopped": null | "reason", "source": ...}, "_settings": {...}}

Definitions
-----------
* One training iteration = one collect of the same amount of experience for
  every method, ``--collect-steps`` (default 80) hours of the N-agent
  scenario, i.e. 80 * N agent transitions, followed by one update, exactly as
  Tianshou's trainers do it:
  - MAPPO and the consensus method (PPO): one pass over the collected
    80 * N samples in minibatches of ``--batch-size`` (256). MAPPO collects one
    scenario copy (N agent slots); MAPPO-L and networked PD likewise, plus their
    dual step and three critics (MAPPO-L's on the O(N) global state, networked
    PD's on the neighbourhood of the ``--graph`` family, default small_world,
    whose degree does not grow with N); the consensus method collects N independent
    single-agent copies of one agent type (its training never sees the joint
    system; one type's cost - the other type's is the same).
  - MADDPG and MASAC: ``--gradient-steps`` (default 40 = 0.5 per hour
    collected) minibatches of ``--batch-size`` joint transitions sampled from
    a replay buffer of ``--buffer-size`` (10,000) joint transitions, prefilled
    with one random collect (not timed).
  The reported value is the mean over ``--iterations`` (3) iterations after
  ``--warmup`` (1) untimed iteration(s).
* Peak memory = ``ru_maxrss`` of a fresh process per measurement: a child
  forked from a parent that has only imported the stack, compiled Tianshou's
  numba helpers and loaded the dataset (the numba compilation, about 15 s,
  is paid once). Every child starts from about the same resident memory
  (``start_rss_mb``, the child's RSS right after the fork; shared library
  pages count only once touched, so it is below the parent's
  ``parent_rss_mb``); the increase over it is what the method itself needs.
* Budgets: a method stops at the first N where one iteration runs longer
  than ``--budget-s`` (default 30 s; the child interrupts it with SIGALRM),
  the mean exceeds it, or the peak memory exceeds ``--memory-mb`` (default
  4096 MB); a child that outlives its set-up plus iteration allowance is
  killed. Larger N are then skipped and the reason is recorded in
  ``stopped`` (the over-budget N itself has no data point).

The default run takes a few minutes on a 2-core laptop-class CPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import signal
import sys
import time
import traceback
from typing import Any

import numpy as np

DEFAULT_AGENTS = (7, 14, 28, 56, 112)
METHODS = ("mappo", "maddpg", "masac", "mappo_lagrangian", "networked_pd", "consensus")


def _rss_mb() -> float:
    """Peak resident memory of this process so far [MB]."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    """Current resident memory [MB] (what a forked child starts from)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _rss_mb()


class BudgetExceeded(Exception):
    """An iteration ran longer than the per-iteration budget."""


def _prewarm() -> Any:
    """Import the stack, compile Tianshou's numba helpers once, load the dataset (inherited by forked children)."""
    import torch
    from tianshou.algorithm.algorithm_base import Policy
    from tianshou.data import VectorReplayBuffer

    from cmarl_env.data import load_dataset

    torch.set_num_threads(1)
    Policy._compile()
    VectorReplayBuffer(4, 2)
    import baselines.marl.maddpg  # noqa: F401  (the baselines' Tianshou parts)
    import baselines.marl.mappo  # noqa: F401
    import baselines.marl.masac  # noqa: F401
    import baselines.marl.mappo_lagrangian  # noqa: F401
    import baselines.marl.networked_pd  # noqa: F401
    import baselines.marl.training  # noqa: F401
    import algorithms.train  # noqa: F401
    return load_dataset()


# ------------------------------------------------------------------ builders
def _marl_setup(method: str, n: int, args, data):
    from baselines.marl.common import BaselineConfig
    from baselines.marl.training import build, make_collector, make_env

    config = BaselineConfig(
        name=method, n_agents=n, num_envs=1, episode_length=80, rollout_steps=args.collect_steps,
        update_repeats=1, batch_size=args.batch_size, collect_steps=args.collect_steps,
        updates_per_step=args.gradient_steps / args.collect_steps, buffer_size=args.buffer_size, warmup_steps=0,
        seed=args.seed, graph=args.graph,
    )
    env = make_env(config, data)
    built = build(config, env)
    collector = make_collector(config, env, built.algorithm)
    collector.reset()
    factor = n if env.slots else 1
    per_collect = args.collect_steps * factor
    if not config.on_policy:
        collector.collect(n_step=per_collect, random=True)  # prefill (not timed)
    return built.algorithm, collector, per_collect, config.on_policy


def _consensus_setup(n: int, args, data):
    """State-augmented PPO of one agent type on N single-agent copies (algorithms.train)."""
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.data import Collector, VectorReplayBuffer

    from algorithms.train import TianshouBatchedEnv, TrainConfig, make_batched_env, make_networks, make_ppo

    config = TrainConfig(num_envs=n, rollout_steps=args.collect_steps, batch_size=args.batch_size,
                         update_repeats=1, seed=args.seed)
    batched = make_batched_env(config, n, data)
    env = TianshouBatchedEnv(batched, config.resolved_reward_scale, seed=config.seed)
    actor, critic = make_networks(config, batched.core.obs_dim)
    algorithm = make_ppo(actor, critic, AdamOptimizerFactory(lr=config.lr), config,
                         batched.single_action_space, batched.single_observation_space)
    per_collect = n * args.collect_steps
    collector = Collector(algorithm, env, VectorReplayBuffer(per_collect, n), raise_on_nan_in_buffer=False)
    collector.reset()
    return algorithm, collector, per_collect, True, "algorithms.train"


def _iterate(algorithm, collector, per_collect: int, on_policy: bool, args) -> None:
    """One training iteration exactly as Tianshou's On/OffPolicyTrainer performs it: collect, then update."""
    from tianshou.utils.torch_utils import policy_within_training_step

    with policy_within_training_step(algorithm.policy):
        collector.collect(n_step=per_collect)
        if on_policy:
            algorithm.update(buffer=collector.buffer, batch_size=args.batch_size, repeat=1)
            collector.reset_buffer(keep_statistics=True)
        else:
            for _ in range(args.gradient_steps):
                algorithm.update(buffer=collector.buffer, sample_size=args.batch_size)


def _measure(method: str, n: int, args, data, queue) -> None:
    """Child process: build, warm up, time ``args.iterations`` iterations, report seconds and peak RSS."""
    start_rss = _current_rss_mb()
    try:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        t0 = time.perf_counter()
        source = "baselines.marl"
        if method == "consensus":
            algorithm, collector, per_collect, on_policy, source = _consensus_setup(n, args, data)
        else:
            algorithm, collector, per_collect, on_policy = _marl_setup(method, n, args, data)
        setup = time.perf_counter() - t0
        times = []

        def _alarm(signum, frame):
            raise BudgetExceeded(f"an iteration ran longer than the {args.budget_s} s budget")

        signal.signal(signal.SIGALRM, _alarm)
        for i in range(args.warmup + args.iterations):
            t = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, args.budget_s)  # an over-budget iteration is interrupted
            try:
                _iterate(algorithm, collector, per_collect, on_policy, args)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
        queue.put({"ok": True, "seconds_per_iteration": float(np.mean(times)), "timed_iterations": len(times),
                   "setup_s": setup, "peak_rss_mb": _rss_mb(), "start_rss_mb": start_rss, "source": source})
    except BudgetExceeded as err:
        queue.put({"ok": False, "error": str(err), "budget": True, "peak_rss_mb": _rss_mb()})
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        queue.put({"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
                   "peak_rss_mb": _rss_mb()})


def run_one(method: str, n: int, args, data) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(method, n, args, data, queue))
    allowance = args.setup_allowance_s + args.budget_s * (args.warmup + args.iterations) + 30.0
    proc.start()
    try:
        result = queue.get(timeout=allowance)
    except Exception:  # noqa: BLE001 - queue.Empty: the child ran out of time
        result = {"ok": False, "error": f"timed out after {allowance:.0f} s", "timeout": True}
    proc.join(timeout=10)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training_scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only progress (stderr) and the JSON line (stdout)")
    parser.add_argument("--agents", type=int, nargs="+", default=list(DEFAULT_AGENTS), help="agent counts N")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--collect-steps", type=int, default=80, help="hours of experience collected per iteration")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--gradient-steps", type=int, default=40, help="off-policy gradient steps per iteration")
    parser.add_argument("--buffer-size", type=int, default=10_000, help="off-policy replay buffer (joint transitions)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations before timing")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations")
    parser.add_argument("--budget-s", type=float, default=30.0, help="per-iteration time budget [s]")
    parser.add_argument("--memory-mb", type=float, default=4096.0, help="peak memory budget [MB]")
    parser.add_argument("--setup-allowance-s", type=float, default=120.0, help="child set-up time allowance [s]")
    from cmarl_env.graphs import GRAPH_NAMES

    parser.add_argument("--graph", default="small_world", choices=GRAPH_NAMES,
                        help="networked_pd's communication graph family (default small_world: bounded degree)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.agents) < 1 or args.iterations < 1 or args.warmup < 0 or args.collect_steps < 1:
        parser.error("--agents must be >= 1, --iterations >= 1, --warmup >= 0, --collect-steps >= 1")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    start = time.perf_counter()
    data = _prewarm()
    baseline = _current_rss_mb()
    log(f"parent ready in {time.perf_counter() - start:.1f} s, parent RSS {baseline:.0f} MB")
    results: dict[str, Any] = {}
    for method in args.methods:
        rec: dict[str, Any] = {"agents": [], "seconds_per_iteration": [], "peak_rss_mb": [], "start_rss_mb": [],
                               "stopped": None}
        for n in sorted(args.agents):
            out = run_one(method, n, args, data)
            if not out.get("ok"):
                rec["stopped"] = f"N={n}: {out.get('error')}"
                log(f"{method:>16} N={n:>4}: stopped ({out.get('error')})")
                if out.get("traceback"):
                    log(out["traceback"])
                break
            rec["agents"].append(n)
            rec["seconds_per_iteration"].append(round(out["seconds_per_iteration"], 4))
            rec["peak_rss_mb"].append(round(out["peak_rss_mb"], 1))
            rec["start_rss_mb"].append(round(out["start_rss_mb"], 1))
            rec.setdefault("source", out.get("source"))
            log(f"{method:>16} N={n:>4}: {out['seconds_per_iteration']:8.3f} s/iteration, peak RSS "
                f"{out['peak_rss_mb']:7.1f} MB (set-up {out['setup_s']:.1f} s)")
            if out["seconds_per_iteration"] > args.budget_s:
                rec["stopped"] = f"N={n}: {out['seconds_per_iteration']:.1f} s/iteration exceeds the {args.budget_s} s budget"
                break
            if out["peak_rss_mb"] > args.memory_mb:
                rec["stopped"] = f"N={n}: peak RSS {out['peak_rss_mb']:.0f} MB exceeds the {args.memory_mb} MB budget"
                break
        results[method] = rec
    results["_settings"] = {
        "collect_steps": args.collect_steps, "batch_size": args.batch_size, "gradient_steps": args.gradient_steps,
        "buffer_size": args.buffer_size, "warmup": args.warmup, "iterations": args.iterations,
        "budget_s": args.budget_s, "memory_mb": args.memory_mb, "parent_rss_mb": round(baseline, 1),
        "graph": args.graph,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    if not args.json:
        log("")
        log(f"{'method':>16} " + " ".join(f"{'N=' + str(n):>10}" for n in sorted(args.agents)))
        for method in args.methods:
            rec = results[method]
            cells = {n: f"{s:.3f}s" for n, s in zip(rec["agents"], rec["seconds_per_iteration"])}
            log(f"{method:>16} " + " ".join(f"{cells.get(n, '-'):>10}" for n in sorted(args.agents)))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
