"""Environment throughput: the vectorized core, the PettingZoo dict API, and CityLearn itself.

``python -m benchmarks.env_throughput --json`` prints a table and, as its last
line, one JSON object with the keys ``core`` and ``parallel_env`` (agent-steps
per second, keyed by N as a string), ``citylearn_native_building_steps_per_s``
and ``core_1e6_peak_rss_mb`` (peak resident memory of a fresh process that
builds and steps a 1,000,000-agent core). Uniformly random actions throughout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _time_loop(step, min_seconds: float, min_steps: int) -> float:
    """Seconds per call of ``step``, timed over at least ``min_seconds`` and ``min_steps`` calls."""
    step()
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= min_steps and elapsed >= min_seconds:
            return elapsed / calls


def core_agent_steps_per_s(n: int, data, seconds: float) -> float:
    from cmarl_env import EnvConfig
    from cmarl_env.core import DemandResponseCore

    # steps far past the 3,000 training hours: the data repeats, explicitly (wrap_data)
    core = DemandResponseCore(EnvConfig(n_agents=n, episode_length=10**6, demand_scales=1.0, wrap_data=True), data)
    core.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = [rng.random((n, 2)) for _ in range(8)]
    k = iter(range(10**12))
    per_step = _time_loop(lambda: core.step(actions[next(k) % 8]), seconds, 20)
    return n / per_step


def parallel_env_agent_steps_per_s(n: int, data, seconds: float) -> tuple[float, float]:
    from cmarl_env import demand_response_v0

    graph = "two_clusters" if n <= 64 else "small_world"
    env = demand_response_v0.parallel_env(data=data, n_agents=n, episode_length=10**6, graph=graph, wrap_data=True)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    batches = [{a: row for a, row in zip(env.possible_agents, rng.random((n, 2), dtype=np.float32))} for _ in range(8)]
    k = iter(range(10**12))
    per_step = _time_loop(lambda: env.step(batches[next(k) % 8]), seconds, 20)
    return n / per_step, 1.0 / per_step


def citylearn_building_steps_per_s(data, n_buildings: int, steps: int) -> float:
    """CityLearn's own ``CityLearnEnv`` stepping the same buildings with random battery actions.

    Needs the ``[citylearn]`` extra (its own environment: ``make test-citylearn`` builds one); the schema is
    the converted copy of the dataset in the user cache.
    """
    import json as _json
    import logging

    from citylearn.citylearn import CityLearnEnv

    from cmarl_env._citylearn_fetch import ensure_dataset
    from cmarl_env.data import cache_root

    folder = ensure_dataset(data.name, cache_root())
    schema = _json.loads((folder / "schema.json").read_text())
    schema["root_directory"] = str(folder)
    for i, name in enumerate(schema["buildings"]):
        schema["buildings"][name]["include"] = i < n_buildings
    schema["episode_time_steps"] = steps + 1
    schema["simulation_end_time_step"] = steps + 1
    level = logging.getLogger().level
    env = CityLearnEnv(schema, offline=True)
    logging.getLogger().setLevel(level)
    env.reset()
    rng = np.random.default_rng(0)
    space = env.action_space
    start = time.perf_counter()
    for _ in range(steps):
        env.step([rng.uniform(s.low, s.high).tolist() for s in space])
    return n_buildings * steps / (time.perf_counter() - start)


_RSS_CHILD = """
import resource, numpy as np
from cmarl_env import EnvConfig
from cmarl_env.core import DemandResponseCore
core = DemandResponseCore(EnvConfig(n_agents=1_000_000, episode_length=100, demand_scales=1.0))
core.reset(seed=0)
rng = np.random.default_rng(0)
for _ in range(5):
    core.step(rng.random((1_000_000, 2)))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
"""


def core_1e6_peak_rss_mb() -> float:
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing window per figure")
    parser.add_argument("--citylearn-steps", type=int, default=500)
    args = parser.parse_args(argv)

    from cmarl_env.data import load_dataset

    data = load_dataset()
    result: dict = {"core": {}, "parallel_env": {}}
    for n in (7, 1_000, 100_000):
        result["core"][str(n)] = core_agent_steps_per_s(n, data, args.seconds)
        print(f"core            N={n:>7}: {result['core'][str(n)]:>14,.0f} agent-steps/s", flush=True)
    env_steps = {}
    for n in (7, 1_000):
        result["parallel_env"][str(n)], env_steps[n] = parallel_env_agent_steps_per_s(n, data, args.seconds)
        print(f"ParallelEnv     N={n:>7}: {result['parallel_env'][str(n)]:>14,.0f} agent-steps/s "
              f"({env_steps[n]:,.0f} env steps/s)", flush=True)
    result["parallel_env_7_env_steps_per_s"] = env_steps[7]
    try:
        native = citylearn_building_steps_per_s(data, 7, args.citylearn_steps)
    except ModuleNotFoundError as err:
        print(f"CityLearnEnv comparison skipped: {err.name} is not installed (run this script in the environment of "
              "the [citylearn] extra, e.g. .venv-citylearn)", flush=True)
    else:
        result["citylearn_native_building_steps_per_s"] = native
        print(f"CityLearnEnv    7 buildings: {native:>10,.0f} building-steps/s", flush=True)
        result["core_1000_speedup_over_citylearn"] = result["core"]["1000"] / native
        print(f"core N=1000 / CityLearn: {result['core_1000_speedup_over_citylearn']:,.0f}x", flush=True)
    result["core_1e6_peak_rss_mb"] = core_1e6_peak_rss_mb()
    print(f"1,000,000-agent core peak RSS: {result['core_1e6_peak_rss_mb']:,.0f} MB", flush=True)
    result["this_process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
