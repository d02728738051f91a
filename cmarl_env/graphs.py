"""Communication graphs for the distributed dual consensus (docs/model.md).

Agents ``0 .. n-1`` exchange their multipliers with their neighbours on an
undirected graph.  This module builds the graphs of the paper (Figure 1: ring,
line, two clusters joined by one edge) plus random families for scaling
studies, and turns any of them into the sparse matrices the consensus and its
theory use.

Two representations
-------------------
* ``networkx.Graph`` with integer nodes ``0 .. n-1`` -- convenient for small
  graphs, plotting and interoperability (:func:`make_graph`).
* ``Edges(src, dst)`` -- two int64 arrays of the same length with
  ``src < dst``, no self-loops and no duplicates (:func:`make_edges`,
  :func:`random_edges`).  Built with numpy only, so the random families scale
  to ``n = 1_000_000`` agents without a python loop per node.

Every function that takes ``graph_or_edges`` accepts a ``networkx.Graph``, an
``(src, dst)`` tuple (``n`` required) or a square ``scipy.sparse`` matrix whose
off-diagonal non-zero pattern is the (symmetric) edge set.  Self-loops are
ignored (an agent is not its own neighbour, as in the paper's ``N_i``) and
duplicate edges count once.

Families and connectivity
-------------------------
Connected by construction:

* ``ring`` -- cycle ``0-1-...-(n-1)-0`` (paper Fig. 1a);
* ``line`` -- path ``0-1-...-(n-1)`` (paper Fig. 1b);
* ``two_clusters`` -- cliques of ``ceil(n/2)`` and ``floor(n/2)`` nodes joined
  by the single edge ``(ceil(n/2)-1, ceil(n/2))`` (paper Fig. 1c);
* ``complete`` -- all pairs;
* ``small_world`` -- Newman-Watts-Strogatz: ring lattice (each node linked to
  its ``k`` nearest ring neighbours) plus, per lattice edge with probability
  ``p``, one extra random chord.  Shortcuts are added, never rewired, so the
  ring is always there.

Resampled until connected:

* ``watts_strogatz`` -- classic Watts-Strogatz rewiring (each lattice edge's
  far end moved to a uniform random node with probability ``p``; edges made
  duplicate by rewiring are merged);
* ``erdos_renyi`` -- G(n, p), default ``p = min(1, 2 ln(n) / n)``;
* ``random_geometric`` -- uniform points in the unit square, edges between
  points closer than ``radius``, default ``radius = sqrt(2 ln(n) / (pi n))``.

"Resampled until connected" means: try ``seed, seed+1, ...`` (at most
``max_tries`` times) and return the first connected draw; a ``ValueError`` is
raised when none is connected.  The same ``(name, n, seed, params)`` always
gives the same graph, and :func:`make_graph` and :func:`make_edges` give the
same edge set.  The defaults sit above the connectivity thresholds
(``ln(n)/n`` for G(n, p), ``pi r^2 n = ln n`` for geometric graphs), so the
first draw is almost always connected for large n (small geometric graphs,
n < 30, typically need 2-4 draws).  Note that a resampled family is the
random graph *conditioned on connectivity*.

Scale (2 CPUs): ``random_edges`` builds a connected 10^6-node Erdos-Renyi or
geometric graph (~1.4e7 edges, connectivity check included) in ~10 s and
~2 GB peak memory, a small world in < 1 s.

Matrices (all ``scipy.sparse.csr_matrix``, float64)
---------------------------------------------------
* :func:`adjacency` ``A`` (symmetric 0/1), :func:`degrees` ``d_i = |N_i|``,
* :func:`random_walk_matrix` ``W = D^-1 A`` (row-stochastic; ``W @ lam`` is
  the vector of neighbour averages),
* :func:`metropolis_matrix` ``W_mh``: Metropolis-Hastings weights
  ``w_ij = 1 / (1 + max(d_i, d_j))`` on edges, ``w_ii = 1 - sum_j w_ij``
  (symmetric, doubly stochastic, non-negative, ``w_ii >= 1/(1+d_i) > 0``),
* :func:`consensus_matrix` -- the one selected by ``weights`` in
  :data:`CONSENSUS_WEIGHTS` (``"random_walk"``, the paper's default, or
  ``"metropolis"``),
* :func:`perron_matrix` ``P = I - eps (I - W)`` (paper eq. B.3 for ``W = D^-1 A``).

Consensus weights
-----------------
The consensus step ``lam <- lam - eps (lam - W lam)`` is the same formula for
both matrices; what differs is the value it converges to.  ``D^-1 A`` is only
row-stochastic: its left Perron vector is ``pi_i = d_i / sum_j d_j``, so the
consensus preserves and converges to the *degree-weighted* average, and the
dual step then enforces ``sum_i pi_i e_grid_i = c/N`` -- on an irregular graph
a different constraint than the true ``sum_i e_grid_i = c``.  ``W_mh`` is doubly
stochastic (``pi`` uniform): the consensus value is the plain average and the
enforced constraint is the true one, on any connected graph.

Pure functions only; nothing here imports torch.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, NamedTuple

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = [
    "Edges",
    "GRAPH_NAMES",
    "RANDOM_GRAPH_NAMES",
    "CONNECTED_BY_CONSTRUCTION",
    "ring",
    "line",
    "two_clusters",
    "complete",
    "erdos_renyi",
    "random_geometric",
    "small_world",
    "watts_strogatz",
    "random_edges",
    "make_edges",
    "make_graph",
    "check_connected",
    "adjacency",
    "degrees",
    "random_walk_matrix",
    "metropolis_matrix",
    "consensus_matrix",
    "check_weights",
    "CONSENSUS_WEIGHTS",
    "perron_matrix",
    "to_networkx",
]


class Edges(NamedTuple):
    """Undirected edge list: ``src[k] < dst[k]``, int64, no duplicates."""

    src: np.ndarray
    dst: np.ndarray

    @property
    def m(self) -> int:
        """Number of (undirected) edges."""
        return int(self.src.shape[0])


GRAPH_NAMES: tuple[str, ...] = (
    "ring",
    "line",
    "two_clusters",
    "complete",
    "erdos_renyi",
    "random_geometric",
    "small_world",
    "watts_strogatz",
)
RANDOM_GRAPH_NAMES: tuple[str, ...] = (
    "erdos_renyi",
    "random_geometric",
    "small_world",
    "watts_strogatz",
)
CONNECTED_BY_CONSTRUCTION: tuple[str, ...] = (
    "ring",
    "line",
    "two_clusters",
    "complete",
    "small_world",
)

_ALIASES = {
    "circle": "ring",
    "circular": "ring",
    "cycle": "ring",
    "linear": "line",
    "path": "line",
    "clusters": "two_clusters",
    "two_cluster": "two_clusters",
    "full": "complete",
    "er": "erdos_renyi",
    "gnp": "erdos_renyi",
    "rgg": "random_geometric",
    "geometric": "random_geometric",
    "newman_watts": "small_world",
    "ws": "watts_strogatz",
}

#: dense families refuse to build more edges than this (memory guard)
MAX_DENSE_EDGES = 50_000_000
_DEFAULT_MAX_TRIES = 100


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------
def _check_n(n: Any, minimum: int = 1, name: str = "graph") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{name}: n must be an integer >= {minimum}, got {n!r}")
    n = int(n)
    if n < minimum:
        raise ValueError(f"{name}: n must be >= {minimum}, got {n}")
    return n


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _canonical(src: np.ndarray, dst: np.ndarray, n: int) -> Edges:
    """Drop self-loops, orient ``src < dst``, remove duplicates (sorted output)."""
    src = np.asarray(src, dtype=np.int64).ravel()
    dst = np.asarray(dst, dtype=np.int64).ravel()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    lo = np.minimum(src, dst)
    hi = np.maximum(src, dst)
    key = np.unique(lo * np.int64(n) + hi)
    return Edges(key // n, key % n)


def _lattice(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ring lattice: node u linked to u+1 .. u+k/2 (mod n); arrays with repeats allowed."""
    u = np.arange(n, dtype=np.int64)
    half = k // 2
    src = np.tile(u, half)
    dst = (src + np.repeat(np.arange(1, half + 1, dtype=np.int64), n)) % n
    return src, dst


