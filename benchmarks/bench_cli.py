"""``cmarl bench SUITE``: run a benchmark suite through Ray, write the leaderboard and the figures.

SUITE is a shipped suite (the names of ``benchmarks/suites/*.json``: ``quick``,
``paper_main``, ``baselines``, ``dual_steps``, ...) or the path of a suite JSON file (format in
``benchmarks.suite``). Examples::

    cmarl bench quick                                  # local Ray on this machine
    cmarl bench paper --address ray://head:10001 --out results/bench/paper
    cmarl bench quick --max-concurrent 1 --backend serial

Runs are resumable: run the same command again after an interruption and the
finished runs are skipped. The command ends by printing the leaderboard and
the paths of the leaderboard files and figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from benchmarks.suite import SUITES_DIR

    shipped = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.json")))
    parser.add_argument("suite", metavar="SUITE", help=f"shipped suite name ({shipped}) or a JSON path")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (e.g. ray://head:10001 or auto); default: start a local Ray")
    parser.add_argument("--out", default=None, help="results folder (default results/bench/<suite name>)")
    parser.add_argument("--max-concurrent", type=int, default=None, metavar="K",
                        help="runs in flight at once (default: the suite's setting, else CPUs / cpus_per_run)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs for the local Ray instance (default: the suite's setting, else all)")
    parser.add_argument("--backend", choices=("ray", "serial"), default="ray",
                        help="ray (default) or serial (everything in this process, for debugging)")
    parser.add_argument("--no-figures", action="store_true", help="do not draw the figures")
    parser.add_argument("--readme", default=None, metavar="PATH",
                        help="also write the leaderboard into this README between the markers "
                             "<!-- cmarl-leaderboard:start --> and <!-- cmarl-leaderboard:end -->")
    parser.add_argument("--dry-run", action="store_true", help="validate the suite and list the runs; run nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from benchmarks.suite import SuiteError, load_suite

    t0 = time.perf_counter()
    try:
        suite = load_suite(args.suite)
    except SuiteError as err:
        raise SystemExit(f"cmarl bench: error: {err}") from None
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise SystemExit(f"cmarl bench: error: --max-concurrent={args.max_concurrent} must be >= 1")
    if args.num_cpus is not None and args.num_cpus < 1:
        raise SystemExit(f"cmarl bench: error: --num-cpus={args.num_cpus} must be >= 1")
    out = Path(args.out) if args.out else Path("results") / "bench" / suite.name
    from cmarl_env.records import OutputPathError, check_output_dir

    try:  # before any work: an existing file or a folder that cannot be written is refused now
        check_output_dir(out, "--out")
        if args.readme and not args.dry_run:
            _check_readme(args.readme)
    except OutputPathError as err:
        raise SystemExit(f"cmarl bench: error: {err}") from None
    runs = suite.runs()
    if args.dry_run:
        from benchmarks.runner import plan

        todo, done, states = plan(suite, out)
        print(f"suite {suite.name!r} ({suite.source}): {len(runs)} runs, {len(done)} finished in {out}")
        for spec in runs:
            print(f"  {states[spec.run_id]:8s} {spec.run_id}  rollouts={spec.rollouts} steps={spec.scenario.steps} "
                  f"oracle={spec.oracle}")
        return 0
    from benchmarks.runner import run_suite
    from cmarl_env.records import FolderLockedError

    print(f"cmarl bench {suite.name}: {len(runs)} runs -> {out}"
          + (f" on Ray cluster {args.address}" if args.address else f" ({args.backend})"), flush=True)
    try:
        report = run_suite(suite, out, backend=args.backend, address=args.address, num_cpus=args.num_cpus,
                           max_concurrent=args.max_concurrent, progress=not args.quiet)
    except FolderLockedError as err:  # another `cmarl bench` is writing the same --out
        raise SystemExit(f"cmarl bench: error: {err}") from None
    if report.interrupted:
        print(f"interrupted after {len(report.completed)} new run(s); {len(report.pending)} left. "
              f"Run `cmarl bench {args.suite}" + (f" --out {args.out}" if args.out else "") + "` again to resume.")
        return 130
    return finish(out, suite.name, report, t0, figures=not args.no_figures, readme=args.readme)


def _check_readme(path: str) -> None:
    """--readme must be an existing, writable file (checked before the suite runs)."""
    import os

    from cmarl_env.records import OutputPathError

    p = Path(path)
    if not p.is_file():
        raise OutputPathError(f"--readme {path!r} is not an existing file")
    if not os.access(p, os.W_OK):
        raise OutputPathError(f"--readme {path!r} is not writable")


def finish(out: Path, suite_name: str, report, t0: float, *, figures: bool = True, readme: str | None = None) -> int:
    from benchmarks.aggregate import load_aggregate
    from benchmarks.leaderboard import markdown, update_readme, write_leaderboard

    try:
        paths = write_leaderboard(out, suite=suite_name)
    except FileNotFoundError as err:
        print(f"cmarl bench: no leaderboard: {err}", file=sys.stderr)
        return 1
    agg = load_aggregate(out)
    md = markdown(agg, suite_name)
    print()
    print(md)
    if readme:
        if update_readme(readme, md):
            print(f"README leaderboard updated: {readme}")
        else:
            print(f"README {readme} has no leaderboard markers; left unchanged", file=sys.stderr)
    print("leaderboard: " + "  ".join(str(p) for p in paths.values()))
    if figures:
        from benchmarks.figures import make_figures

        for fig in make_figures(out):
            if fig.paths:
                print(f"{fig.name}: " + "  ".join(str(p) for p in fig.paths))
            else:
                print(f"{fig.name}: skipped ({fig.skipped})")
    n_failed = len(report.failed)
    print(f"done: {len(report.completed)} run(s) now, {report.skipped} resumed, {n_failed} failed; "
          f"wall time {time.perf_counter() - t0:.0f} s")
    return 1 if n_failed else 0
