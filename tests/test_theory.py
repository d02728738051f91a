"""Appendix B numerically: rho, the consensus value, the contraction, the Theorem 5.1 bound.

Norms: the contraction ``||e_l|| <= rho^l ||e_0||`` and the Theorem 5.1 bound
``rho^L alpha sigma / (1 - rho^L)`` are checked in the degree-weighted norm
(``||x||_D = ||D^1/2 x||_2``, or ``||x||_w = ||x||_D / sqrt(sum d)``), in which
``P`` is self-adjoint and the constant is exactly 1; ``sigma`` is the sup over
steps of ``||g_k - (w . g_k) 1||_w`` with ``g_k = e_grid_k - c/N``.  The
Euclidean versions carry the constant ``C = sqrt(d_max / d_min)``.
"""

import math

import numpy as np
import pytest

from algorithms.dual import DualConfig, DualConsensus, consensus
from algorithms.theory import (
    consensus_error,
    consensus_error_bound,
    consensus_rate_check,
    eigenvector_condition_number,
    spectral_summary,
    weighted_norm,
)
from cmarl_env import graphs


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Dense eigensolvers on a shared, loaded machine: multithreaded BLAS can be 10-30x
    slower than one thread (busy-waiting threads), so pin BLAS to one thread here."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional
        yield
        return
    with threadpool_limits(limits=1):
        yield


