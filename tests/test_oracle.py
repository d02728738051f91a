"""The clairvoyant LP: hand-checked tiny instances, the core episode data, the CLI."""

import json
import time

import numpy as np
import pytest
import scipy.sparse as sp

from baselines.oracle import (
    VARIABLES,
    LinearBattery,
    build_lp,
    episode_arrays,
    min_grid_fraction,
    solve_arrays,
    solve_min_cost,
    solve_min_grid,
)
from benchmarks.cli import main as cli_main
from cmarl_env import EnvConfig
from cmarl_env.core import DemandResponseCore
from cmarl_env.evaluation import GridOnly, ServeAll, evaluation_config, is_binding, rollout

NO_BATTERY = LinearBattery(capacity=0.0, power=0.0)
# eta = 0.81: sqrt(eta) = 0.9 each way, so numbers stay hand-checkable
BATTERY = LinearBattery(capacity=10.0, power=5.0, efficiency=0.81)


def test_build_lp_is_sparse_with_the_documented_layout():
    d = np.array([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0]])
    lp = build_lp(d, np.zeros_like(d), [0.1, 0.2, 0.3], BATTERY, limit=2.0)
    n, t = d.shape
    assert sp.issparse(lp.A_eq) and sp.issparse(lp.A_ub)
    assert lp.A_eq.shape == (2 * n * t, len(VARIABLES) * n * t)
    assert lp.A_ub.shape == (n * t + 1, len(VARIABLES) * n * t)
    # balance: 3 non-zeros per row plus the lagged backlog; storage: 3 plus the lagged energy
    assert lp.A_eq.nnz == 2 * (4 * n * t - n)
    assert lp.column("e_grid", 1, 2) == 2 * n * t + 1 * t + 2
    # B_T = 0 by default
    assert lp.bounds[lp.column("backlog", 0, t - 1), 1] == 0.0
    assert lp.bounds[lp.column("backlog", 0, 0), 1] == np.inf


