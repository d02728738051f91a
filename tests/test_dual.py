"""Vectorized dual steps and DualConsensus against a plain per-agent reference of Algorithm 1."""

import dataclasses

import numpy as np
import pytest

from algorithms.dual import DualConfig, DualConsensus, consensus, dual_step_lambda, dual_step_nu
from cmarl_env import graphs


# ---------------------------------------------------------------- plain reference
def neighbour_lists(g, n):
    return [sorted(g.neighbors(i)) for i in range(n)]


def ref_lambda_step(lam, e, share, alpha, lo, hi):
    return [min(max(lam[i] + alpha * (e[i] - share[i]), lo), hi) for i in range(len(lam))]


def ref_consensus(lam, nbrs, eps, rounds):
    for _ in range(rounds):
        lam = [lam[i] - eps * (lam[i] - sum(lam[j] for j in nbrs[i]) / len(nbrs[i])) for i in range(len(lam))]
    return lam


def ref_nu_step(nu, r2, eta, lo, hi):
    return [min(max(nu[i] - eta * r2[i], lo), hi) for i in range(len(nu))]


def ref_run(nbrs, cfg, share, signals):
    """Algorithm 1 with period-k averaging, one agent at a time."""
    n = len(nbrs)
    lam, nu = [0.0] * n, [0.0] * n
    acc_e, acc_r, count = [0.0] * n, [0.0] * n, 0
    lam_hist, nu_hist = [], []
    for e, r2 in signals:
        acc_e = [acc_e[i] + e[i] for i in range(n)]
        acc_r = [acc_r[i] + r2[i] for i in range(n)]
        count += 1
        if count == cfg.update_period:
            me = [acc_e[i] / count for i in range(n)]
            mr = [acc_r[i] / count for i in range(n)]
            lam = ref_lambda_step(lam, me, share, cfg.alpha, cfg.lambda_min, cfg.lambda_max)
            lam = ref_consensus(lam, nbrs, cfg.eps, cfg.rounds)
            nu = ref_nu_step(nu, mr, cfg.eta, cfg.nu_min, cfg.nu_max)
            acc_e, acc_r, count = [0.0] * n, [0.0] * n, 0
        lam_hist.append(list(lam))
        nu_hist.append(list(nu))
    return np.array(lam_hist), np.array(nu_hist)


def random_signals(rng, n, steps, scale=1.0):
    base = rng.uniform(0.5, 1.5, n)
    return [(scale * base * rng.uniform(0.0, 2.0, n), scale * rng.normal(0.0, 1.0, n)) for _ in range(steps)]


# ---------------------------------------------------------------- pure functions
def test_pure_functions_match_reference():
    rng = np.random.default_rng(0)
    g = graphs.erdos_renyi(25, seed=4)
    nbrs = neighbour_lists(g, 25)
    w = graphs.random_walk_matrix(g)
    for _ in range(20):
        lam = rng.uniform(-1, 16, 25)
        e = rng.uniform(0, 3, 25)
        share = rng.uniform(0, 2, 25)
        got = dual_step_lambda(lam, e, share, 0.7)
        np.testing.assert_allclose(got, ref_lambda_step(list(lam), e, share, 0.7, 0.0, 15.0), atol=1e-12, rtol=0)
        got = dual_step_lambda(lam, e, 0.4, 0.7, lam_max=3.0)  # scalar share
        np.testing.assert_allclose(got, ref_lambda_step(list(lam), e, [0.4] * 25, 0.7, 0.0, 3.0), atol=1e-12, rtol=0)
        for rounds in (0, 1, 4):
            got = consensus(lam, w, 0.35, rounds)
            np.testing.assert_allclose(got, ref_consensus(list(lam), nbrs, 0.35, rounds), atol=1e-12, rtol=0)
        nu = rng.uniform(-25, 25, 25)
        r2 = rng.normal(0, 3, 25)
        np.testing.assert_allclose(dual_step_nu(nu, r2, 0.3), ref_nu_step(list(nu), r2, 0.3, -20.0, 20.0), atol=1e-12)


def test_consensus_zero_rounds_is_identity_copy_and_inputs_untouched():
    lam = np.array([1.0, 5.0, 2.0])
    w = graphs.random_walk_matrix(graphs.ring(3))
    out = consensus(lam, w, 0.5, 0)
    np.testing.assert_array_equal(out, lam)
    assert out is not lam
    before = lam.copy()
    consensus(lam, w, 0.5, 3)
    dual_step_lambda(lam, np.ones(3), 0.5, 0.1)
    np.testing.assert_array_equal(lam, before)
    with pytest.raises(ValueError, match="rounds"):
        consensus(lam, w, 0.5, -1)


