"""Communication graphs: structure, connectivity, matrices, scale, reproducibility."""

import time

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from cmarl_env import graphs

SIZES = [5, 6, 17, 40]


@pytest.mark.parametrize("name", graphs.GRAPH_NAMES)
@pytest.mark.parametrize("n", SIZES)
def test_named_graphs_are_connected_with_n_nodes(name, n):
    g = graphs.make_graph(name, n, seed=3)
    assert isinstance(g, nx.Graph)
    assert sorted(g.nodes()) == list(range(n))
    assert nx.is_connected(g)
    graphs.check_connected(g)  # does not raise
    assert nx.number_of_selfloops(g) == 0
    # the edge-array path builds the same graph
    e = graphs.make_edges(name, n, seed=3)
    assert np.all(e.src < e.dst)
    assert sorted(tuple(sorted(x)) for x in g.edges()) == list(zip(e.src.tolist(), e.dst.tolist()))


@pytest.mark.parametrize("n", [3, 4, 17, 100])
def test_ring_every_node_degree_two(n):
    g = graphs.ring(n)
    assert all(d == 2 for _, d in g.degree())
    assert g.number_of_edges() == n


@pytest.mark.parametrize("n", [2, 3, 17, 100])
def test_line_has_two_leaves(n):
    g = graphs.line(n)
    deg = dict(g.degree())
    assert sorted(i for i, d in deg.items() if d == 1) == [0, n - 1]
    assert all(d == 2 for i, d in deg.items() if i not in (0, n - 1))
    assert g.number_of_edges() == n - 1


@pytest.mark.parametrize("n", [6, 7, 17, 30])
def test_two_clusters_two_cliques_and_one_bridge(n):
    g = graphs.two_clusters(n)
    a, b = (n + 1) // 2, n // 2
    bridges = list(nx.bridges(g))
    assert bridges == [(a - 1, a)] or bridges == [(a, a - 1)]
    assert g.number_of_edges() == a * (a - 1) // 2 + b * (b - 1) // 2 + 1
    h = g.copy()
    h.remove_edge(a - 1, a)
    parts = sorted(sorted(c) for c in nx.connected_components(h))
    assert parts == [list(range(a)), list(range(a, n))]
    for part in parts:
        assert h.subgraph(part).number_of_edges() == len(part) * (len(part) - 1) // 2


def test_tiny_graphs():
    assert graphs.ring(1).number_of_nodes() == 1
    assert graphs.ring(2).number_of_edges() == 1
    assert graphs.two_clusters(2).number_of_edges() == 1
    graphs.check_connected(graphs.ring(1))  # a single agent is connected
    assert graphs.random_walk_matrix(graphs.ring(1)).toarray().tolist() == [[1.0]]
    with pytest.raises(ValueError, match="n must be >= 2"):
        graphs.two_clusters(1)