def test_postpones_demand_from_an_expensive_hour_to_a_cheap_one():
    res = solve_arrays([[2.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [0.5, 0.2, 0.4], NO_BATTERY)
    assert res.status == "optimal"
    assert res.min_cost == pytest.approx(0.4)  # all 2 kWh bought at 0.2
    np.testing.assert_allclose(res.e_grid[0], [0.0, 2.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(res.backlog[0], [2.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(res.total_backlog, [2.0, 0.0, 0.0], atol=1e-9)


def test_battery_discharges_at_the_expensive_hour_when_demand_cannot_wait():
    # 3 kWh of solar at hour 0 -> 2.7 kWh stored -> 2.43 kWh deliverable (round trip 0.81)
    demand, solar, price = [[0.0, 2.0, 1.0, 1.0]], [[3.0, 0.0, 0.0, 0.0]], [0.1, 0.5, 0.2, 0.3]
    res = solve_arrays(demand, solar, price, BATTERY, backlog_cap=0.0)
    assert res.status == "optimal"
    # battery covers hour 1 (price 0.5) fully, its last 0.43 kWh go to hour 3 (0.3); hour 2 (0.2) from the grid
    np.testing.assert_allclose(res.e_bat[0], [0.0, 2.0, 0.0, 0.43], atol=1e-9)
    np.testing.assert_allclose(res.e_grid[0], [0.0, 0.0, 1.0, 0.57], atol=1e-9)
    np.testing.assert_allclose(res.stored[0], [2.7, 2.7 - 2.0 / 0.9, 2.7 - 2.0 / 0.9, 0.0], atol=1e-9)
    assert res.min_cost == pytest.approx(0.2 * 1.0 + 0.3 * 0.57)
    # demand may wait: everything the battery cannot cover (1.57 kWh) is bought at 0.2
    free = solve_arrays(demand, solar, price, BATTERY)
    assert free.min_cost == pytest.approx(1.57 * 0.2)
    np.testing.assert_allclose(free.total_grid, [0.0, 0.0, 1.57, 0.0], atol=1e-9)


def test_capacity_holds_after_the_solar_charge():
    # 2 kWh of solar and 2 kWh of demand in the same hour, but only 1 kWh of room: 1 kWh passes through
    battery = LinearBattery(capacity=1.0, power=5.0, efficiency=1.0)
    res = solve_arrays([[2.0]], [[2.0]], [1.0], battery, objective="grid")
    assert res.avg_grid == pytest.approx(1.0)


def test_initial_energy_and_power_limit():
    battery = LinearBattery(capacity=10.0, power=1.0, efficiency=1.0, initial_energy=5.0)
    res = solve_arrays([[3.0, 0.0]], [[0.0, 0.0]], [1.0, 1.0], battery, objective="grid")
    # 1 kWh per step from the battery over two steps (the rest of hour 0 waits), 1 kWh from the grid
    assert res.avg_grid == pytest.approx(0.5)
    np.testing.assert_allclose(res.e_bat[0], [1.0, 1.0], atol=1e-9)


def two_agents():
    demand = [[0.0, 1.0], [1.0, 1.0]]  # aggregate peak 2 kWh
    solar = [[1.0, 0.0], [0.0, 0.0]]
    return demand, solar, [1.0, 2.0]


def test_min_grid_fraction_on_a_tiny_instance():
    demand, solar, _ = two_agents()
    res = solve_arrays(demand, solar, [1.0, 1.0], BATTERY, objective="grid", peak=2.0)
    # 3 kWh of demand, 0.81 kWh from the battery over 2 steps: (3 - 0.81) / 2 = 1.095 kWh/step
    assert res.status == "optimal"
    assert res.avg_grid == pytest.approx(1.095)
    assert res.grid_fraction == pytest.approx(1.095 / 2.0)


def test_global_constraint_binds_and_infeasible_is_reported():
    demand, solar, price = two_agents()
    ok = solve_arrays(demand, solar, price, BATTERY, limit=1.095)
    assert ok.status == "optimal" and ok.avg_grid <= 1.095 + 1e-9
    # agent 0 covers 0.81 of its hour-1 demand from the battery, buys 0.19 at 2; agent 1 buys 1 at 1 and 1 at 2
    assert ok.min_cost == pytest.approx(0.19 * 2 + 1.0 + 2.0)
    bad = solve_arrays(demand, solar, price, BATTERY, limit=1.0)
    assert bad.status == "infeasible"
    assert bad.min_cost is None and bad.e_grid is None
    assert "average total grid use <= 1" in bad.message
    # a backlog cap makes the cheap-hour postponement impossible too
    capped = solve_arrays([[2.0, 0.0]], [[0.0, 0.0]], [1.0, 1.0], NO_BATTERY, limit=0.5, backlog_cap=0.5)
    assert capped.status == "infeasible" and "backlog <= 0.5" in capped.message


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="objective"):
        build_lp([[1.0]], [[0.0]], [1.0], BATTERY, objective="profit")
    with pytest.raises(ValueError, match="solar must have"):
        build_lp([[1.0, 1.0]], [[0.0]], [1.0, 1.0], BATTERY)
    with pytest.raises(ValueError, match="efficiency"):
        build_lp([[1.0]], [[0.0]], [1.0], LinearBattery(1.0, 1.0, efficiency=1.5))
    with pytest.raises(ValueError, match="backlog_cap"):
        build_lp([[1.0]], [[0.0]], [1.0], BATTERY, backlog_cap=-1.0)


@pytest.mark.parametrize("n_agents", [7, 20])
def test_episode_arrays_are_the_core_episode(dataset, n_agents):
    core = DemandResponseCore(EnvConfig(n_agents=n_agents, seed=3), dataset)
    demand, solar, price = episode_arrays(core, 30, 100)
    core.reset(seed=0, start_hour=100)
    rng = np.random.default_rng(0)
    for t in range(30):
        np.testing.assert_array_equal(core.demand, demand[:, t])
        np.testing.assert_array_equal(core.solar, solar[:, t])
        np.testing.assert_array_equal(core.price, price[:, t])
        core.step(rng.random((n_agents, 2)))
    with pytest.raises(ValueError, match="allowed: 1..100"):
        episode_arrays(core, 101, 2900)
    with pytest.raises(ValueError, match="start_hour"):
        episode_arrays(core, 10, 3000)


def test_core_episode_bounds_what_the_environment_achieves(dataset):
    core = DemandResponseCore(EnvConfig(), dataset)
    steps = 200
    frontier = solve_min_grid(core, steps, 0)
    assert frontier.status == "optimal" and 0 < frontier.grid_fraction < 1
    assert min_grid_fraction(core, steps, 0) == pytest.approx(frontier.grid_fraction)
    optimum = solve_min_cost(core, steps, 0, constraint_fraction=1.0)
    assert optimum.status == "optimal"
    assert optimum.min_cost > 0 and optimum.total_grid.shape == (steps,) and optimum.e_grid.shape == (7, steps)
    assert optimum.total_backlog[-1] == pytest.approx(0.0, abs=1e-7)
    # grid-only serves everything at once: never cheaper, never less grid than the oracle
    ref = rollout(GridOnly(), core, 0, steps)
    assert ref.total_cost >= optimum.min_cost
    assert ref.avg_grid >= frontier.avg_grid
    # "battery then grid" without postponement vs the LP with no backlog allowed
    no_wait = solve_min_grid(core, steps, 0, backlog_cap=0.0)
    core.reset(seed=0, start_hour=0)
    grid = sum(core.step(np.ones((7, 2))).signals.e_grid.sum() for _ in range(steps)) / steps
    assert no_wait.avg_grid <= grid + 1e-9
    assert grid <= 1.1 * no_wait.avg_grid  # the relaxation is close on this data
    below = solve_min_cost(core, steps, 0, constraint_fraction=0.9 * frontier.grid_fraction)
    assert below.status == "infeasible" and below.min_cost is None


def _oracle_json(capsys, *argv) -> dict:
    assert cli_main(["oracle", *argv, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) > 1  # human-readable lines first
    return json.loads(lines[-1])


def test_cli_reports_the_evaluation_window_limit_and_references(capsys, dataset):
    """c = 0.33 over hours [0, 200): the LP frontier (0.319) is below it and serve-all (0.336) above: it binds."""
    record = _oracle_json(capsys, "--agents", "7", "--constraint", "0.33", "--steps", "200", "--start-hour", "0")
    core = DemandResponseCore(evaluation_config(n_agents=7, constraint=0.33, start_hour=0, steps=200,
                                                n_hours=dataset.n_steps), dataset)
    # the grid limit is set by the horizon's own hours, as in cmarl run
    assert record["grid_limit"] == pytest.approx(core.grid_limit) and record["grid_limit_hours"] == [0, 200]
    assert record["peak_demand"] == pytest.approx(core.aggregate_demand.max())
    assert record["status"] == "optimal" and record["n_agents"] == 7 and record["steps"] == 200
    assert record["frontier"] == pytest.approx(solve_min_grid(core, 200, 0).grid_fraction, rel=1e-6)
    assert record["frontier_se"] == 0.0 and record["min_grid_fraction"] == record["frontier"]
    assert record["frontier"] < 0.33 < record["serve_all_fraction"] / 1.01
    assert record["binding"] is True == is_binding(0.33, record["frontier"], record["serve_all_fraction"])
    assert record["min_cost"] == pytest.approx(solve_min_cost(core, 200, 0).min_cost, rel=1e-6)
    # reference rows are the one roll-out loop on the same hours; costs relative to the LP
    serve = rollout(ServeAll(), core, 0, 200)
    assert record["serve_all"]["total_cost"] == pytest.approx(serve.total_cost)
    assert record["serve_all_fraction"] == pytest.approx(serve.avg_grid / core.peak_demand)
    assert record["serve_all"]["feasible"] is False and "grid use" in record["serve_all"]["infeasible_reason"]
    for name in ("serve_all", "rule_based", "price_rule", "grid_only"):
        row = record[name]
        assert row["cost_over_lp"] == pytest.approx(row["total_cost"] / record["min_cost"])
        assert row["cost_over_lp"] >= 1.0  # the clairvoyant LP is a lower bound on every controller's cost
        assert row["total_cost"] == pytest.approx(row["energy_cost"] + row["terminal_backlog_value"])
    assert record["rule_based"]["avg_grid_consumption"] <= record["grid_limit"] * (1 + 1e-9)  # the share rule
    tuning = record["price_rule_tuning"]
    assert tuning["hours"] == [0, 3000] and tuning["candidates"] > 1
    assert record["price_rule"]["params"] == tuning["params"]


def test_cli_not_binding_and_backlog_cap(capsys):
    free = _oracle_json(capsys, "--constraint", "0.5", "--steps", "48", "--no-reference")
    assert free["binding"] is False and free["frontier"] < free["serve_all_fraction"] < 0.5
    assert free["rule_based"] is None and free["price_rule"] is None and free["serve_all"]["feasible"] is True
    capped = _oracle_json(capsys, "--constraint", "0.5", "--steps", "48", "--no-reference", "--backlog-cap", "0")
    assert capped["grid_limit"] == free["grid_limit"] and capped["frontier"] == free["frontier"]
    assert capped["min_grid_fraction"] >= free["min_grid_fraction"] - 1e-9  # no waiting: no lower grid use


def test_cli_reports_infeasible_as_json(capsys):
    code = cli_main(["oracle", "--constraint", "0.1", "--steps", "48", "--no-reference", "--json"])
    assert code == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["status"] == "infeasible" and record["min_cost"] is None
    assert record["min_grid_fraction"] > 0.1 and record["binding"] is False


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--agents", "-1"], "--agents=-1 is out of range; allowed: [1,"),
        (["--constraint", "0"], "--constraint=0.0 is out of range; allowed: (0, 1]"),
        (["--constraint", "1.2"], "--constraint=1.2 is out of range; allowed: (0, 1]"),
        (["--steps", "3001"], "--steps=3001 from --start-hour=0 goes beyond the train data window [0, 3000); allowed: 1..3000"),
        (["--start-hour", "2990", "--steps", "20"], "allowed: 1..10"),
        (["--backlog-cap", "-2"], "--backlog-cap=-2.0 is out of range"),
    ],
)
def test_cli_bad_input_exits_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exc:
        cli_main(["oracle", *argv])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.slow
def test_paper_scenario_full_training_horizon(dataset):
    core = DemandResponseCore(EnvConfig(), dataset)
    t0 = time.perf_counter()
    frontier = solve_min_grid(core, 3000, 0)
    optimum = solve_min_cost(core, 3000, 0, constraint_fraction=0.27)
    seconds = time.perf_counter() - t0
    assert frontier.status == "optimal" and optimum.status == "optimal"
    assert 0.17 < frontier.grid_fraction < 0.20
    assert optimum.avg_grid <= core.grid_limit + 1e-6
    assert frontier.solve_seconds < 30 and optimum.solve_seconds < 30, seconds