def _n_components(src: np.ndarray, dst: np.ndarray, n: int) -> tuple[int, np.ndarray]:
    a = _adjacency_from_edges(src, dst, n)
    return connected_components(a, directed=False, return_labels=True)


def _is_connected_edges(edges: Edges, n: int) -> bool:
    if n == 1:
        return True
    if edges.m < n - 1:
        return False
    k, _ = _n_components(edges.src, edges.dst, n)
    return k == 1


# --------------------------------------------------------------------------
# deterministic families (edge arrays)
# --------------------------------------------------------------------------
def _ring_edges(n: int) -> Edges:
    n = _check_n(n, 1, "ring")
    if n == 1:
        return Edges(np.zeros(0, np.int64), np.zeros(0, np.int64))
    u = np.arange(n, dtype=np.int64)
    return _canonical(u, (u + 1) % n, n)


def _line_edges(n: int) -> Edges:
    n = _check_n(n, 1, "line")
    u = np.arange(n - 1, dtype=np.int64)
    return Edges(u, u + 1)


def _clique(lo: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(size, 1)
    return i.astype(np.int64) + lo, j.astype(np.int64) + lo


def _guard_dense(name: str, n_edges: int) -> None:
    if n_edges > MAX_DENSE_EDGES:
        raise ValueError(
            f"{name}: would build {n_edges:,} edges (> {MAX_DENSE_EDGES:,}); use a sparse family "
            f"such as 'ring', 'small_world', 'erdos_renyi' or 'random_geometric' for this many agents"
        )


def _complete_edges(n: int) -> Edges:
    n = _check_n(n, 1, "complete")
    _guard_dense("complete", n * (n - 1) // 2)
    return Edges(*_clique(0, n))


def _two_clusters_edges(n: int) -> Edges:
    n = _check_n(n, 2, "two_clusters")
    a = (n + 1) // 2  # ceil(n/2)
    b = n // 2
    _guard_dense("two_clusters", a * (a - 1) // 2 + b * (b - 1) // 2 + 1)
    s1, d1 = _clique(0, a)
    s2, d2 = _clique(a, b)
    src = np.concatenate([s1, s2, [a - 1]])
    dst = np.concatenate([d1, d2, [a]])
    return _canonical(src, dst, n)


# --------------------------------------------------------------------------
# random families (edge arrays, one draw; connectivity handled by random_edges)
# --------------------------------------------------------------------------
def _default_p(n: int) -> float:
    return 1.0 if n <= 2 else min(1.0, 2.0 * math.log(n) / n)


def _default_radius(n: int) -> float:
    return math.sqrt(2.0) if n <= 2 else min(math.sqrt(2.0), math.sqrt(2.0 * math.log(n) / (math.pi * n)))


def _er_draw(n: int, rng: np.random.Generator, p: float) -> tuple[Edges, dict]:
    n_pairs = n * (n - 1) // 2
    if n_pairs <= 2_000_000:
        i, j = np.triu_indices(n, 1)
        mask = rng.random(n_pairs) < p
        return Edges(i[mask].astype(np.int64), j[mask].astype(np.int64)), {}
    # sparse regime: m ~ Binomial(n_pairs, p), then a uniform m-subset of the pairs,
    # drawn with replacement + de-duplication (+ top-up), then a uniform sub-sample.
    m = int(rng.binomial(n_pairs, p))
    _guard_dense("erdos_renyi", m)
    keys = np.zeros(0, dtype=np.int64)
    nn = np.int64(n)
    while keys.shape[0] < m:
        need = m - keys.shape[0]
        size = int(need * 1.02) + 64
        a = rng.integers(0, n, size=size, dtype=np.int64)
        b = rng.integers(0, n, size=size, dtype=np.int64)
        keep = a != b
        a, b = a[keep], b[keep]
        new = np.minimum(a, b) * nn + np.maximum(a, b)
        keys = np.unique(np.concatenate([keys, new]))
    if keys.shape[0] > m:
        keys = np.sort(rng.choice(keys, size=m, replace=False))
    return Edges(keys // nn, keys % nn), {}


def _rgg_draw(n: int, rng: np.random.Generator, radius: float) -> tuple[Edges, dict]:
    pts = rng.random((n, 2))
    tree = cKDTree(pts)
    pairs = tree.query_pairs(float(radius), output_type="ndarray")
    edges = _canonical(pairs[:, 0], pairs[:, 1], n) if pairs.size else Edges(
        np.zeros(0, np.int64), np.zeros(0, np.int64)
    )
    return edges, {"pos": pts}


def _check_k(n: int, k: Any, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2 or k % 2 or k >= n:
        raise ValueError(f"{name}: k must be an even integer with 2 <= k < n={n}, got {k!r}")
    return int(k)


def _check_prob(p: Any, name: str, field: str = "p") -> float:
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {field} must be a number in [0, 1], got {p!r}") from None
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"{name}: {field} must be in [0, 1], got {p}")
    return p


def _nws_draw(n: int, rng: np.random.Generator, k: int, p: float) -> tuple[Edges, dict]:
    src, dst = _lattice(n, k)
    add = rng.random(src.shape[0]) < p
    u = src[add]
    w = (u + rng.integers(1, n, size=u.shape[0], dtype=np.int64)) % n  # uniform w != u
    return _canonical(np.concatenate([src, u]), np.concatenate([dst, w]), n), {}


def _ws_draw(n: int, rng: np.random.Generator, k: int, p: float) -> tuple[Edges, dict]:
    src, dst = _lattice(n, k)
    rewire = rng.random(src.shape[0]) < p
    dst = dst.copy()
    dst[rewire] = (src[rewire] + rng.integers(1, n, size=int(rewire.sum()), dtype=np.int64)) % n
    # edges made duplicate by rewiring are merged (networkx re-draws them instead)
    return _canonical(src, dst, n), {}


def _random_draw(kind: str, n: int, seed: int, params: dict) -> tuple[Edges, dict]:
    """One draw of a random family from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    if kind == "erdos_renyi":
        return _er_draw(n, rng, params["p"])
    if kind == "random_geometric":
        return _rgg_draw(n, rng, params["radius"])
    if kind == "small_world":
        return _nws_draw(n, rng, params["k"], params["p"])
    if kind == "watts_strogatz":
        return _ws_draw(n, rng, params["k"], params["p"])
    raise AssertionError(kind)


def _random_params(kind: str, n: int, p=None, radius=None, k=4) -> dict:
    if kind == "erdos_renyi":
        p = _default_p(n) if p is None else _check_prob(p, kind)
        return {"p": p}
    if kind == "random_geometric":
        if radius is None:
            radius = _default_radius(n)
        else:
            try:
                radius = float(radius)
            except (TypeError, ValueError):
                raise ValueError(f"random_geometric: radius must be a positive number, got {radius!r}") from None
            if not (radius > 0 and math.isfinite(radius)):
                raise ValueError(f"random_geometric: radius must be a positive finite number, got {radius}")
        return {"radius": radius}
    if kind in ("small_world", "watts_strogatz"):
        _check_n(n, 3, kind)
        return {"k": _check_k(n, k, kind), "p": _check_prob(0.1 if p is None else p, kind)}
    raise AssertionError(kind)


def _random_graph(
    kind: str,
    n: int,
    seed: int = 0,
    *,
    connected: bool = True,
    max_tries: int = _DEFAULT_MAX_TRIES,
    p: float | None = None,
    radius: float | None = None,
    k: int = 4,
) -> tuple[Edges, dict]:
    kind = _normalize_name(kind)
    if kind not in RANDOM_GRAPH_NAMES:
        raise ValueError(f"unknown random graph kind {kind!r}; known random kinds: {', '.join(RANDOM_GRAPH_NAMES)}")
    n = _check_n(n, 1, kind)
    seed = _check_seed(seed)
    if isinstance(max_tries, bool) or not isinstance(max_tries, (int, np.integer)) or max_tries < 1:
        raise ValueError(f"max_tries must be an integer >= 1, got {max_tries!r}")
    params = _random_params(kind, n, p=p, radius=radius, k=k)
    if n == 1:
        return Edges(np.zeros(0, np.int64), np.zeros(0, np.int64)), {"seed_used": seed, "pos": np.zeros((1, 2))}
    tries = 1 if (not connected or kind in CONNECTED_BY_CONSTRUCTION) else int(max_tries)
    for t in range(tries):
        edges, extra = _random_draw(kind, n, seed + t, params)
        if not connected or kind in CONNECTED_BY_CONSTRUCTION or _is_connected_edges(edges, n):
            extra["seed_used"] = seed + t
            extra.update(params)
            return edges, extra
    raise ValueError(
        f"{kind}(n={n}, {params}) was disconnected for all {tries} seeds {seed}..{seed + tries - 1}; "
        f"increase the density (p / radius / k) or max_tries"
    )


def random_edges(
    kind: str,
    n: int,
    seed: int = 0,
    *,
    connected: bool = True,
    max_tries: int = _DEFAULT_MAX_TRIES,
    p: float | None = None,
    radius: float | None = None,
    k: int = 4,
) -> Edges:
    """Edge arrays of a random graph family, built with numpy (scales to n = 10^6).

    ``kind``: ``erdos_renyi`` (uses ``p``), ``random_geometric`` (``radius``),
    ``small_world`` (Newman-Watts-Strogatz; ``k``, ``p``; connected by
    construction) or ``watts_strogatz`` (``k``, ``p``).
    With ``connected=True`` (default) draws from ``default_rng(seed)``,
    ``default_rng(seed+1)``, ... until a connected graph appears (at most
    ``max_tries``), else ``ValueError``.  Returns ``Edges(src, dst)`` with
    ``src < dst``, sorted, no duplicates.
    """
    return _random_graph(kind, n, seed, connected=connected, max_tries=max_tries, p=p, radius=radius, k=k)[0]


# --------------------------------------------------------------------------
# networkx constructors
# --------------------------------------------------------------------------
def to_networkx(edges: tuple[np.ndarray, np.ndarray], n: int) -> nx.Graph:
    """``networkx.Graph`` on nodes ``0..n-1`` from an ``(src, dst)`` edge list."""
    n = _check_n(n, 1)
    src, dst = (np.asarray(a, dtype=np.int64) for a in edges)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(src.tolist(), dst.tolist()))
    return g


def _named(g: nx.Graph, name: str, **attrs) -> nx.Graph:
    g.graph["name"] = name
    g.graph.update(attrs)
    return g


def ring(n: int) -> nx.Graph:
    """Cycle ``0-1-...-(n-1)-0`` (every node has degree 2 for n >= 3; n=2 is one edge, n=1 one node)."""
    return _named(to_networkx(_ring_edges(n), n), "ring")


def line(n: int) -> nx.Graph:
    """Path ``0-1-...-(n-1)`` (two leaves for n >= 2)."""
    return _named(to_networkx(_line_edges(n), n), "line")


def two_clusters(n: int) -> nx.Graph:
    """Two cliques of ``ceil(n/2)`` and ``floor(n/2)`` nodes joined by the one edge
    ``(ceil(n/2)-1, ceil(n/2))`` (paper Figure 1c); ``n >= 2``."""
    return _named(to_networkx(_two_clusters_edges(n), n), "two_clusters")


def complete(n: int) -> nx.Graph:
    """All ``n (n-1) / 2`` pairs."""
    return _named(to_networkx(_complete_edges(n), n), "complete")


def _random_nx(kind: str, n: int, seed: int, **kw) -> nx.Graph:
    edges, extra = _random_graph(kind, n, seed, **kw)
    g = to_networkx(edges, n)
    pos = extra.pop("pos", None)
    if pos is not None:
        nx.set_node_attributes(g, {i: (float(x), float(y)) for i, (x, y) in enumerate(pos)}, "pos")
    return _named(g, kind, seed=seed, **extra)


def erdos_renyi(n: int, p: float | None = None, seed: int = 0, *, max_tries: int = _DEFAULT_MAX_TRIES) -> nx.Graph:
    """Connected G(n, p) (default ``p = min(1, 2 ln n / n)``), resampled with seed+k until connected."""
    return _random_nx("erdos_renyi", n, seed, p=p, max_tries=max_tries)


def random_geometric(
    n: int, radius: float | None = None, seed: int = 0, *, max_tries: int = _DEFAULT_MAX_TRIES
) -> nx.Graph:
    """Connected random geometric graph in the unit square (node attribute ``pos``);
    default ``radius = sqrt(2 ln n / (pi n))``; resampled with seed+k until connected."""
    return _random_nx("random_geometric", n, seed, radius=radius, max_tries=max_tries)


def small_world(n: int, k: int = 4, p: float = 0.1, seed: int = 0) -> nx.Graph:
    """Newman-Watts-Strogatz small world: ring lattice with ``k`` nearest neighbours
    (k even, 2 <= k < n) plus a random chord per lattice edge with probability ``p``.
    Shortcuts are added, not rewired, so it is connected by construction."""
    return _random_nx("small_world", n, seed, k=k, p=p)


def watts_strogatz(
    n: int, k: int = 4, p: float = 0.1, seed: int = 0, *, max_tries: int = _DEFAULT_MAX_TRIES
) -> nx.Graph:
    """Watts-Strogatz rewiring (each lattice edge's far end re-drawn uniformly with
    probability ``p``; duplicates merged); resampled with seed+k until connected."""
    return _random_nx("watts_strogatz", n, seed, k=k, p=p, max_tries=max_tries)


# --------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------
_NX_BUILDERS: dict[str, Callable[..., nx.Graph]] = {
    "ring": ring,
    "line": line,
    "two_clusters": two_clusters,
    "complete": complete,
    "erdos_renyi": erdos_renyi,
    "random_geometric": random_geometric,
    "small_world": small_world,
    "watts_strogatz": watts_strogatz,
}
_DETERMINISTIC_EDGES: dict[str, Callable[[int], Edges]] = {
    "ring": _ring_edges,
    "line": _line_edges,
    "two_clusters": _two_clusters_edges,
    "complete": _complete_edges,
}


def _normalize_name(name: Any) -> str:
    if not isinstance(name, str):
        raise ValueError(f"graph name must be a string, got {name!r}; known graphs: {', '.join(GRAPH_NAMES)}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in GRAPH_NAMES:
        raise ValueError(f"unknown graph {name!r}; known graphs: {', '.join(GRAPH_NAMES)}")
    return key


def _check_params(name: str, params: dict) -> None:
    allowed = [
        p for p in inspect.signature(_NX_BUILDERS[name]).parameters if p not in ("n", "seed")
    ]
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise ValueError(
            f"unknown parameter(s) {bad} for graph {name!r}; accepted: {allowed if allowed else 'none'}"
        )


def make_graph(name: str, n: int, seed: int = 0, **params) -> nx.Graph:
    """Build the named communication graph as a ``networkx.Graph`` on nodes ``0..n-1``.

    ``name`` is one of :data:`GRAPH_NAMES` (a few aliases such as ``"circular"``,
    ``"linear"``, ``"er"`` are accepted).  ``seed`` is ignored by the
    deterministic families.  ``params`` are the family's keyword arguments
    (``p``, ``radius``, ``k``, ``max_tries``).
    """
    key = _normalize_name(name)
    _check_params(key, params)
    if key in _DETERMINISTIC_EDGES:
        return _NX_BUILDERS[key](n, **params)
    return _NX_BUILDERS[key](n, seed=_check_seed(seed), **params)


def make_edges(name: str, n: int, seed: int = 0, **params) -> Edges:
    """Same graph as :func:`make_graph` but as ``Edges(src, dst)`` arrays (the
    scalable path: no networkx object is built)."""
    key = _normalize_name(name)
    _check_params(key, params)
    if key in _DETERMINISTIC_EDGES:
        return _DETERMINISTIC_EDGES[key](n)
    return random_edges(key, n, seed, **params)


# --------------------------------------------------------------------------
# matrices
# --------------------------------------------------------------------------
def _adjacency_from_edges(src: np.ndarray, dst: np.ndarray, n: int) -> sp.csr_matrix:
    """Symmetric 0/1 csr adjacency (self-loops dropped, duplicates merged); no validation."""
    keep = src != dst
    src, dst = src[keep], dst[keep]
    rows = np.concatenate([src, dst])
    cols = np.concatenate([dst, src])
    a = sp.csr_matrix((np.ones(rows.shape[0], dtype=np.float64), (rows, cols)), shape=(n, n))
    a.sum_duplicates()
    a.data[:] = 1.0
    return a


def _as_edges(graph_or_edges: Any, n: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate any accepted graph representation; returns (src, dst, n)."""
    if isinstance(graph_or_edges, nx.Graph):
        g = graph_or_edges
        if g.is_directed():
            raise ValueError("communication graph must be undirected (got a directed networkx graph)")
        n_nodes = g.number_of_nodes()
        if n is None:
            n = n_nodes
        n = _check_n(n, 1)
        if n_nodes != n:
            raise ValueError(f"graph has {n_nodes} nodes but n={n} agents were given")
        nodes = list(g.nodes())
        if set(nodes) != set(range(n)):
            raise ValueError(
                "graph nodes must be the integers 0..n-1 (agent indices); "
                "relabel with networkx.convert_node_labels_to_integers"
            )
        m = g.number_of_edges()
        flat = np.fromiter((v for e in g.edges() for v in e), dtype=np.int64, count=2 * m)
        return flat[0::2], flat[1::2], n
    if sp.issparse(graph_or_edges):
        a = sp.coo_matrix(graph_or_edges)
        if a.shape[0] != a.shape[1]:
            raise ValueError(f"adjacency matrix must be square, got shape {a.shape}")
        if n is None:
            n = a.shape[0]
        n = _check_n(n, 1)
        if a.shape[0] != n:
            raise ValueError(f"adjacency matrix is {a.shape[0]}x{a.shape[0]} but n={n} agents were given")
        nz = a.data != 0
        r, c = a.row[nz].astype(np.int64), a.col[nz].astype(np.int64)
        off = r != c
        r, c = r[off], c[off]
        pat = sp.csr_matrix((np.ones(r.shape[0]), (r, c)), shape=(n, n))
        pat.sum_duplicates()
        pat.data[:] = 1.0
        if (pat != pat.T).nnz:
            raise ValueError("adjacency matrix must have a symmetric non-zero pattern (undirected graph)")
        up = r < c
        return r[up], c[up], n
    if isinstance(graph_or_edges, tuple) and len(graph_or_edges) == 2:
        src, dst = graph_or_edges
    else:
        arr = np.asarray(graph_or_edges)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(
                "expected a networkx.Graph, an (src, dst) tuple of arrays, an (m, 2) edge array "
                f"or a scipy.sparse adjacency matrix; got {type(graph_or_edges).__name__}"
            )
        src, dst = arr[:, 0], arr[:, 1]
    if n is None:
        raise ValueError("n (number of agents) is required when the graph is given as edge arrays")
    n = _check_n(n, 1)
    src = np.asarray(src)
    dst = np.asarray(dst)
    if src.ndim != 1 or dst.shape != src.shape:
        raise ValueError(f"src and dst must be 1-D arrays of equal length, got shapes {src.shape} and {dst.shape}")
    if src.size and not (np.issubdtype(src.dtype, np.integer) and np.issubdtype(dst.dtype, np.integer)):
        raise ValueError(f"edge arrays must be integers, got {src.dtype} and {dst.dtype}")
    src = src.astype(np.int64, copy=False)
    dst = dst.astype(np.int64, copy=False)
    if src.size:
        lo = min(int(src.min()), int(dst.min()))
        hi = max(int(src.max()), int(dst.max()))
        if lo < 0 or hi >= n:
            raise ValueError(f"edge endpoints must lie in 0..{n - 1} (n={n}), got range [{lo}, {hi}]")
    return src, dst, n


def adjacency(graph_or_edges: Any, n: int | None = None) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency ``A`` (float64 csr; self-loops dropped, duplicates merged)."""
    src, dst, n = _as_edges(graph_or_edges, n)
    return _adjacency_from_edges(src, dst, n)


def _connectivity_error(a: sp.csr_matrix, n: int) -> str | None:
    if n == 1:
        return None
    if a.nnz == 0:
        return (
            f"communication graph has no edges between distinct agents (n={n}; empty or self-loops only); "
            "the consensus theory needs a connected graph"
        )
    k, labels = connected_components(a, directed=False, return_labels=True)
    if k == 1:
        return None
    others = np.flatnonzero(labels != labels[0])
    shown = others[:8].tolist()
    more = f" (and {others.size - len(shown)} more)" if others.size > len(shown) else ""
    return (
        f"communication graph is disconnected: {k} components, e.g. nodes {shown}{more} cannot reach "
        "node 0; the consensus theory needs a connected graph"
    )


def check_connected(graph_or_edges: Any, n: int | None = None) -> None:
    """Raise ``ValueError`` unless the graph is a connected graph on exactly ``n`` agents.

    Also rejects graphs without edges between distinct nodes (for n >= 2), node
    count mismatches and out-of-range edge endpoints.  A single agent (n=1) is
    connected.
    """
    a = adjacency(graph_or_edges, n)
    msg = _connectivity_error(a, a.shape[0])
    if msg:
        raise ValueError(msg)


def degrees(graph_or_edges: Any, n: int | None = None) -> np.ndarray:
    """Degrees ``d_i = |N_i|`` (int64, self-loops not counted)."""
    a = adjacency(graph_or_edges, n)
    return np.diff(a.indptr).astype(np.int64)


def _connected_degrees(a: sp.csr_matrix, matrix: str) -> np.ndarray | None:
    """Degrees of the adjacency ``a``; None for one agent without edges, whose consensus matrix is [[1]]
    (its "neighbour average" is itself). An isolated node raises ``ValueError`` naming ``matrix``."""
    deg = np.diff(a.indptr)
    if a.shape[0] == 1 and a.nnz == 0:
        return None
    iso = np.flatnonzero(deg == 0)
    if iso.size:
        raise ValueError(
            f"nodes {iso[:8].tolist()} have no neighbours; the {matrix} needs degree >= 1 "
            "(the communication graph must be connected)"
        )
    return deg


def _random_walk_from_adjacency(a: sp.csr_matrix) -> sp.csr_matrix:
    deg = _connected_degrees(a, "random-walk matrix D^-1 A")
    if deg is None:
        return sp.csr_matrix(np.ones((1, 1)))
    w = a.copy()
    w.data = w.data / np.repeat(deg.astype(np.float64), deg)
    return w


def random_walk_matrix(graph_or_edges: Any, n: int | None = None) -> sp.csr_matrix:
    """``W = D^-1 A`` (row-stochastic csr): ``(W @ lam)_i`` is the mean of ``lam`` over ``N_i``.

    For a single agent (n=1, no edges) ``W = [[1]]``.  Isolated nodes raise ``ValueError``.
    """
    return _random_walk_from_adjacency(adjacency(graph_or_edges, n))


#: the consensus weightings: the paper's random-walk matrix (default) and Metropolis-Hastings
CONSENSUS_WEIGHTS: tuple[str, ...] = ("random_walk", "metropolis")


def check_weights(weights: Any) -> str:
    """Return ``weights`` if it is one of :data:`CONSENSUS_WEIGHTS`, else raise ``ValueError``."""
    if isinstance(weights, str) and weights in CONSENSUS_WEIGHTS:
        return weights
    allowed = ", ".join(repr(w) for w in CONSENSUS_WEIGHTS)
    raise ValueError(f"unknown consensus weights {weights!r}; allowed: {allowed}")


def _metropolis_from_adjacency(a: sp.csr_matrix) -> sp.csr_matrix:
    n = a.shape[0]
    deg = _connected_degrees(a, "Metropolis-Hastings matrix")
    if deg is None:
        return sp.csr_matrix(np.ones((1, 1)))
    if not a.has_sorted_indices:
        a = a.sorted_indices()
    # off-diagonal part on the pattern of A (no self-loops)
    rows = np.repeat(np.arange(n, dtype=np.int64), deg)
    cols = a.indices.astype(np.int64, copy=False)
    off = 1.0 / (1.0 + np.maximum(deg[rows], deg[cols]).astype(np.float64))
    diag = 1.0 - np.bincount(rows, weights=off, minlength=n)
    # insert the diagonal into each row: n + nnz entries, built directly in csr form
    ptr = a.indptr.astype(np.int64, copy=False)
    new_ptr = ptr + np.arange(n + 1, dtype=np.int64)
    indices = np.empty(a.nnz + n, dtype=np.int64)
    data = np.empty(a.nnz + n, dtype=np.float64)
    # the diagonal goes after the row's neighbours j < i (column indices sorted within a row)
    diag_pos = new_ptr[:-1] + np.bincount(rows[cols < rows], minlength=n)
    is_diag = np.zeros(a.nnz + n, dtype=bool)
    is_diag[diag_pos] = True
    indices[is_diag] = np.arange(n, dtype=np.int64)
    data[is_diag] = diag
    indices[~is_diag] = cols
    data[~is_diag] = off
    idx_dtype = np.int32 if a.nnz + n < np.iinfo(np.int32).max else np.int64
    return sp.csr_matrix((data, indices.astype(idx_dtype), new_ptr.astype(idx_dtype)), shape=(n, n))


def metropolis_matrix(graph_or_edges: Any, n: int | None = None) -> sp.csr_matrix:
    """Metropolis-Hastings weights ``W_mh`` (csr, float64, sorted indices, diagonal stored).

    ``w_ij = 1 / (1 + max(d_i, d_j))`` for every edge ``(i, j)``,
    ``w_ii = 1 - sum_{j in N_i} w_ij`` (>= ``1 / (1 + d_i)`` > 0), 0 elsewhere.
    Symmetric, non-negative and doubly stochastic, so the consensus with it
    converges to the plain average.  Vectorised (edge arrays, no python loop
    per node): ``n = 10^6`` agents take a few seconds.  For a single agent
    (n=1, no edges) ``W = [[1]]``; isolated nodes raise ``ValueError``.
    """
    return _metropolis_from_adjacency(adjacency(graph_or_edges, n))


def _consensus_from_adjacency(a: sp.csr_matrix, weights: str = "random_walk") -> sp.csr_matrix:
    if check_weights(weights) == "metropolis":
        return _metropolis_from_adjacency(a)
    return _random_walk_from_adjacency(a)


def consensus_matrix(graph_or_edges: Any, n: int | None = None, weights: str = "random_walk") -> sp.csr_matrix:
    """The consensus matrix ``W`` of ``lam <- lam - eps (lam - W lam)`` for ``weights``:

    * ``"random_walk"`` (default, the paper's): :func:`random_walk_matrix` ``D^-1 A``;
      consensus value: the degree-weighted average;
    * ``"metropolis"``: :func:`metropolis_matrix`; consensus value: the plain average.

    Any other ``weights`` raises a ``ValueError`` naming it and the allowed values
    (checked before the graph is looked at).
    """
    weights = check_weights(weights)
    return _consensus_from_adjacency(adjacency(graph_or_edges, n), weights)


def _check_eps(eps: Any) -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number with 0 < eps <= 1, got {eps!r}") from None
    if not (0.0 < eps <= 1.0):
        raise ValueError(f"eps must satisfy 0 < eps <= 1, got {eps}")
    return eps


def perron_matrix(
    graph_or_edges: Any, eps: float, n: int | None = None, weights: str = "random_walk"
) -> sp.csr_matrix:
    """Perron matrix ``P = I - eps (I - W) = (1 - eps) I + eps W`` with ``W`` the
    :func:`consensus_matrix` selected by ``weights`` (default ``D^-1 A``, paper eq. B.3)."""
    eps = _check_eps(eps)
    w = consensus_matrix(graph_or_edges, n, weights)
    nn = w.shape[0]
    return ((1.0 - eps) * sp.identity(nn, format="csr") + eps * w).tocsr()
