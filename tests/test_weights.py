"""Consensus weights (issue 10, item 2): the paper's random-walk matrix ``D^-1 A`` and
Metropolis-Hastings weights, which constraint each one enforces, and their theory.

The key fact checked here: at a fixed point of Algorithm 1 (dual step + L consensus
rounds, no clipping) the stationary weights ``pi`` of the consensus matrix satisfy
``pi . (e_grid - c/N) = 0``.  ``pi`` is the degree distribution for the random walk
(the degree-weighted constraint) and uniform for Metropolis (the true constraint
``mean_i e_grid_i = c/N``).  The agents here are synthetic: ``e_grid_i`` is a fixed
decreasing function of ``lambda_i`` (no policies needed).
"""

import math
import time

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from algorithms.dual import DualConfig, DualConsensus, consensus
from algorithms.theory import (
    consensus_error_bound,
    consensus_rate_check,
    eigenvector_condition_number,
    spectral_summary,
    stationary_weights,
    weighted_norm,
)
from cmarl_env import graphs

WEIGHTS = ("random_walk", "metropolis")


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """Dense eigensolvers on a shared, loaded machine: pin BLAS to one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional
        yield
        return
    with threadpool_limits(limits=1):
        yield


# ------------------------------------------------------------------ graphs
def star_like(n):
    """A hub joined to every node plus a path through the leaves: degrees 2..n-1."""
    g = nx.star_graph(n - 1)
    g.add_edges_from((i, i + 1) for i in range(1, n - 1))
    return g


def hub_and_ring(n, hub_size=3):
    """A ring of n nodes whose first ``hub_size`` nodes are joined to every node: very irregular."""
    g = graphs.ring(n)
    g.add_edges_from((h, j) for h in range(hub_size) for j in range(n) if h != j)
    return g


IRREGULAR = {
    "random_geometric_40": lambda: (graphs.random_geometric(40, seed=1), 40),
    "erdos_renyi_30": lambda: (graphs.erdos_renyi(30, p=0.15, seed=3), 30),
    "erdos_renyi_25": lambda: (graphs.erdos_renyi(25, p=0.2, seed=7), 25),
    "star_like_16": lambda: (star_like(16), 16),
    "two_clusters_7": lambda: (graphs.two_clusters(7), 7),  # the paper's scenario graph
    "small_world_30": lambda: (graphs.small_world(30, k=2, p=0.3, seed=2), 30),
}


def irregular(name):
    g, n = IRREGULAR[name]()
    deg = graphs.degrees(g, n)
    assert deg.min() < deg.max(), "the graph must be irregular for these tests to mean anything"
    return g, n


def reference_metropolis(g, n):
    """Per-entry python reference of the Metropolis-Hastings matrix."""
    w = np.zeros((n, n))
    for i, j in g.edges():
        w[i, j] = w[j, i] = 1.0 / (1.0 + max(g.degree(i), g.degree(j)))
    for i in range(n):
        w[i, i] = 1.0 - w[i].sum()
    return w


# ------------------------------------------------------------------ the matrix
@pytest.mark.parametrize("name", graphs.GRAPH_NAMES)
@pytest.mark.parametrize("n", [2, 5, 23])
def test_metropolis_matrix_is_symmetric_doubly_stochastic_nonnegative(name, n):
    if name in ("small_world", "watts_strogatz") and n < 5:
        pytest.skip("needs n > k")
    g = graphs.make_graph(name, n, seed=0)
    w = graphs.metropolis_matrix(g)
    assert sp.isspmatrix_csr(w) and w.dtype == np.float64 and w.has_sorted_indices
    w.check_format(full_check=True)
    dense = w.toarray()
    np.testing.assert_array_equal(dense, dense.T)  # exactly symmetric
    assert dense.min() >= 0.0
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(dense.sum(axis=0), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(dense, reference_metropolis(g, n), rtol=0, atol=1e-15)
    # diagonal positive (>= 1/(1+d_i)) and off-diagonal pattern = adjacency
    deg = graphs.degrees(g)
    assert np.all(np.diag(dense) >= 1.0 / (1.0 + deg) - 1e-15)
    a = graphs.adjacency(g).toarray()
    off = dense - np.diag(np.diag(dense))
    np.testing.assert_array_equal(off > 0, a > 0)
    # all representations give the same matrix; the selector and Perron matrix agree
    e = graphs.make_edges(name, n, seed=0)
    assert (graphs.metropolis_matrix(e, n) != w).nnz == 0
    assert (graphs.metropolis_matrix(graphs.random_walk_matrix(g)) != w).nnz == 0  # pattern only
    assert (graphs.consensus_matrix(g, weights="metropolis") != w).nnz == 0
    p = graphs.perron_matrix(g, 0.3, weights="metropolis").toarray()
    np.testing.assert_allclose(p, np.eye(n) - 0.3 * (np.eye(n) - dense), rtol=0, atol=1e-15)


def test_metropolis_matrix_known_values_and_single_agent():
    # line 0-1-2: degrees 1, 2, 1 -> w_01 = w_12 = 1/3, w_00 = 2/3, w_11 = 1/3
    w = graphs.metropolis_matrix(graphs.line(3)).toarray()
    np.testing.assert_allclose(w, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]], atol=1e-15)
    # star with 4 leaves: hub degree 4 -> every edge 1/5, hub keeps 1/5, leaves 4/5
    w = graphs.metropolis_matrix(nx.star_graph(4)).toarray()
    assert w[0, 0] == pytest.approx(0.2) and w[1, 1] == pytest.approx(0.8) and w[0, 3] == pytest.approx(0.2)
    assert graphs.metropolis_matrix(graphs.ring(1)).toarray().tolist() == [[1.0]]
    with pytest.raises(ValueError, match="no neighbours"):
        graphs._metropolis_from_adjacency(sp.csr_matrix((3, 3)))


def test_random_walk_selector_is_the_old_matrix_bit_for_bit():
    g = graphs.random_geometric(40, seed=1)
    old = graphs.random_walk_matrix(g)
    for new in (graphs.consensus_matrix(g), graphs.consensus_matrix(g, weights="random_walk")):
        np.testing.assert_array_equal(new.toarray(), old.toarray())
    np.testing.assert_array_equal(graphs.perron_matrix(g, 0.5).toarray(),
                                  graphs.perron_matrix(g, 0.5, weights="random_walk").toarray())


@pytest.mark.parametrize("bad", ["metropolis_hastings", "Random_Walk", "", None, 1])
def test_bad_weights_name_the_value_and_the_allowed_ones(bad):
    g = graphs.ring(5)
    calls = [
        lambda: graphs.check_weights(bad),
        lambda: graphs.consensus_matrix(g, weights=bad),
        lambda: graphs.perron_matrix(g, 0.5, weights=bad),
        lambda: spectral_summary(g, 5, 0.5, weights=bad),
        lambda: stationary_weights(np.ones(5), bad),
        lambda: eigenvector_condition_number(g, 5, weights=bad),
    ]
    if bad is not None:  # None means "the summary's weighting" there
        calls.append(lambda: consensus_rate_check(g, 5, 0.5, weights=bad))
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert repr(bad) in msg and "'random_walk'" in msg and "'metropolis'" in msg
    with pytest.raises(ValueError) as info:
        DualConfig(weights=bad)
    msg = str(info.value)
    assert "DualConfig.weights" in msg and repr(bad) in msg and "'random_walk'" in msg and "'metropolis'" in msg


def test_metropolis_matrix_at_one_million_agents():
    n = 1_000_000
    edges = graphs.random_edges("small_world", n, seed=0)
    t0 = time.perf_counter()
    w = graphs.metropolis_matrix(edges, n)
    elapsed = time.perf_counter() - t0
    assert elapsed < 20.0, f"{elapsed:.1f}s"
    assert w.shape == (n, n) and w.nnz == 2 * edges.m + n
    np.testing.assert_allclose(np.asarray(w.sum(axis=1)).ravel(), 1.0, rtol=0, atol=1e-14)
    assert abs(w - w.T).max() == 0.0
    assert w.data.min() > 0.0
    deg = graphs.degrees(edges, n)
    k = 12345  # one row against the formula
    row = w.getrow(k)
    for j, v in zip(row.indices, row.data):
        expect = 1.0 - sum(1.0 / (1 + max(deg[k], deg[m])) for m in row.indices if m != k) if j == k \
            else 1.0 / (1 + max(deg[k], deg[j]))
        assert v == pytest.approx(expect, abs=1e-15)
    # the executor steps vectorised at this size, and preserves the plain average
    dual = DualConsensus(edges, DualConfig(rounds=2, weights="metropolis"), share=0.5, n=n,
                         lam0=np.random.default_rng(0).uniform(0, 15, n))
    m0 = dual.lam.mean()
    t0 = time.perf_counter()
    dual.step(np.full(n, 0.5), np.zeros(n))  # e = share: the dual step does not move the mean
    assert time.perf_counter() - t0 < 5.0
    assert dual.lam.mean() == pytest.approx(m0, abs=1e-12)
    assert np.all(dual.weights == 1.0 / n)


# ------------------------------------------------------------------ theory
def dense_perron(g, n, eps, weights):
    return graphs.perron_matrix(g, eps, n, weights=weights).toarray()


@pytest.mark.parametrize("name", sorted(IRREGULAR))
@pytest.mark.parametrize("eps", [0.3, 0.5, 1.0])
def test_rho_matches_dense_eigenvalues_for_both_weightings(name, eps):
    g, n = irregular(name)
    for weights in WEIGHTS:
        s = spectral_summary(g, n, eps, weights=weights)
        assert s.weighting == weights
        mod = np.sort(np.abs(np.linalg.eigvals(dense_perron(g, n, eps, weights))))[::-1]
        assert abs(mod[0] - 1) < 1e-10
        assert s.rho == pytest.approx(mod[1], abs=1e-10)
        if weights == "metropolis" or eps < 1.0:
            assert 0.0 <= s.rho < 1.0  # connected graph: contraction
    # Metropolis: P symmetric, the Euclidean norm works with constant 1
    assert eigenvector_condition_number(g, n, eps, weights="metropolis") == pytest.approx(1.0, abs=1e-9)
    sm = spectral_summary(g, n, eps, weights="metropolis")
    assert sm.norm == "euclidean" and sm.consensus_kind == "plain average" and sm.euclidean_constant == 1.0
    sr = spectral_summary(g, n, eps)
    deg = graphs.degrees(g, n)
    assert sr.norm == "degree-weighted" and sr.consensus_kind == "degree-weighted average"
    assert sr.euclidean_constant == pytest.approx(math.sqrt(deg.max() / deg.min()))


def test_metropolis_contracts_on_bipartite_graphs_at_eps_one():
    """The random walk has eigenvalue -1 on a bipartite graph (rho = 1 at eps = 1);
    Metropolis weights keep every eigenvalue above -1, so rho < 1."""
    for g, n in [(graphs.ring(10), 10), (graphs.line(9), 9), (nx.star_graph(6), 7)]:
        assert spectral_summary(g, n, 1.0).rho == pytest.approx(1.0, abs=1e-12)
        s = spectral_summary(g, n, 1.0, weights="metropolis")
        assert s.rho < 1.0 - 1e-3
        assert s.lambda_max < 2.0


@pytest.mark.parametrize("name", ["erdos_renyi", "ring", "random_geometric", "small_world", "line"])
def test_metropolis_sparse_eigensolvers_agree_with_dense(name):
    n = 1500
    e = graphs.make_edges(name, n, seed=2)
    for eps in (0.5, 1.0):
        dense = spectral_summary(e, n, eps, weights="metropolis", method="dense")
        for method in ("sparse", "eigsh", "shift-invert"):
            sparse = spectral_summary(e, n, eps, weights="metropolis", method=method)
            assert sparse.method != "dense" and sparse.weighting == "metropolis"
            assert sparse.rho == pytest.approx(dense.rho, abs=1e-6)
            assert sparse.lambda_2 == pytest.approx(dense.lambda_2, abs=1e-6)


@pytest.mark.parametrize("name", sorted(IRREGULAR))
def test_pure_consensus_values(name):
    """Random walk -> degree-weighted average; Metropolis -> plain average; they differ."""
    g, n = irregular(name)
    lam0 = np.random.default_rng(0).uniform(0, 15, n)
    deg = graphs.degrees(g, n)
    values = {}
    for weights in WEIGHTS:
        s = spectral_summary(g, n, 0.5, weights=weights)
        lam = consensus(lam0, graphs.consensus_matrix(g, n, weights), 0.5, s.rounds_to_contract(1e-12))
        np.testing.assert_allclose(lam, s.consensus_value(lam0), rtol=0, atol=1e-9)
        values[weights] = s.consensus_value(lam0)
        # the consensus value is conserved by every round
        one = consensus(lam0, graphs.consensus_matrix(g, n, weights), 0.5, 1)
        assert s.weights @ one == pytest.approx(s.weights @ lam0, abs=1e-12)
    assert values["metropolis"] == pytest.approx(lam0.mean(), abs=1e-12)
    assert values["random_walk"] == pytest.approx(deg @ lam0 / deg.sum(), abs=1e-12)
    assert abs(values["metropolis"] - values["random_walk"]) > 1e-3


@pytest.mark.parametrize("name", sorted(IRREGULAR))
def test_metropolis_euclidean_error_contracts_by_rho(name):
    g, n = irregular(name)
    s = spectral_summary(g, n, 0.5, weights="metropolis")
    rc = consensus_rate_check(g, n, 0.5, rounds=60, seed=1, summary=s)
    lam = np.random.default_rng(1).standard_normal(n)
    np.testing.assert_allclose(rc.errors[0], np.linalg.norm(lam - lam.mean()), rtol=1e-12)  # Euclidean
    assert rc.holds(1e-12) and rc.max_ratio <= s.rho + 1e-12
    assert rc.consensus_value == pytest.approx(lam.mean())
    # tight on the slowest mode (so the check can fail): shrink rho by 1% and it does
    _, vecs = np.linalg.eigh(graphs.metropolis_matrix(g, n).toarray())
    v2 = vecs[:, -2]
    tight = consensus_rate_check(g, n, 0.5, rounds=20, lam0=v2, summary=s)
    np.testing.assert_allclose(tight.ratios[np.isfinite(tight.ratios)], s.rho, rtol=1e-8)
    import dataclasses

    assert not consensus_rate_check(g, n, 0.5, rounds=20, lam0=v2,
                                    summary=dataclasses.replace(s, rho=0.99 * s.rho)).holds(1e-12)
    with pytest.raises(ValueError, match="computed for weights='metropolis'"):
        consensus_rate_check(g, n, 0.5, summary=s, weights="random_walk")


# ------------------------------------------------------------------ the enforced constraint
def responsive_agents(deg, seed):
    """``e_grid_i(lam_i) = b_i exp(-k_i lam_i)``: heterogeneous, strictly decreasing in lam_i;
    the demand level ``b_i`` grows with the degree (hubs are the big consumers), with noise."""
    deg = np.asarray(deg, dtype=float)
    n = deg.size
    rng = np.random.default_rng(seed)
    b = (0.4 + deg / deg.max()) * rng.uniform(0.8, 1.2, n)
    k = rng.uniform(0.2, 0.6, n)
    return lambda lam: b * np.exp(-k * lam)


def fixed_point(g, n, weights, rounds, e_of_lam, share, steps=4000, alpha=0.5):
    dual = DualConsensus(g, DualConfig(alpha=alpha, eps=0.5, rounds=rounds, weights=weights), share=share, n=n)
    lam = dual.lam
    for _ in range(steps):
        new, _ = dual.step(e_of_lam(lam), np.zeros(n))
        move = float(np.abs(new - lam).max())
        lam = new
    return dual, lam, move


def excesses(g, n, e, share):
    deg = graphs.degrees(g, n).astype(float)
    return float(np.mean(e) - share), float(deg @ e / deg.sum() - share)


@pytest.mark.parametrize("name", sorted(IRREGULAR))
@pytest.mark.parametrize("rounds", [1, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_point_enforces_plain_constraint_with_metropolis_and_degree_weighted_with_random_walk(
        name, rounds, seed):
    g, n = irregular(name)
    e_of_lam = responsive_agents(graphs.degrees(g, n), seed)
    share = float(np.mean(e_of_lam(np.full(n, 2.0))))  # the centralised price would be lambda = 2
    plain, degw = {}, {}
    for weights in WEIGHTS:
        dual, lam, move = fixed_point(g, n, weights, rounds, e_of_lam, share)
        assert move < 1e-12, f"{weights}: not at a fixed point yet (last move {move:.2e})"
        assert 0.0 < lam.min() and lam.max() < 15.0  # no clipping: the fixed-point identity applies
        e = e_of_lam(lam)
        plain[weights], degw[weights] = excesses(g, n, e, share)
        assert dual.constraint_excess(e) == pytest.approx(plain[weights] if weights == "metropolis"
                                                          else degw[weights], abs=1e-15)
    # Metropolis: the true (plain-average) constraint mean_i e_i = c/N holds at the fixed point
    assert abs(plain["metropolis"]) < 1e-10
    # random walk: the degree-weighted one sum_i pi_i e_i = c/N holds ...
    assert abs(degw["random_walk"]) < 1e-10
    # ... and the plain one does not (irregular graph, heterogeneous agents)
    assert abs(plain["random_walk"]) > 1e-3


def test_degree_correlated_demand_makes_the_random_walk_miss_the_true_constraint_badly():
    """Hubs that buy more from the grid: the random walk weights them up, so it prices
    the hubs down to the share and lets the many low-degree agents overshoot."""
    g = hub_and_ring(30)
    n = 30
    deg = graphs.degrees(g, n).astype(float)
    assert deg.max() / deg.min() > 5
    rng = np.random.default_rng(3)
    b = np.where(deg > 10, 0.3, 1.5) * rng.uniform(0.9, 1.1, n)  # hubs light, the rest heavy
    e_of_lam = lambda lam: b * np.exp(-0.4 * lam)  # noqa: E731
    share = float(np.mean(e_of_lam(np.full(n, 2.0))))
    out = {}
    for weights in WEIGHTS:
        _, lam, move = fixed_point(g, n, weights, 1, e_of_lam, share, steps=6000)
        assert move < 1e-12 and 0 < lam.min() and lam.max() < 15
        out[weights] = excesses(g, n, e_of_lam(lam), share)
    assert abs(out["metropolis"][0]) < 1e-10
    assert abs(out["random_walk"][1]) < 1e-10
    # relative violation of the true constraint under the random walk
    assert out["random_walk"][0] / share > 0.02


def test_fixed_signals_random_walk_sees_a_violation_that_is_not_there():
    """Per-agent e_grid fixed with mean exactly c/N (the true constraint holds, tight) but a
    degree-weighted mean above c/N: the random walk drives lambda up towards its cap, Metropolis
    leaves the plain average of lambda where it started.  And the other way round: a true
    violation hidden by the degree weighting is caught by Metropolis only."""
    g, n = irregular("random_geometric_40")
    deg = graphs.degrees(g, n).astype(float)
    share = 1.0
    z = (deg - deg.mean()) / deg.std()
    e_hidden_ok = share + 0.3 * z  # mean = share exactly, degree-weighted mean > share
    x = deg @ e_hidden_ok / deg.sum() - share
    assert abs(e_hidden_ok.mean() - share) < 1e-14 and x > 0.1 and e_hidden_ok.min() > 0
    # second case: mean = share + x/2 (violated), degree-weighted mean = share - x/2
    e_hidden_violation = 2 * share - e_hidden_ok + x / 2
    for e, true_violation in [(e_hidden_ok, False), (e_hidden_violation, True)]:
        means = {}
        for weights in WEIGHTS:
            dual = DualConsensus(g, DualConfig(alpha=0.2, rounds=2, weights=weights), share=share, lam0=7.5)
            for _ in range(3000):
                dual.step(e, np.zeros(n))
            means[weights] = dual.lam.mean()
        if not true_violation:
            assert means["random_walk"] > 13.0  # pushed to the cap for nothing
            assert means["metropolis"] == pytest.approx(7.5, abs=1e-9)  # the true constraint is met
        else:
            assert means["random_walk"] < 3.0  # the violation is ignored (lambda falls from 7.5 towards 0)
            assert means["metropolis"] > 13.0  # and caught


# ------------------------------------------------------------------ Theorem 5.1 along a run
def run_with_bound(g, n, cfg, share, signals, lam0):
    dual = DualConsensus(g, cfg, share=share, lam0=lam0)
    w = dual.weights
    sigma_w = sigma_2 = 0.0
    err_w, err_2 = [], []
    for e in signals:
        dev = (e - share) - w @ (e - share)
        sigma_w = max(sigma_w, weighted_norm(dev, w))
        sigma_2 = max(sigma_2, float(np.linalg.norm(dev)))
        dual.step(e, np.zeros(n))
        err_w.append(dual.consensus_error("w"))
        err_2.append(dual.consensus_error("2"))
    return np.array(err_w), np.array(err_2), sigma_w, sigma_2, dual


@pytest.mark.parametrize("name", sorted(IRREGULAR))
@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("rounds", [1, 3])
def test_theorem_bound_holds_along_a_run(name, weights, rounds):
    g, n = irregular(name)
    rng = np.random.default_rng(11)
    bias = rng.uniform(-0.5, 0.5, n)
    signals = [1.0 + bias + rng.uniform(-0.5, 0.5, n) for _ in range(600)]
    w = stationary_weights(graphs.degrees(g, n), weights)
    share = 1.0 + float(w @ bias)  # no drift of the consensus value: no clipping
    cfg = DualConfig(alpha=0.05, eps=0.5, rounds=rounds, weights=weights)
    err_w, err_2, sigma_w, sigma_2, dual = run_with_bound(g, n, cfg, share, signals, lam0=7.5)
    assert 0 < dual.lam.min() and dual.lam.max() < 15
    s = spectral_summary(g, n, 0.5, weights=weights)
    bound = consensus_error_bound(s.rho, rounds, cfg.alpha, sigma_w)
    assert math.isfinite(bound) and err_w.max() > 0.05 * bound  # not vacuous
    assert np.all(err_w <= bound * (1 + 1e-12) + 1e-12)
    # Euclidean version with the constant C (1 for Metropolis)
    c = s.euclidean_constant
    assert np.all(err_2 <= c * consensus_error_bound(s.rho, rounds, cfg.alpha, sigma_2) * (1 + 1e-12) + 1e-12)
    if weights == "metropolis":
        np.testing.assert_allclose(err_w, err_2 / math.sqrt(n), rtol=1e-12)


@pytest.mark.parametrize("name", ["random_geometric_40", "star_like_16", "two_clusters_7"])
@pytest.mark.parametrize("rounds", [1, 2])
def test_metropolis_bound_is_attained_by_the_slowest_mode(name, rounds):
    """A constant signal along the slowest eigenvector of W_mh drives the Euclidean error
    to exactly rho^L alpha sigma / (1 - rho^L): the bound above can fail."""
    g, n = irregular(name)
    s = spectral_summary(g, n, 0.5, weights="metropolis")
    _, vecs = np.linalg.eigh(graphs.metropolis_matrix(g, n).toarray())
    v2 = vecs[:, -2]
    assert abs(v2.sum()) < 1e-10
    g_dev = v2 / weighted_norm(v2, s.weights)  # ||.||_w = 1
    r = s.rho ** rounds
    alpha = 0.5 * (1 - r) / r / np.abs(g_dev).max()  # keeps lambda inside (0, 15) from 7.5
    steps = max(200, int(8 / (1 - r)))
    err_w, _, sigma_w, _, dual = run_with_bound(
        g, n, DualConfig(alpha=alpha, eps=0.5, rounds=rounds, weights="metropolis"), 1.0,
        [1.0 + g_dev] * steps, lam0=7.5)
    assert sigma_w == pytest.approx(1.0)
    bound = consensus_error_bound(s.rho, rounds, alpha, sigma_w)
    assert np.all(err_w <= bound * (1 + 1e-9))
    assert err_w[-1] >= 0.99 * bound
    assert dual.lam.min() > 0 and dual.lam.max() < 15  # no clipping in this experiment
