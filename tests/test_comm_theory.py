"""Bounds on the consensus error under the communication models (algorithms/comm_theory.py): hand-computable cases
and the bounds checked against measured errors."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from algorithms import theory
from algorithms.comm import quantization_step
from algorithms.comm_theory import (delay_response_bound, fault_theory, joint_connectivity_bound_log10,
                                    mean_square_bound, mean_square_rate, quantized_bound)
from algorithms.dual import DualConfig, DualConsensus
from algorithms.execute import ExecutionConfig, run_execution
from cmarl_env import graphs

PAIR = sp.csr_matrix(np.array([[0.0, 1.0], [1.0, 0.0]]))
HALF = np.array([0.5, 0.5])


def greedy_policy(obs):
    lam, nu = obs[:, 7], obs[:, 8]
    grid = np.clip(1.0 - 0.9 * lam + 0.8 * (0.5 - nu), 0.0, 1.0)
    return np.stack([np.full(len(obs), 0.7), grid], axis=1)


# --------------------------------------------------------------------------- mean square, by hand
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.8])
@pytest.mark.parametrize("eps", [0.3, 0.5, 1.0])
def test_mean_square_rate_two_nodes_loss(p, eps):
    """Two agents, drops with probability p: the disagreement delta = x0 - x1 becomes delta (1 - eps (k0 + k1)),
    k_i = 1 when agent i's message got through, so E[delta'^2] / delta^2 = E[(1 - eps (k0 + k1))^2]."""
    expected = (1 - p) ** 2 * (1 - 2 * eps) ** 2 + 2 * p * (1 - p) * (1 - eps) ** 2 + p ** 2
    got = mean_square_rate(PAIR, HALF, eps, 1, message_loss=p)
    assert got["exact"] and got["rate"] == pytest.approx(expected, abs=1e-12)
    # two rounds per hour: independent rounds multiply
    assert mean_square_rate(PAIR, HALF, eps, 2, message_loss=p)["rate"] == pytest.approx(expected ** 2, abs=1e-12)


@pytest.mark.parametrize("q", [1.0, 0.5, 0.2])
def test_mean_square_rate_two_nodes_link(q):
    """The link is up with probability q (both directions at once): rate q (1 - 2 eps)^2 + (1 - q); with L rounds
    in the hour the link state is shared: q (1 - 2 eps)^(2L) + (1 - q)."""
    eps = 0.3
    assert mean_square_rate(PAIR, HALF, eps, 1, edge_up=q)["rate"] == pytest.approx(q * (1 - 2 * eps) ** 2 + 1 - q)
    assert mean_square_rate(PAIR, HALF, eps, 3, edge_up=q)["rate"] == pytest.approx(q * (1 - 2 * eps) ** 6 + 1 - q)


def test_mean_square_rate_matches_simulation_and_reduces_to_rho():
    """On a 5-agent graph: no failure gives rho^2 (the nominal contraction, squared); with failures
    E||Phi z||_pi^2 from the exact operator equals the average over simulated hours of the engine itself."""
    from algorithms.comm import CommNetwork
    from algorithms.comm_theory import _disagreement_basis, mean_square_operator

    edges = (np.array([0, 1, 2, 3, 0]), np.array([1, 2, 3, 4, 2]))
    n = 5
    W = graphs.consensus_matrix(edges, n)
    spec = theory.spectral_summary(edges, n, 0.5)
    pi = spec.weights
    assert mean_square_rate(W, pi, 0.5, 1)["rate"] == pytest.approx(spec.rho ** 2, rel=1e-10)
    total, exact, patterns = mean_square_operator(W, pi, 0.5, 1, edge_up=0.6, message_loss=0.3)
    assert exact and patterns == 2 ** 5
    z = _disagreement_basis(pi) @ np.random.default_rng(0).standard_normal(n - 1)
    ratios = []
    for k in range(4000):
        net = CommNetwork(W, DualConfig(edge_up=0.6, message_loss=0.3, loss_mode="drop"), seed=k)
        net.begin_hour()
        x = net.mix(z, 0.5, 1)
        e = x - pi @ x
        ratios.append(pi @ (e * e))
    se = np.std(ratios) / math.sqrt(len(ratios))
    assert np.mean(ratios) == pytest.approx(z @ total @ z, abs=4 * se)
    assert mean_square_rate(W, pi, 0.5, 1, edge_up=0.6, message_loss=0.3)["rate"] * (pi @ (z * z)) >= z @ total @ z


# --------------------------------------------------------------------------- delays, by hand
def test_delay_response_two_nodes():
    """Delay 1, eps = 1/2 on two agents: the disagreement's response f solves f(s+1) = f(s)/2 - f(s-1)/2,
    f(0) = 1; its rate per round is 1/sqrt(2) and the bound sums |f(s)|, s >= 1."""
    got = delay_response_bound(PAIR, HALF, 0.5, 1, 1, alpha=1.0, sigma=1.0)
    assert got["rate_per_hour"] == pytest.approx(1 / math.sqrt(2), abs=1e-9)
    f = [0.0, 1.0]
    for _ in range(400):
        f.append(0.5 * f[-1] - 0.5 * f[-2])
    assert got["response_sum"] == pytest.approx(sum(abs(v) for v in f[2:]), rel=1e-9)
    assert got["bound"] == pytest.approx(got["response_sum"])


def test_delay_zero_gives_theorem_5_1():
    n = 7
    g = graphs.two_clusters(n)
    W = graphs.consensus_matrix(g, n)
    spec = theory.spectral_summary(g, n, 0.5)
    got = delay_response_bound(W, spec.weights, 0.5, 0, 1, alpha=0.05, sigma=2.0)
    assert got["bound"] == pytest.approx(theory.consensus_error_bound(spec.rho, 1, 0.05, 2.0), rel=1e-6)
    assert got["rate_per_hour"] == pytest.approx(spec.rho, rel=1e-9)


# --------------------------------------------------------------------------- quantisation and joint connectivity
def test_quantized_bound_formula_and_limit():
    assert quantized_bound(0.5, 1, 0.1, 2.0, 0.5, 0.0) == pytest.approx(theory.consensus_error_bound(0.5, 1, 0.1, 2.0))
    assert quantized_bound(0.5, 2, 0.0, 0.0, 0.5, 1.0) == pytest.approx(0.5 * 0.5 * 1.5 / 0.75)
    assert math.isinf(quantized_bound(0.5, 0, 0.1, 1.0, 0.5, 1.0))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("weights", ["random_walk", "metropolis"])
def test_quantized_bound_holds_every_hour(bits, weights):
    """Random signals on a 12-agent small world: with b-bit messages the consensus error never exceeds the bound
    computed from the increments that entered (clip included)."""
    n = 12
    g = graphs.small_world(n, seed=1)
    cfg = DualConfig(alpha=0.3, rounds=2, quantize_bits=bits, weights=weights)
    dual = DualConsensus(g, cfg, share=0.5)
    spec = theory.spectral_summary(g, n, cfg.eps, weights=weights)
    rng = np.random.default_rng(bits)
    step = quantization_step(bits, 0.0, 15.0)
    worst = 0.0
    for _ in range(400):
        dual.step(rng.uniform(0, 3, n), rng.normal(size=n))
        bound = quantized_bound(spec.rho, cfg.rounds, cfg.alpha, dual.sigma_eff, cfg.eps, step)
        err = dual.consensus_error("w")
        assert err <= bound * (1 + 1e-9) + 1e-12
        worst = max(worst, err / bound)
    assert worst > 1e-3  # the check is not vacuous


def test_joint_bound_formula():
    # n = 3, B = 2, eta = 1/2: K = 4, gamma = 1/16, c = 3/16, bound = K alpha S (1 + 1/c)
    got = joint_connectivity_bound_log10(3, 2, 0.5, 0.1, 2.0)
    assert 10 ** got == pytest.approx(4 * 0.1 * 2.0 * (1 + 16 / 3))
    assert joint_connectivity_bound_log10(1000, 5, 0.1, 0.05, 1.0) > 4000  # vacuous at scale, finite in log10


def test_fault_theory_selects_the_bound_that_applies():
    n = 7
    g = graphs.two_clusters(n)
    W = graphs.consensus_matrix(g, n)
    spec = theory.spectral_summary(g, n, 0.5)
    errors = np.full(10, 0.01)
    kinds = {}
    for kw in [dict(quantize_bits=6), dict(message_loss=0.3, loss_mode="drop"), dict(message_loss=0.3),
               dict(edge_up=0.5), dict(delay=2), dict(delay=2, delay_random=True), dict(update_prob=0.5),
               dict(delay=1, quantize_bits=8), dict(rounds=0, message_loss=0.5)]:
        out = fault_theory(DualConfig(**kw), W, spec.weights, spec.rho, 1.0, 2.0, errors, joint_window=3)
        kinds[tuple(sorted(kw.items()))] = out["model_bound_kind"]
        assert out["measured"]["final"] == 0.01 and out["theorem_5_1_nominal"] is not None
        if "edge_up" in kw:
            assert out["joint_bound_log10"] > 3
    kinds = list(kinds.values())
    assert kinds[0].startswith("quantised") and kinds[1].startswith("independent") and kinds[3].startswith("independent")
    assert kinds[2].startswith("none known") and kinds[4].startswith("fixed delay")
    assert all(k.startswith("none") for k in kinds[5:])


# --------------------------------------------------------------------------- in execution
@pytest.mark.parametrize("kw", [dict(quantize_bits=4), dict(delay=3), dict(edge_up=0.5),
                                dict(message_loss=0.3, loss_mode="drop")])
def test_execution_reports_and_meets_the_bound(dataset, kw):
    config = ExecutionConfig(n_agents=7, constraint=0.2, steps=400, dual=DualConfig(alpha=0.2, **kw))
    result = run_execution(config, {1.0: greedy_policy, 2.0: greedy_policy}, data=dataset)
    th = result.facts["communication"]["theory"]
    assert result.metrics["fault_bound"] == th["model_bound"] and math.isfinite(th["model_bound"])
    assert result.metrics["fault_bound_holds"] is True
    assert th["measured"]["max"] > 0
