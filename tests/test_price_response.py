"""The shipped policies respond to the price the right way (issue 10, item 1).

Raising only the price input, every other input fixed, must not raise the grid
action, for the multipliers that Algorithm 1 actually visits; and it must
lower it on average (a policy that ignores the price would pass the first
check only). Two sets of inputs:

* the observations of real executions (7 agents, two clusters, hours 0-3000,
  the default dual step sizes) on the paper's level c = 0.27 and the binding
  c = 0.20, with the price column swapped between the off-peak and the peak
  tariff;
* a grid over demand, backlog, state of charge, solar, hour of day and
  (lambda, nu) spanning the ranges those executions visit (1st to 99th
  percentile).

And the outcome the response is for: on the paper scenario dual consensus with
the shipped policies is feasible and cheaper than serving everything at once
and than the price rule tuned on the same hours.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("torch")

from algorithms.dual import DualConfig  # noqa: E402
from algorithms.execute import DualConsensusController  # noqa: E402
from algorithms.policy import load_pretrained  # noqa: E402
from baselines.rule_based import PriceRule, tune_price_rule  # noqa: E402
from cmarl_env.core import DemandResponseCore, observation_layout  # noqa: E402
from cmarl_env.evaluation import ServeAll, evaluation_config, rollout  # noqa: E402

LAYOUT = list(observation_layout(True))
COL = {name: i for i, name in enumerate(LAYOUT)}
OFF_PEAK, PEAK = 0.21, 0.54  # the dataset's lowest and highest tariff
TOL = 1e-3  # a float32 network: "does not rise" up to this


def _core(dataset, constraint: float, steps: int, start: int = 0) -> DemandResponseCore:
    cfg = evaluation_config(n_agents=7, constraint=constraint, start_hour=start, steps=steps,
                            n_hours=dataset.n_steps, augment=True)
    return DemandResponseCore(cfg, dataset)


class _Recording(DualConsensusController):
    """Dual consensus that keeps every observation it acted on (with the multipliers in it)."""

    def reset(self, core):
        super().reset(core)
        self.seen: list[np.ndarray] = []

    def act(self, obs):
        self.seen.append(np.array(obs, copy=True))
        return super().act(obs)


@pytest.fixture(scope="module")
def visited(dataset):
    """Per agent type: the observations dual consensus acted on at c = 0.27 and c = 0.20 (hours 0-3000)."""
    out: dict[float, list[np.ndarray]] = {1.0: [], 2.0: []}
    for c in (0.27, 0.20):
        core = _core(dataset, c, 3000)
        ctl = _Recording(DualConfig())
        rollout(ctl, core, 0, 3000)
        obs = np.concatenate(ctl.seen)
        scale = np.tile(core.layout.scale, len(ctl.seen))
        for s in out:
            out[s].append(obs[scale == s])
    return {s: np.concatenate(v) for s, v in out.items()}


def _with_price(obs: np.ndarray, price: float, price_norm: float) -> np.ndarray:
    x = np.array(obs, dtype=np.float32, copy=True)
    x[:, COL["price"]] = price / price_norm
    return x


def _grid_action_change(policy, obs: np.ndarray) -> np.ndarray:
    """a_grid(peak price) - a_grid(off-peak price), everything else as given."""
    norm = float(policy.metadata["obs_norms"]["price_norm"])
    return policy.act(_with_price(obs, PEAK, norm))[:, 1] - policy.act(_with_price(obs, OFF_PEAK, norm))[:, 1]


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_grid_action_falls_with_the_price_on_visited_states(scale, visited):
    obs = visited[scale]
    policy = load_pretrained(scale)
    change = _grid_action_change(policy, obs)
    assert change.max() <= TOL, f"the grid action rises with the price at {np.sum(change > TOL)} visited states"
    # the price matters where the grid is used at all: in the states where either price buys
    norm = float(policy.metadata["obs_norms"]["price_norm"])
    buys = policy.act(_with_price(obs, OFF_PEAK, norm))[:, 1] > 0.05
    assert change[buys].mean() < -0.1, change[buys].mean()


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_grid_action_falls_with_the_price_over_a_grid_of_inputs(scale, visited):
    policy = load_pretrained(scale)
    obs = visited[scale]
    lam_range = policy.metadata["lambda_range"]
    nu_range = policy.metadata["nu_range"]
    lam = lam_range[0] + obs[:, COL["lambda"]] * (lam_range[1] - lam_range[0])
    nu = nu_range[0] + obs[:, COL["nu"]] * (nu_range[1] - nu_range[0])
    lam_lo, lam_hi = np.percentile(lam, [1, 99])
    nu_lo, nu_hi = np.percentile(nu, [1, 99])
    assert lam_hi > 0.5 and nu_lo < -1.0, (lam_hi, nu_lo)  # the executions did move the multipliers
    norms = policy.metadata["obs_norms"]
    rows = []
    for d, b, soc, solar, hour, lm, n in itertools.product(
        np.array([0.5, 1.0, 2.0]) * scale, np.array([0.0, 2.0, 10.0, 40.0]) * scale, (0.1, 0.5, 1.0), (0.0, 2.0),
        (0, 8, 13, 16, 18, 20, 22), np.linspace(lam_lo, lam_hi, 5), np.linspace(nu_lo, nu_hi, 5),
    ):
        ang = 2.0 * np.pi * hour / 24.0
        rows.append([d / norms["demand_norm"], b / norms["demand_norm"], soc, solar / norms["solar_norm"], 0.0,
                     np.sin(ang), np.cos(ang), (lm - lam_range[0]) / (lam_range[1] - lam_range[0]),
                     (n - nu_range[0]) / (nu_range[1] - nu_range[0])])
    grid = np.asarray(rows, dtype=np.float32)
    change = _grid_action_change(policy, grid)
    assert change.max() <= TOL, f"the grid action rises with the price at {np.sum(change > TOL)} of {len(grid)} inputs"
    assert change.mean() < -0.05, change.mean()


def test_paper_scenario_feasible_and_cheaper_than_serve_all_and_the_tuned_price_rule(dataset):
    """The paper scenario (c = 0.27, hours 0-3000): feasible, and cheaper than serve-all and the price rule tuned on
    the same hours (issue 10 asks for the first 500 hours; over those alone the limit, c x their own lower peak,
    binds: serve-all uses 1.11 and the tuned price rule 1.08 x the limit, so neither is a feasible reference there)."""
    steps = 3000
    core = _core(dataset, 0.27, steps)
    ours = rollout(DualConsensusController(DualConfig()), core, 0, steps)
    serve_all = rollout(ServeAll(), core, 0, steps)
    params, _ = tune_price_rule(lambda: _core(dataset, 0.27, steps), steps, 0)
    price_rule = rollout(PriceRule(params), core, 0, steps)
    assert ours.verdict.feasible, ours.verdict
    assert ours.total_cost < price_rule.total_cost < serve_all.total_cost, \
        (ours.total_cost, price_rule.total_cost, serve_all.total_cost, params)


def test_first_500_hours_closest_to_the_limit_and_cheaper_than_serve_all(dataset):
    """Over hours 0-500 (binding there): dual consensus comes closest to the limit and costs less than serve-all."""
    steps = 500
    core = _core(dataset, 0.27, steps)
    ours = rollout(DualConsensusController(DualConfig()), core, 0, steps)
    serve_all = rollout(ServeAll(), core, 0, steps)
    params, _ = tune_price_rule(lambda: _core(dataset, 0.27, steps), steps, 0)
    price_rule = rollout(PriceRule(params), core, 0, steps)
    assert ours.verdict.grid_use_ratio < min(serve_all.verdict.grid_use_ratio, price_rule.verdict.grid_use_ratio)
    assert ours.total_cost < serve_all.total_cost
