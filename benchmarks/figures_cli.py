"""``cmarl figures RESULTS_DIR``: regenerate the paper's Figures 2, 3, 4, A.1, A.2, A.3 from results (PNG + PDF).

Example::

    cmarl figures results/bench/quick
    cmarl figures results/bench/paper --scaling results/bench/scaling --grid-search runs/grid_search

Figures whose data is not in the results are skipped with the reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="a `cmarl bench` results folder")
    parser.add_argument("--out", default=None, help="where to write the figures (default RESULTS_DIR/figures)")
    parser.add_argument("--grid-search", default=None,
                        help="folder of a fixed-multiplier grid search for Figure A.1 (default RESULTS_DIR/grid_search)")
    parser.add_argument("--scaling", default=None,
                        help="results folder of the scaling suite for Figure A.2 (default: RESULTS_DIR itself)")
    parser.add_argument("--only", nargs="+", default=None, metavar="FIGURE",
                        help="draw only these (figure_2 figure_3 figure_4 figure_A1 figure_A2 figure_A3)")


def run(args: argparse.Namespace) -> int:
    from benchmarks.figures import FIGURES, make_figures

    results = Path(args.results_dir)
    if not results.is_dir():
        raise SystemExit(f"cmarl figures: error: RESULTS_DIR {str(results)!r} is not a folder")
    if args.only:
        bad = [f for f in args.only if f not in FIGURES]
        if bad:
            raise SystemExit(f"cmarl figures: error: unknown figure(s) {bad}; choose from {list(FIGURES)}")
    from cmarl_env.records import OutputPathError, check_output_dir

    try:
        check_output_dir(args.out if args.out else results / "figures", "--out")
    except OutputPathError as err:
        raise SystemExit(f"cmarl figures: error: {err}") from None
    out = make_figures(results, args.out, grid_search=args.grid_search, scaling=args.scaling, only=args.only)
    drawn = 0
    for fig in out:
        if fig.paths:
            drawn += 1
            print(f"{fig.name}: " + "  ".join(str(p) for p in fig.paths))
        else:
            print(f"{fig.name}: skipped ({fig.skipped})")
    return 0 if drawn else 1
