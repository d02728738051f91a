"""One grid-limit definition: ``cmarl run``, ``cmarl oracle`` (and a grid-search point) with the same flags report the
same ``grid_limit``, c times the aggregate peak over exactly the evaluated hours [start, start + steps)."""

import json

import numpy as np
import pytest

from benchmarks.cli import main
from cmarl_env.core import DemandResponseCore
from cmarl_env.evaluation import evaluation_config

CASES = [
    # agents, constraint, start hour, steps, seed, oracle split
    (7, 0.27, 0, 200, 0, "train"),
    (12, 0.3, 1000, 100, 1, "train"),
    (7, 0.2, 4000, 96, 0, "test"),
]


def run_limit(tmp_path, agents, constraint, start, steps, seed) -> float:
    out = tmp_path / "run"
    assert main(["run", "--agents", str(agents), "--constraint", str(constraint), "--start-hour", str(start),
                 "--steps", str(steps), "--seed", str(seed), "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "metrics.json").read_text())["grid_limit"]


def oracle_limit(capsys, agents, constraint, start, steps, seed, split) -> dict:
    capsys.readouterr()
    assert main(["oracle", "--agents", str(agents), "--constraint", str(constraint), "--start-hour", str(start),
                 "--steps", str(steps), "--seed", str(seed), "--split", split, "--no-reference", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("agents, constraint, start, steps, seed, split", CASES)
def test_run_and_oracle_report_the_same_grid_limit(tmp_path, capsys, dataset, agents, constraint, start, steps, seed,
                                                   split):
    from_run = run_limit(tmp_path, agents, constraint, start, steps, seed)
    record = oracle_limit(capsys, agents, constraint, start, steps, seed, split)
    assert record["grid_limit"] == from_run
    assert record["grid_limit_hours"] == [start, start + steps]
    # ... which is c x the peak of the aggregate demand over exactly the evaluated hours
    core = DemandResponseCore(evaluation_config(n_agents=agents, constraint=constraint, start_hour=start, steps=steps,
                                                n_hours=dataset.n_steps, seed=seed), dataset)
    assert core.window == (start, start + steps)
    assert from_run == pytest.approx(constraint * core.aggregate_demand.max(), rel=1e-12)
    assert record["peak_demand"] == pytest.approx(core.aggregate_demand.max(), rel=1e-12)


def test_the_window_is_the_evaluated_hours_not_a_longer_one(tmp_path, capsys, dataset):
    """The issue's case: --steps 200 used to get the peak over 3,000 hours (8.214) in the oracle, 6.578 in run."""
    from_run = run_limit(tmp_path, 7, 0.27, 0, 200, 0)
    record = oracle_limit(capsys, 7, 0.27, 0, 200, 0, "train")
    assert from_run == record["grid_limit"] == pytest.approx(6.578, abs=1e-3)
    long = DemandResponseCore(evaluation_config(n_agents=7, constraint=0.27, start_hour=0, steps=3000,
                                                n_hours=dataset.n_steps), dataset)
    assert long.grid_limit == pytest.approx(8.214, abs=1e-3) and not np.isclose(long.grid_limit, from_run)


def test_a_grid_search_point_uses_the_same_limit(tmp_path, dataset):
    from baselines.grid_search import GridSearchConfig, evaluate_point

    from_run = run_limit(tmp_path, 7, 0.27, 0, 200, 0)
    point = evaluate_point(GridSearchConfig(method="augmented", eval_steps=200, start_hour=0, constraint=0.27),
                           8.0, -8.0, data=dataset)
    assert point.grid_limit == from_run and point.metrics()["grid_limit"] == from_run
