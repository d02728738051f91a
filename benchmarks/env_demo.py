"""``cmarl env-demo``: one episode of the paper scenario under simple controllers.

Writes ``episode.png`` (grid use against the limit, backlog, state of charge)
and ``summary.md`` / ``summary.csv`` (cost, average grid use, final backlog per
controller) into the output folder.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from cmarl_env.core import DemandResponseCore
from cmarl_env.data import load_dataset
from cmarl_env.evaluation import Controller, GridOnly, RandomController, ServeAll, evaluation_config, rollout

CONTROLLERS = {"grid only": GridOnly, "serve-all (battery first)": ServeAll, "random": RandomController}


class SocRecorder(Controller):
    """Wraps a controller and records the agents' mean state of charge after every hour (for the plot)."""

    def __init__(self, inner: Controller):
        self.inner, self.name, self.augment = inner, inner.name, inner.augment

    def reset(self, core) -> None:
        super().reset(core)
        self.inner.reset(core)
        self.soc: list[float] = []

    def act(self, obs):
        return self.inner.act(obs)

    def observe(self, step) -> None:
        self.inner.observe(step)
        self.soc.append(float(self.core.soc.mean()))

    def trace(self):
        return {"soc": np.asarray(self.soc)}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=240, help="hours to simulate (default 240)")
    parser.add_argument("--start-hour", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/env_demo"))


def simulate(name: str, steps: int, start_hour: int, seed: int) -> dict:
    """One roll-out of the paper scenario (the one evaluation loop) under the named controller."""
    data = load_dataset()
    core = DemandResponseCore(evaluation_config(n_agents=7, constraint=0.27, start_hour=start_hour, steps=steps,
                                                n_hours=data.n_steps, seed=seed), data)
    ro = rollout(SocRecorder(CONTROLLERS[name]()), core, start_hour, steps)
    return {"grid": ro.total_grid, "backlog": ro.total_backlog, "soc": ro.traces["soc"], "cost": ro.total_cost,
            "limit": ro.grid_limit, "feasible": ro.verdict.feasible}


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cmarl_env.records import OutputPathError, check_output_dir

    try:  # before any work: the output folder, then the hours (the error names start hour, steps and the data)
        check_output_dir(args.out, "--out")
        results = {name: simulate(name, args.steps, args.start_hour, args.seed) for name in CONTROLLERS}
    except (OutputPathError, ValueError) as err:
        raise SystemExit(f"cmarl env-demo: error: {err}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    limit = next(iter(results.values()))["limit"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    for name, r in results.items():
        axes[0].plot(r["grid"], label=name, lw=1)
        axes[1].plot(r["backlog"], label=name, lw=1)
        axes[2].plot(r["soc"], label=name, lw=1)
    axes[0].axhline(limit, color="k", ls="--", lw=1, label="grid limit (27 % of the peak of these hours)")
    axes[0].set_ylabel("total grid use [kWh]")
    axes[1].set_ylabel("total backlog [kWh]")
    axes[2].set_ylabel("mean state of charge")
    axes[2].set_xlabel("hour")
    axes[0].legend(fontsize=8)
    fig.suptitle("7 CityLearn buildings, paper scenario, simple controllers")
    fig.tight_layout()
    figure = args.out / "episode.png"
    fig.savefig(figure, dpi=110)
    rows = [
        {"controller": name, "total_cost": round(r["cost"], 2), "avg_grid_kwh": round(float(r["grid"].mean()), 3),
         "grid_limit_kwh": round(limit, 3), "final_backlog_kwh": round(float(r["backlog"][-1]), 2),
         "feasible": r["feasible"]}
        for name, r in results.items()
    ]
    with open(args.out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"figure: {figure}\ntable:  {args.out / 'summary.md'}")
    return 0
