"""EV-charging core throughput and memory, up to N = 1,000,000 sites.

``python -m benchmarks.ev_throughput`` runs each N in a fresh process (so the
peak resident memory is that N's alone) and prints one line per N: build time
(including the calibration run of uncontrolled charging over the episode),
reset time, seconds per step and site-steps per second with uniformly random
port actions, the core's port and observation arrays in MB and the process's
peak RSS. ``--json`` adds one JSON object as the last line.
Defaults: N = 1e3, 1e4, 1e5, 1e6; 4 ports; 24-hour episodes; 24 timed steps.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def measure(n: int, ports: int, hours: int) -> dict:
    from cmarl_env.domains.ev_charging.config import EVConfig
    from cmarl_env.domains.ev_charging.core import EVChargingCore

    t0 = time.perf_counter()
    core = EVChargingCore(EVConfig(n_agents=n, ports=ports, episode_length=hours))
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    core.reset(seed=1)
    reset = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    actions = rng.random((n, ports))
    t0 = time.perf_counter()
    for _ in range(hours):
        core.step(actions)
    per_step = (time.perf_counter() - t0) / hours
    s = core.state
    port_mb = sum(a.nbytes for a in (s.arr, s.dep, s.req, s.pmax, s.rem, s.delivered)) / 2**20
    obs_mb = core.observe().nbytes / 2**20
    return {"n": n, "ports": ports, "build_s": build, "reset_s": reset, "step_s": per_step,
            "site_steps_per_s": n / per_step, "port_arrays_mb": port_mb, "obs_mb": obs_mb,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="*", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--ports", type=int, default=4)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single is not None:
        print(json.dumps(measure(args.single, args.ports, args.hours)))
        return 0
    rows = []
    print(f"{'N':>9} {'build s':>8} {'reset s':>8} {'step s':>8} {'site-steps/s':>13} {'ports MB':>9} "
          f"{'obs MB':>7} {'peak RSS MB':>12}")
    for n in args.n:
        out = subprocess.run([sys.executable, "-m", "benchmarks.ev_throughput", "--single", str(n), "--ports",
                              str(args.ports), "--hours", str(args.hours)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{r['n']:>9,} {r['build_s']:>8.2f} {r['reset_s']:>8.3f} {r['step_s']:>8.4f} "
              f"{r['site_steps_per_s']:>13,.0f} {r['port_arrays_mb']:>9.1f} {r['obs_mb']:>7.1f} {r['peak_rss_mb']:>12.0f}")
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