def test_small_world_contains_ring_lattice():
    n, k = 50, 4
    g = graphs.small_world(n, k=k, p=0.3, seed=1)
    for u in range(n):
        for j in range(1, k // 2 + 1):
            assert g.has_edge(u, (u + j) % n)
    assert g.number_of_edges() > n * k // 2  # shortcuts added


def test_disconnected_graph_rejected_naming_components():
    g = nx.Graph()
    g.add_nodes_from(range(7))
    g.add_edges_from([(0, 1), (1, 2), (3, 4), (5, 6)])
    with pytest.raises(ValueError, match=r"disconnected: 3 components, e\.g\. nodes \[3, 4, 5, 6\] cannot reach node 0"):
        graphs.check_connected(g)
    # same for edge arrays and sparse matrices
    src, dst = np.array([0, 1, 3, 5]), np.array([1, 2, 4, 6])
    with pytest.raises(ValueError, match="3 components"):
        graphs.check_connected((src, dst), 7)
    with pytest.raises(ValueError, match="3 components"):
        graphs.check_connected(graphs.adjacency((src, dst), 7))
    # the theory-facing constructors refuse it too
    from algorithms.dual import DualConsensus
    from algorithms.theory import spectral_summary

    with pytest.raises(ValueError, match="disconnected"):
        spectral_summary(g, 7, 0.5)
    with pytest.raises(ValueError, match="disconnected"):
        DualConsensus(g, share=1.0)


def test_empty_selfloops_and_mismatch_rejected():
    g = nx.Graph()
    g.add_nodes_from(range(4))
    with pytest.raises(ValueError, match="no edges"):
        graphs.check_connected(g)
    g.add_edges_from([(i, i) for i in range(4)])
    with pytest.raises(ValueError, match="self-loops only"):
        graphs.check_connected(g)
    with pytest.raises(ValueError, match="5 nodes but n=6"):
        graphs.check_connected(graphs.ring(5), 6)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        graphs.check_connected((np.array([0, 1]), np.array([1, 4])), 4)
    with pytest.raises(ValueError, match="n .* required"):
        graphs.adjacency((np.array([0]), np.array([1])))
    with pytest.raises(ValueError, match="0..n-1"):
        graphs.check_connected(nx.relabel_nodes(graphs.ring(4), {0: "a"}))
    with pytest.raises(ValueError, match="undirected"):
        graphs.check_connected(nx.DiGraph([(0, 1), (1, 0)]))
    with pytest.raises(ValueError, match="symmetric"):
        graphs.check_connected(sp.csr_matrix(np.array([[0, 1.0], [0, 0]])))


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        graphs.make_graph("hypercube", 8)
    for name in graphs.GRAPH_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown parameter"):
        graphs.make_graph("ring", 8, k=4)
    assert graphs.make_graph("Circular", 6).number_of_edges() == 6  # alias


@pytest.mark.parametrize("name", graphs.GRAPH_NAMES)
def test_matrices(name):
    n = 23
    g = graphs.make_graph(name, n, seed=0)
    a = graphs.adjacency(g)
    assert sp.isspmatrix_csr(a) and a.dtype == np.float64
    assert (a != a.T).nnz == 0 and set(np.unique(a.data)) == {1.0} and a.diagonal().sum() == 0
    deg = graphs.degrees(g)
    np.testing.assert_array_equal(deg, [g.degree(i) for i in range(n)])
    w = graphs.random_walk_matrix(g)
    np.testing.assert_allclose(np.asarray(w.sum(axis=1)).ravel(), 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(w.toarray(), a.toarray() / deg[:, None], rtol=0, atol=1e-15)
    p = graphs.perron_matrix(g, 0.3)
    np.testing.assert_allclose(p.toarray(), np.eye(n) - 0.3 * (np.eye(n) - w.toarray()), atol=1e-15)
    np.testing.assert_allclose(np.asarray(p.sum(axis=1)).ravel(), 1.0, atol=1e-14)
    with pytest.raises(ValueError, match="eps"):
        graphs.perron_matrix(g, 1.5)
    # all representations agree
    e = graphs.make_edges(name, n, seed=0)
    assert (graphs.adjacency(e, n) != a).nnz == 0
    assert (graphs.adjacency(a) != a).nnz == 0
    assert (graphs.adjacency(w) != a).nnz == 0  # only the pattern matters


def test_duplicates_and_selfloops_ignored_in_matrices():
    src = np.array([0, 1, 1, 2, 2, 0])
    dst = np.array([1, 0, 2, 2, 0, 1])
    a = graphs.adjacency((src, dst), 3)
    np.testing.assert_array_equal(a.toarray(), [[0, 1, 1], [1, 0, 1], [1, 1, 0]])


@pytest.mark.parametrize("name", graphs.RANDOM_GRAPH_NAMES)
def test_same_seed_same_graph(name):
    e1 = graphs.make_edges(name, 300, seed=7)
    e2 = graphs.make_edges(name, 300, seed=7)
    e3 = graphs.make_edges(name, 300, seed=8)
    np.testing.assert_array_equal(e1.src, e2.src)
    np.testing.assert_array_equal(e1.dst, e2.dst)
    assert e1.m != e3.m or not np.array_equal(e1.src, e3.src) or not np.array_equal(e1.dst, e3.dst)
    g1, g2 = graphs.make_graph(name, 300, seed=7), graphs.make_graph(name, 300, seed=7)
    assert nx.utils.graphs_equal(g1, g2)


def test_resampling_until_connected_and_error():
    # a sparse G(n, p) below the threshold: resampled, or an error naming the tries
    with pytest.raises(ValueError, match="disconnected for all 3 seeds"):
        graphs.random_edges("erdos_renyi", 200, seed=0, p=0.005, max_tries=3)
    edges = graphs.random_edges("random_geometric", 8, seed=0)
    graphs.check_connected(edges, 8)
    # connected=False returns the first draw as is
    raw = graphs.random_edges("erdos_renyi", 200, seed=0, p=0.005, connected=False)
    with pytest.raises(ValueError, match="disconnected"):
        graphs.check_connected(raw, 200)


def test_erdos_renyi_edge_density():
    n, p = 3000, 0.01  # > 2e6 pairs: the sparse sampler
    e = graphs.random_edges("erdos_renyi", n, seed=2, p=p)
    expected = p * n * (n - 1) / 2
    assert abs(e.m - expected) < 5 * np.sqrt(expected)
    assert np.unique(e.src * n + e.dst).size == e.m


@pytest.mark.parametrize("name", ["erdos_renyi", "random_geometric", "small_world", "watts_strogatz"])
def test_large_random_graph_as_edges(name):
    n = 200_000
    t0 = time.perf_counter()
    e = graphs.random_edges(name, n, seed=1)
    graphs.check_connected(e, n)
    elapsed = time.perf_counter() - t0
    assert e.src.dtype == np.int64 and e.m >= n
    assert elapsed < 20.0, f"{name}: {elapsed:.1f}s"
    w = graphs.random_walk_matrix(e, n)
    np.testing.assert_allclose(np.asarray(w.sum(axis=1)).ravel(), 1.0, atol=1e-12)


def test_dense_families_refuse_huge_n():
    with pytest.raises(ValueError, match="sparse family"):
        graphs.make_edges("complete", 1_000_000)