def test_consensus_preserves_degree_weighted_average():
    g = graphs.two_clusters(9)
    deg = graphs.degrees(g).astype(float)
    lam = np.random.default_rng(1).uniform(0, 10, 9)
    out = consensus(lam, graphs.random_walk_matrix(g), 0.5, 7)
    assert abs(deg @ out - deg @ lam) < 1e-10


# ---------------------------------------------------------------- DualConsensus
CASES = [
    # graph, n, config kwargs, share kind, signal scale
    ("erdos_renyi", 12, dict(alpha=0.05, eps=0.5, eta=0.05, rounds=1), "scalar", 1.0),
    ("ring", 9, dict(alpha=0.3, eps=0.8, eta=0.2, rounds=3), "array", 3.0),  # clipping active
    ("two_clusters", 10, dict(alpha=0.2, eps=1.0, eta=0.1, rounds=2, update_period=4), "array", 2.0),
    ("small_world", 20, dict(alpha=0.1, eps=0.3, eta=0.5, rounds=0), "scalar", 1.0),
    ("random_geometric", 15, dict(alpha=0.08, eps=0.6, eta=0.05, rounds=5, update_period=3,
                                  lambda_max=4.0, nu_min=-2.0, nu_max=3.0), "scalar", 2.0),
    ("line", 7, dict(alpha=0.15, eps=0.45, eta=0.05, rounds=1, update_period=2), "array", 1.5),
]


