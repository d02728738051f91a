"""``python -m cmarl_env.domains.ev_charging``: the references on one scenario, and where its constraint binds.

Prints the binding range (LP frontier, uncontrolled threshold) of the
scenario's episode under its limit variant (``--limit``: every value of
``EVConfig.limit``) and one line per reference controller (uncontrolled,
least-laxity-first, the clairvoyant LP with and without the cap) on the
same cars: energy cost, unmet and pending energy, total cost, peak over the
limit, overload (of the average with ``--limit average``), feasibility.
"""

from __future__ import annotations

import argparse
import sys

from cmarl_env.domains.ev_charging.config import LIMITS, SPLITS, EVConfig
from cmarl_env.domains.ev_charging.core import EVChargingCore
from cmarl_env.domains.ev_charging.references import ClairvoyantLP, LeastLaxityFirst, Uncontrolled, binding_range
from cmarl_env.evaluation import rollout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="sites")
    p.add_argument("--ports", type=int, default=4)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--c", type=float, default=0.5, help="constraint fraction of the uncontrolled peak")
    p.add_argument("--limit", default="peak", choices=LIMITS,
                   help="the global constraint's variant (EVConfig.limit; docs/ev_charging.md)")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--start-day", type=int, default=None, help="day index (default: the split's first day)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    cfg = EVConfig(n_agents=a.n, ports=a.ports, episode_length=24 * a.days, constraint_fraction=a.c,
                   limit=a.limit, split=a.split, start_day=a.start_day, seed=a.seed)
    core = EVChargingCore(cfg)
    day = core.calibration_day
    core.reset(seed=a.seed, start_day=day)
    frontier, threshold = binding_range(core)
    print(f"{a.n} sites x {a.ports} ports, {a.days} days from day {day}, seed {a.seed}, limit {a.limit}: "
          f"uncontrolled peak {core.peak_uncontrolled:.1f} kWh/h, cap c = {a.c} -> {core.grid_limit:.1f} kWh/h")
    print(f"binding range: LP frontier c = {frontier:.3f}, uncontrolled breaks the rule below c = {threshold:.3f}"
          f" -> c = {a.c} {'binds' if frontier <= a.c < threshold else 'does NOT bind'}")
    print(f"{'controller':<14} {'energy EUR':>10} {'unmet kWh':>10} {'pending kWh':>11} {'total EUR':>10} "
          f"{'peak/limit':>10} {'overload':>9} {'feasible':>8}")
    for controller in (Uncontrolled(), LeastLaxityFirst(), ClairvoyantLP(), ClairvoyantLP(limit=False)):
        r = rollout(controller, core, day, seed=a.seed)
        m = r.metrics()
        print(f"{m['controller']:<14} {m['energy_cost']:>10.2f} {m['unmet_kwh']:>10.1f} {m['pending_kwh']:>11.1f} "
              f"{m['total_cost']:>10.2f} {m['peak_ratio']:>10.3f} {m['overload_ratio']:>9.4f} {str(m['feasible']):>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
