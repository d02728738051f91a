"""The ``cmarl`` command: one entry point, one module per subcommand.

Each subcommand module exposes ``configure(parser)`` (adds its arguments) and
``run(args) -> int``; modules are imported only when their subcommand runs,
so ``cmarl --help`` stays fast and ``cmarl oracle`` does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "env-demo": ("benchmarks.env_demo", "run a short episode, write a figure and a table"),
    "train": ("algorithms.train_cli", "train the state-augmented PPO policy of one agent type"),
    "run": ("algorithms.run_cli", "execute trained policies with distributed dual consensus (Algorithm 1)"),
    "oracle": ("baselines.oracle_cli", "clairvoyant linear program: cost optimum and feasibility frontier"),
    "grid-search": ("baselines.grid_search_cli", "fixed-penalty IPPO grid search over (lambda, nu) on Ray Tune"),
    "train-baseline": ("baselines.train_cli", "train a MARL baseline (MAPPO, MADDPG, MASAC, ISAC; MAPPO-L, networked PD)"),
    "bench": ("benchmarks.bench_cli", "run a benchmark suite and write the leaderboard"),
    "figures": ("benchmarks.figures_cli", "regenerate the paper's figures from a results folder"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {name: entry for name, entry in COMMANDS.items() if importlib.util.find_spec(entry[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmarl", description="Constrained multi-agent demand response with dual consensus.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in _available().items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _available()
    if not argv or argv[0] not in commands:
        parser = build_parser()
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose one of {sorted(commands)}")
        parser.parse_args(argv or ["--help"])
        return 0
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(commands[name][0])
    parser = argparse.ArgumentParser(prog=f"cmarl {name}", description=commands[name][1])
    module.configure(parser)
    return int(module.run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
