"""The fixed penalties the fixed-penalty baselines train with: chosen by this repository's own IPPO grid search.

``selected_penalties.json`` (beside this module) holds, per constraint level, the
pair the faithful IPPO grid search (``baselines.grid_search``) selected: not
degenerate (the reward pays at least the cheapest price for a kWh of grid energy,
``baselines.grid_search.degenerate_reason``), feasible in every roll-out of every
training seed under the one feasibility rule, with the lowest mean cost. It
records the command and the budget that produced it, so a reviewer can rerun the
search and compare. A suite asks for it with the method parameter
``"penalties": "selected"`` instead of ``lambda_`` and ``nu``; a level the file
does not hold is an error naming the levels it does hold.

Write it from a finished search with ``python -m baselines.penalties RESULTS_DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Mapping

SELECTED_FILE = Path(__file__).with_name("selected_penalties.json")
FORMAT = "cmarl-selected-penalties/1"


def load_selected(path: Path | None = None) -> dict[str, Any]:
    path = Path(path or SELECTED_FILE)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist: run the IPPO grid search and `python -m baselines.penalties "
                         "RESULTS_DIR` first") from None
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} has format {data.get('format')!r}; expected {FORMAT!r}")
    return data


def selected_pair(constraint: float, path: Path | None = None) -> tuple[float, float]:
    """The (lambda, nu) the grid search selected at this constraint level."""
    levels = load_selected(path)["levels"]
    for key, entry in levels.items():
        if math.isclose(float(key), float(constraint), rel_tol=0, abs_tol=1e-9):
            if entry is None:
                raise ValueError(f"the IPPO grid search found no feasible pair at c = {constraint:g}; "
                                 "give lambda_ and nu explicitly")
            return float(entry["lambda"]), float(entry["nu"])
    raise ValueError(f"no selected penalty pair for c = {constraint:g}; the grid search selected pairs for "
                     f"c in {sorted(float(k) for k in levels)} ({SELECTED_FILE.name}); give lambda_ and nu explicitly")


def check_penalties(params: Mapping[str, Any]) -> None:
    """A method's ``penalties`` parameter: absent or ``"selected"``, and then without ``lambda_`` / ``nu``."""
    if "penalties" not in params:
        return
    if params["penalties"] != "selected":
        raise ValueError(f"penalties={params['penalties']!r} is not allowed; the only value is \"selected\" (the IPPO "
                         "grid search's pair at the scenario's level); otherwise give lambda_ and nu")
    both = [k for k in ("lambda_", "nu") if k in params]
    if both:
        raise ValueError(f"penalties=\"selected\" sets lambda_ and nu; remove {both}")


def selected_inputs(params: Mapping[str, Any]) -> list[Path]:
    """The file a run with ``penalties="selected"`` reads (for its spec hash): retraining the grid changes it."""
    return [SELECTED_FILE] if params.get("penalties") == "selected" else []


def with_main_level_fallback(selected: Mapping[str, Any], main: float) -> dict[str, Any]:
    """Levels at which no pair passed keep the main level's pair, marked with where it was selected and why: the
    paper's protocol (penalties tuned at one level, then run at others), recorded rather than silent."""
    levels = dict(selected)
    chosen = levels.get(f"{main:g}")
    for key, entry in levels.items():
        if entry is None and chosen is not None:
            levels[key] = dict(chosen) | {
                "selected_at": main,
                "note": (f"no pair that is not degenerate is feasible in every roll-out at c = {key}; the pair "
                         f"selected at the main level c = {main:g}")}
    return levels


def write_selected(results_dir: Path, path: Path | None = None) -> dict[str, Any]:
    """Copy a finished grid search's selected pairs (``summary.json``) with its settings into the shipped file."""
    results_dir = Path(results_dir)
    summary = json.loads((results_dir / "summary.json").read_text())
    config = json.loads((results_dir / "grid_config.json").read_text())
    if summary.get("method") != "ippo":
        raise ValueError(f"{results_dir} holds a {summary.get('method')!r} grid search; the baselines' penalties come "
                         "from the IPPO one")
    if summary["finished"] != summary["points"]:
        raise ValueError(f"{results_dir}: only {summary['finished']} of {summary['points']} points finished; "
                         "finish the search (run the same command again) first")
    command = (f"cmarl grid-search --method ippo --sharing {config['sharing']} "
               f"--lambda-range {config['lambda_min']:g} {config['lambda_max']:g} {config['lambda_step']:g} "
               f"--nu-range {config['nu_min']:g} {config['nu_max']:g} {config['nu_step']:g} "
               f"--train-steps {config['train_steps']} --train-seeds {' '.join(str(v) for v in config['train_seeds'])} "
               f"--eval-steps {config['eval_steps']} --start-hour {config['start_hour']} --rollouts {config['rollouts']} "
               f"--start-jitter {config['start_jitter']} --constraint {config['constraint']:g}"
               + (" --extra-constraints " + " ".join(f"{c:g}" for c in config["extra_constraints"])
                  if config["extra_constraints"] else "")
               + (" --grid-values " + " ".join(f"{v:g}" for v in config["grid_values"])
                  if config.get("grid_values") else "")
               + ("" if config.get("rectangle", True) else " --no-rectangle")
               + f" --agents {config['n_agents']} --seed {config['seed']}")
    data = {"format": FORMAT, "source": str(results_dir), "command": command, "grid_config": config,
            "start_hours": summary["start_hours"], "train_seeds": summary["train_seeds"],
            "levels": with_main_level_fallback(summary["selected"], float(config["constraint"]))}
    target = Path(path or SELECTED_FILE)
    target.write_text(json.dumps(data, indent=1) + "\n")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m baselines.penalties", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="a finished `cmarl grid-search --method ippo` folder")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {SELECTED_FILE}")
    args = parser.parse_args(argv)
    try:
        data = write_selected(args.results_dir, args.out)
    except (ValueError, OSError) as err:
        raise SystemExit(f"python -m baselines.penalties: {err}") from None
    print(json.dumps(data["levels"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