@pytest.mark.parametrize("name, n, kw, share_kind, scale", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_dual_consensus_matches_plain_reference(name, n, kw, share_kind, scale, seed):
    rng = np.random.default_rng(100 + seed)
    g = graphs.make_graph(name, n, seed=seed)
    cfg = DualConfig(**kw)
    share = rng.uniform(0.5, 1.5, n) if share_kind == "array" else np.full(n, 0.9)
    signals = random_signals(rng, n, 200, scale)
    ref_lam, ref_nu = ref_run(neighbour_lists(g, n), cfg, share, signals)

    # the graph given three ways: networkx, edge arrays, the random-walk matrix
    edges = graphs.make_edges(name, n, seed=seed)
    for graph, extra in ((g, {}), (edges, {"n": n}), (graphs.random_walk_matrix(g), {"n_agents": n})):
        dual = DualConsensus(graph, cfg, share=share if share_kind == "array" else 0.9, **extra)
        lam_hist, nu_hist = [], []
        for e, r2 in signals:
            lam, nu = dual.step(e, r2)
            lam_hist.append(lam)
            nu_hist.append(nu)
        np.testing.assert_allclose(np.array(lam_hist), ref_lam, atol=1e-9, rtol=0)
        np.testing.assert_allclose(np.array(nu_hist), ref_nu, atol=1e-9, rtol=0)
        assert dual.state.t == 200 and dual.state.n_updates == 200 // cfg.update_period
    assert np.ptp(ref_lam) > 0.1  # multipliers actually moved


def ref_metropolis_consensus(lam, g, eps, rounds):
    """Per-agent Metropolis-Hastings consensus: w_ij = 1/(1 + max(d_i, d_j)), w_ii = 1 - sum_j w_ij."""
    deg = dict(g.degree())
    nbrs = {i: sorted(g.neighbors(i)) for i in g.nodes()}
    for _ in range(rounds):
        new = []
        for i in range(len(lam)):
            w = {j: 1.0 / (1 + max(deg[i], deg[j])) for j in nbrs[i]}
            mixed = (1.0 - sum(w.values())) * lam[i] + sum(w[j] * lam[j] for j in nbrs[i])
            new.append(lam[i] - eps * (lam[i] - mixed))
        lam = new
    return lam


@pytest.mark.parametrize("name, n, kw, share_kind, scale", CASES)
def test_metropolis_dual_consensus_matches_plain_reference(name, n, kw, share_kind, scale):
    """The same Algorithm 1 with Metropolis-Hastings weights, against a per-agent loop."""
    rng = np.random.default_rng(7)
    g = graphs.make_graph(name, n, seed=1)
    cfg = DualConfig(**kw, weights="metropolis")
    share = rng.uniform(0.5, 1.5, n) if share_kind == "array" else np.full(n, 0.9)
    signals = random_signals(rng, n, 120, scale)
    lam, nu = [0.0] * n, [0.0] * n
    acc_e, acc_r, count = np.zeros(n), np.zeros(n), 0
    ref_lam = []
    for e, r2 in signals:
        acc_e, acc_r, count = acc_e + e, acc_r + r2, count + 1
        if count == cfg.update_period:
            lam = ref_lambda_step(lam, acc_e / count, share, cfg.alpha, cfg.lambda_min, cfg.lambda_max)
            lam = ref_metropolis_consensus(lam, g, cfg.eps, cfg.rounds)
            acc_e, acc_r, count = np.zeros(n), np.zeros(n), 0
        ref_lam.append(list(lam))
    for graph, extra in ((g, {}), (graphs.make_edges(name, n, seed=1), {"n": n}),
                         (graphs.metropolis_matrix(g), {"n_agents": n})):
        dual = DualConsensus(graph, cfg, share=share, **extra)
        assert dual.weighting == "metropolis" and dual.W is dual.W_rw is dual.walk
        np.testing.assert_allclose(dual.weights, 1.0 / n)  # uniform stationary weights
        hist = [dual.step(e, r2)[0] for e, r2 in signals]
        np.testing.assert_allclose(np.array(hist), ref_lam, atol=1e-9, rtol=0)
        # the consensus value is the plain average
        assert dual.weighted_average() == pytest.approx(dual.lam.mean(), abs=1e-12)
        assert dual.consensus_value() == dual.weighted_average()
        assert dual.consensus_error("w") == pytest.approx(dual.consensus_error("2") / np.sqrt(n), rel=1e-12)
    if cfg.rounds:  # really a different matrix than the random walk on these irregular graphs
        rw = DualConsensus(g, dataclasses.replace(cfg, weights="random_walk"), share=share)
        rw_hist = [rw.step(e, r2)[0] for e, r2 in signals]
        deg = graphs.degrees(g)
        if deg.min() < deg.max():
            assert np.abs(np.array(rw_hist) - np.array(ref_lam)).max() > 1e-6


def test_random_walk_default_unchanged_by_the_weights_option():
    """Default config and explicit weights="random_walk" give bit-identical runs; the
    stationary weights stay the degree weights."""
    g = graphs.random_geometric(30, seed=2)
    rng = np.random.default_rng(3)
    signals = random_signals(rng, 30, 100)
    a = DualConsensus(g, DualConfig(alpha=0.1, rounds=2), share=0.8)
    b = DualConsensus(g, DualConfig(alpha=0.1, rounds=2, weights="random_walk"), share=0.8)
    for e, r2 in signals:
        np.testing.assert_array_equal(a.step(e, r2)[0], b.step(e, r2)[0])
    deg = graphs.degrees(g)
    np.testing.assert_array_equal(a.weights, deg / deg.sum())
    assert a.weighting == "random_walk"
    np.testing.assert_array_equal(a.W.toarray(), graphs.random_walk_matrix(g).toarray())


def test_constraint_excess_under_either_weighting():
    g = graphs.line(4)  # degrees 1, 2, 2, 1
    dual = DualConsensus(g, DualConfig(weights="metropolis"), share=0.5)
    e = np.array([1.0, 0.0, 0.0, 1.0])  # plain mean 0.5 = share, degree-weighted mean 2/6
    assert dual.constraint_excess(e) == pytest.approx(0.0)
    assert dual.constraint_excess(e, "random_walk") == pytest.approx(2 / 6 - 0.5)
    rw = DualConsensus(g, share=0.5)
    assert rw.constraint_excess(e) == pytest.approx(2 / 6 - 0.5)
    assert rw.constraint_excess(e, "metropolis") == pytest.approx(0.0)
    with pytest.raises(ValueError, match="allowed"):
        rw.constraint_excess(e, "uniform")


def test_no_consensus_means_independent_agents():
    """L = 0: every agent's lambda depends on its own signal only."""
    n = 8
    rng = np.random.default_rng(5)
    signals = random_signals(rng, n, 50)
    cfg = DualConfig(alpha=0.2, rounds=0)
    a = DualConsensus(graphs.ring(n), cfg, share=1.0)
    b = DualConsensus(None, cfg, share=1.0, n=n)  # no graph needed without consensus
    for e, r2 in signals:
        la, _ = a.step(e, r2)
        lb, _ = b.step(e, r2)
    lam = np.zeros(n)
    for e, _ in signals:
        lam = np.clip(lam + 0.2 * (e - 1.0), 0.0, 15.0)
    np.testing.assert_allclose(la, lam, atol=1e-12)
    np.testing.assert_allclose(lb, lam, atol=1e-12)
    with pytest.raises(ValueError, match="graph is required"):
        DualConsensus(None, DualConfig(rounds=1), share=1.0, n=n)


def test_consensus_pulls_multipliers_together():
    n = 12
    rng = np.random.default_rng(2)
    signals = random_signals(rng, n, 300)
    errs = {}
    for rounds in (0, 1, 5):
        dual = DualConsensus(graphs.ring(n), DualConfig(alpha=0.05, rounds=rounds), share=1.0)
        for e, r2 in signals:
            dual.step(e, r2)
        errs[rounds] = dual.consensus_error()
    assert errs[0] > errs[1] > errs[5] > 0


def test_diagnostics_and_reset():
    g = graphs.line(4)
    dual = DualConsensus(g, DualConfig(rounds=1), share=0.0, lam0=np.array([0.0, 1.0, 2.0, 3.0]))
    deg = np.array([1, 2, 2, 1], float)
    assert dual.weighted_average() == pytest.approx(deg @ [0, 1, 2, 3] / 6)
    avg = deg @ [0, 1, 2, 3] / 6
    assert dual.consensus_error() == pytest.approx(np.linalg.norm(np.array([0, 1, 2, 3]) - avg))
    assert dual.consensus_error("w") == pytest.approx(np.sqrt(deg @ (np.array([0, 1, 2, 3]) - avg) ** 2 / 6))
    lam = dual.lam
    lam[:] = 99.0  # a copy: the state is not touched
    assert dual.lam[0] == 0.0
    dual.reset()
    assert np.all(dual.lam == 0) and np.all(dual.nu == 0) and dual.state.t == 0
    with pytest.raises(ValueError, match="lam0 must lie in"):
        dual.reset(lam0=20.0)
    with pytest.raises(ValueError, match="shape"):
        dual.step(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="share"):
        DualConsensus(g, share=np.ones(3))


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("alpha", 0.0, r"alpha must be > 0"),
        ("alpha", float("nan"), r"alpha must be a finite number"),
        ("eps", 0.0, r"eps must satisfy 0 < eps <= 1"),
        ("eps", 1.5, r"eps must satisfy 0 < eps <= 1"),
        ("eta", -0.1, r"eta must be > 0"),
        ("rounds", -1, r"rounds must be an integer >= 0"),
        ("rounds", 1.5, r"rounds must be an integer >= 0"),
        ("update_period", 0, r"update_period must be an integer >= 1"),
        ("lambda_min", -1.0, r"lambda_min must be >= 0"),
        ("lambda_max", 0.0, r"lambda_max must be > lambda_min"),
        ("nu_max", -30.0, r"nu_max must be > nu_min"),
        ("weights", "metropolis-hastings", r"weights must be one of 'random_walk', 'metropolis', got 'metropolis-hastings'"),
        ("weights", None, r"weights must be one of 'random_walk', 'metropolis', got None"),
    ],
)
def test_config_validation_names_the_field(field, value, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        DualConfig(**{field: value})
    assert f"DualConfig.{field}" in str(info.value)


def test_config_defaults_and_roundtrip():
    c = DualConfig()
    assert (c.alpha, c.eps, c.eta, c.rounds, c.update_period) == (0.01, 0.5, 0.07, 1, 1)
    assert (c.lambda_min, c.lambda_max, c.nu_min, c.nu_max) == (0.0, 15.0, -20.0, 20.0)
    assert c.weights == "random_walk"  # the paper's matrix stays the default
    assert DualConfig.from_dict(c.to_dict()) == c
    m = c.replace(weights="metropolis")
    assert m.to_dict()["weights"] == "metropolis" and DualConfig.from_dict(m.to_dict()) == m
    assert dataclasses.replace(c, rounds=np.int64(3)).rounds == 3
    with pytest.raises(ValueError, match="unknown DualConfig field"):
        DualConfig.from_dict({"alpah": 0.1})


def test_large_n_step_is_vectorized():
    import time

    n = 200_000
    edges = graphs.random_edges("small_world", n, seed=0)
    dual = DualConsensus(edges, DualConfig(rounds=2), share=1.0, n=n)
    e, r2 = np.ones(n), np.zeros(n)
    t0 = time.perf_counter()
    for _ in range(10):
        dual.step(e, r2)
    assert time.perf_counter() - t0 < 5.0