def random_connected(seed):
    """A random connected graph with 5..60 nodes from a random family."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 61))
    kind = ["erdos_renyi", "random_geometric", "small_world", "two_clusters", "line"][seed % 5]
    if kind == "erdos_renyi":
        g = graphs.erdos_renyi(n, p=float(rng.uniform(0.1, 0.6)), seed=seed)
    elif kind == "small_world":
        g = graphs.small_world(n, k=2, p=0.2, seed=seed)
    else:
        g = graphs.make_graph(kind, n, seed=seed)
    return g, n


def dense_P(g, n, eps):
    a = graphs.adjacency(g, n).toarray()
    return np.eye(n) - eps * (np.eye(n) - a / a.sum(1, keepdims=True))


SEEDS = range(10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("eps", [0.3, 0.5, 0.9, 1.0])
def test_rho_matches_dense_eigenvalues(seed, eps):
    g, n = random_connected(seed)
    s = spectral_summary(g, n, eps)
    ev = np.linalg.eigvals(dense_P(g, n, eps))
    mod = np.sort(np.abs(ev))[::-1]
    assert abs(mod[0] - 1) < 1e-10
    assert s.rho == pytest.approx(mod[1], abs=1e-10)
    mu = np.sort(np.real(np.linalg.eigvals(np.eye(n) - graphs.random_walk_matrix(g).toarray())))
    assert s.lambda_2 == pytest.approx(mu[1], abs=1e-10)
    assert s.lambda_max == pytest.approx(mu[-1], abs=1e-10)
    assert 0 <= s.rho < 1 or (eps == 1.0 and s.rho == pytest.approx(1.0))


@pytest.mark.parametrize("seed", SEEDS)
def test_pure_consensus_converges_to_degree_weighted_average(seed):
    g, n = random_connected(seed)
    s = spectral_summary(g, n, 0.5)
    lam0 = np.random.default_rng(seed).uniform(0, 15, n)
    target = s.consensus_value(lam0)
    deg = graphs.degrees(g, n)
    assert target == pytest.approx(deg @ lam0 / deg.sum())
    rounds = s.rounds_to_contract(1e-11)
    lam = consensus(lam0, graphs.random_walk_matrix(g, n), 0.5, rounds)
    np.testing.assert_allclose(lam, target, atol=1e-8, rtol=0)
    if not np.allclose(deg, deg[0]):  # irregular graph: not the plain average
        assert abs(target - lam0.mean()) > 1e-6


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("eps", [0.5, 1.0])
def test_d_weighted_error_contracts_by_rho_per_round(seed, eps):
    g, n = random_connected(seed)
    s = spectral_summary(g, n, eps)
    if s.rho >= 1.0 - 1e-12:  # eps = 1 on a bipartite graph: no contraction at all
        pytest.skip("rho = 1")
    rc = consensus_rate_check(g, n, eps, rounds=60, seed=seed, summary=s)
    l = np.arange(rc.errors.size)
    assert np.all(rc.errors <= s.rho ** l * rc.errors[0] * (1 + 1e-12) + 1e-12)
    assert rc.holds(1e-12)
    assert rc.max_ratio <= s.rho + 1e-12
    # the Euclidean norm carries the eigenvector condition number C = sqrt(d_max / d_min)
    c = eigenvector_condition_number(g, n, eps)
    deg = graphs.degrees(g, n)
    assert c == pytest.approx(math.sqrt(deg.max() / deg.min()), rel=1e-8)
    lam = np.random.default_rng(seed).standard_normal(n)
    w_rw = graphs.random_walk_matrix(g, n)
    e0 = consensus_error(lam, s.weights)
    for k in range(1, 30):
        lam = consensus(lam, w_rw, eps, 1)
        assert consensus_error(lam, s.weights) <= c * s.rho ** k * e0 * (1 + 1e-12) + 1e-12


def test_contraction_is_tight_on_the_slowest_mode():
    """Starting on the eigenvector of rho, every round contracts by exactly rho (the check can fail)."""
    g = graphs.erdos_renyi(30, p=0.2, seed=1)
    s = spectral_summary(g, 30, 0.5)
    v2 = slowest_mode(g, 30)
    rc = consensus_rate_check(g, 30, 0.5, rounds=20, lam0=v2, summary=s)
    ok = np.isfinite(rc.ratios)
    assert ok.sum() >= 10
    np.testing.assert_allclose(rc.ratios[ok], s.rho, rtol=1e-9)
    assert not consensus_rate_check(g, 30, 0.5, rounds=20, lam0=v2,
                                    summary=_with_rho(s, 0.99 * s.rho)).holds(1e-12)


def _with_rho(s, rho):
    import dataclasses

    return dataclasses.replace(s, rho=rho)


def slowest_mode(g, n):
    """Right eigenvector of P for 1 - eps mu_2: D^-1/2 times the eigenvector of S."""
    a = graphs.adjacency(g, n).toarray()
    d = a.sum(1)
    sym = a / np.sqrt(np.outer(d, d))
    _, u = np.linalg.eigh(sym)
    return u[:, -2] / np.sqrt(d)


def run_dual(g, n, cfg, share, signals, lam0):
    dual = DualConsensus(g, cfg, share=share, lam0=lam0)
    w = dual.weights
    sigma_w = sigma_2 = 0.0
    err_w, err_2 = [], []
    dual.clip_steps = 0
    for e in signals:
        pre = dual.lam + cfg.alpha * (e - share)
        dual.clip_steps += bool(np.any(pre > cfg.lambda_max) or np.any(pre < cfg.lambda_min))
        dev = (e - share) - w @ (e - share)
        sigma_w = max(sigma_w, weighted_norm(dev, w))
        sigma_2 = max(sigma_2, float(np.linalg.norm(dev)))
        dual.step(e, np.zeros(n))
        err_w.append(dual.consensus_error("w"))
        err_2.append(dual.consensus_error("2"))
    return np.array(err_w), np.array(err_2), sigma_w, sigma_2, dual


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize("clipping", [False, True])
def test_dual_step_consensus_error_within_theorem_bound(seed, rounds, clipping):
    """Bounded random signals (|e_i - 1| <= 1): the w-norm consensus error stays
    below rho^L alpha sigma / (1 - rho^L) at every step (we start in consensus)."""
    g, n = random_connected(seed)
    rng = np.random.default_rng(1000 + seed)
    alpha, share = (0.5, 0.5) if clipping else (0.05, 1.0)
    cfg = DualConfig(alpha=alpha, eps=0.5, rounds=rounds)
    bias = rng.uniform(-0.5, 0.5, n)  # persistent heterogeneity, as with agent types
    signals = [1.0 + bias + rng.uniform(-0.5, 0.5, n) for _ in range(800)]
    if not clipping:  # no drift of the weighted mean: lambda stays inside (0, 15)
        deg = graphs.degrees(g, n)
        share = 1.0 + float(deg @ bias / deg.sum())
    err_w, err_2, sigma_w, sigma_2, dual = run_dual(g, n, cfg, share, signals, lam0=7.5)
    s = spectral_summary(g, n, 0.5)
    bound = consensus_error_bound(s.rho, rounds, alpha, sigma_w)
    assert math.isfinite(bound) and err_w.max() > 0
    assert np.all(err_w <= bound * (1 + 1e-12) + 1e-12)
    # Euclidean version: constant sqrt(d_max / d_min), sigma measured in the 2-norm
    c = eigenvector_condition_number(g, n, 0.5)
    assert np.all(err_2 <= c * consensus_error_bound(s.rho, rounds, alpha, sigma_2) * (1 + 1e-12) + 1e-12)
    if clipping:  # the projection was active and the bound still holds
        assert dual.clip_steps > 100
    else:
        assert dual.clip_steps == 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("rounds", [1, 2])
def test_theorem_bound_is_attained_by_the_worst_signal(seed, rounds):
    """A constant signal along the slowest mode (scaled to ||.||_w = sigma) drives the
    error to exactly rho^L alpha sigma / (1 - rho^L): the bound is tight, so shrinking
    it by 10x (or 1%) is violated -- the check above can fail."""
    g, n = random_connected(seed)
    s = spectral_summary(g, n, 0.5)
    v2 = slowest_mode(g, n)
    assert abs(s.weights @ v2) < 1e-10
    sigma = 1.0
    steps = max(200, int(6 / (1 - s.rho ** rounds)))  # rho^(L steps) < e^-6
    alpha = 0.5 * (1 - s.rho ** rounds) / s.rho ** rounds / (np.abs(v2).max() / weighted_norm(v2, s.weights))
    g_dev = sigma * v2 / weighted_norm(v2, s.weights)
    signals = [1.0 + g_dev] * steps
    err_w, _, sigma_w, _, dual = run_dual(g, n, DualConfig(alpha=alpha, eps=0.5, rounds=rounds), 1.0, signals,
                                          lam0=7.5)
    assert sigma_w == pytest.approx(sigma)
    bound = consensus_error_bound(s.rho, rounds, alpha, sigma)
    assert dual.clip_steps == 0  # no clipping in this experiment
    assert np.all(err_w <= bound * (1 + 1e-9))
    assert err_w[-1] >= 0.99 * bound
    assert err_w[-1] > bound / 10


def test_error_bound_formula_and_edge_cases():
    assert consensus_error_bound(0.5, 1, 0.1, 2.0) == pytest.approx(0.5 * 0.1 * 2 / 0.5)
    assert consensus_error_bound(0.5, 2, 0.1, 2.0) == pytest.approx(0.25 * 0.2 / 0.75)
    assert consensus_error_bound(0.9, 0, 0.1, 1.0) == math.inf  # no consensus
    assert consensus_error_bound(1.0, 3, 0.1, 1.0) == math.inf  # no contraction
    assert consensus_error_bound(0.0, 1, 0.1, 1.0) == 0.0
    for bad in [dict(rho=-0.1), dict(rounds=-1), dict(alpha=-1.0), dict(sigma=-1.0)]:
        args = dict(rho=0.5, rounds=1, alpha=0.1, sigma=1.0) | bad
        with pytest.raises(ValueError):
            consensus_error_bound(**args)


def test_known_spectra():
    n = 40
    s = spectral_summary(graphs.ring(n), n, 0.5)
    assert s.lambda_2 == pytest.approx(1 - math.cos(2 * math.pi / n), abs=1e-12)
    assert s.rho == pytest.approx(1 - 0.5 * (1 - math.cos(2 * math.pi / n)), abs=1e-12)
    s = spectral_summary(graphs.complete(n), n, 0.5)
    assert s.lambda_2 == pytest.approx(n / (n - 1), abs=1e-12)
    s1 = spectral_summary(graphs.ring(n), n, 1.0)  # bipartite ring, eps = 1: eigenvalue -1
    assert s1.rho == pytest.approx(1.0, abs=1e-12)
    assert consensus_error_bound(s1.rho, 1, 0.1, 1.0) > 1e10 or math.isinf(consensus_error_bound(s1.rho, 1, 0.1, 1.0))
    single = spectral_summary(graphs.ring(1), 1, 0.5)
    assert single.rho == 0.0 and single.consensus_value(np.array([3.0])) == 3.0


@pytest.mark.parametrize(
    "name, eps",
    [("erdos_renyi", 0.5), ("ring", 0.5), ("random_geometric", 0.5), ("small_world", 1.0), ("line", 1.0)],
)
def test_sparse_eigensolvers_agree_with_dense(name, eps):
    n = 1500
    e = graphs.make_edges(name, n, seed=2)
    dense = spectral_summary(e, n, eps, method="dense")
    for method in ("auto", "eigsh", "shift-invert"):
        sparse = spectral_summary(e, n, eps, method="sparse" if method == "auto" else method)
        assert sparse.method != "dense"
        assert sparse.rho == pytest.approx(dense.rho, abs=1e-6)
        assert sparse.lambda_2 == pytest.approx(dense.lambda_2, abs=1e-6)


def test_spectral_summary_rejects_bad_input():
    with pytest.raises(ValueError, match="eps"):
        spectral_summary(graphs.ring(5), 5, 0.0)
    with pytest.raises(ValueError, match="method"):
        spectral_summary(graphs.ring(5), 5, 0.5, method="magic")
    with pytest.raises(ValueError, match="disconnected"):
        spectral_summary((np.array([0, 2]), np.array([1, 3])), 4, 0.5)
