"""Consensus theory of the paper's Appendix B (docs/model.md), numerically.

Notation (paper eq. B.2-B.3): ``A`` adjacency, ``D = diag(d)`` degrees,
``L_rw = I - D^-1 A`` random-walk Laplacian, ``P = I - eps L_rw`` Perron
matrix.  ``L_rw`` is similar to the symmetric normalized Laplacian
``L_sym = I - D^-1/2 A D^-1/2`` (``L_rw = D^-1/2 L_sym D^1/2``), so its
eigenvalues ``0 = mu_1 < mu_2 <= ... <= mu_n <= 2`` are real and are computed
from ``L_sym``.  The eigenvalues of ``P`` are ``1 - eps mu_i`` and

    rho = max_{i >= 2} |1 - eps mu_i| = max(|1 - eps mu_2|, |1 - eps mu_n|).

Consensus value (Lemma B.4): ``P^l -> 1 w^T`` with degree weights
``w_i = d_i / sum_j d_j``; the consensus value of ``lam`` is ``w . lam``.

Which norm the bounds hold in
-----------------------------
``D P = (1 - eps) D + eps A`` is symmetric, i.e. ``P`` is self-adjoint in the
inner product ``<x, y>_D = x^T D y``.  The consensus error
``e = lam - (w . lam) 1`` is the ``<.,.>_D``-orthogonal projection of ``lam``
onto the complement of ``1``, a ``P``-invariant subspace on which ``P`` has
operator norm exactly ``rho``.  Hence, in the D-weighted norm
``||x||_D = ||D^1/2 x||_2`` (or equivalently the normalised
``||x||_w = sqrt(sum_i w_i x_i^2) = ||x||_D / sqrt(sum d)``),

    ||e_l||_D <= rho^l ||e_0||_D          (no condition-number constant C).

The paper's Theorem B.5 states the Euclidean version with
``C = kappa(V)``; with eigenvectors ``V = D^-1/2 U`` (``U`` orthonormal
eigenvectors of ``L_sym``) this is ``sqrt(d_max / d_min)``
(:func:`eigenvector_condition_number`).

Theorem 5.1 / B.7 (dual step + L consensus rounds per step): with
``g_k = e_grid_k - c/N`` and ``sigma >= sup_k ||g_k - (w . g_k) 1||_w``,

    lim sup_k ||lam_k - (w . lam_k) 1||_w <= rho^L alpha sigma / (1 - rho^L)

and, starting from consensus (e.g. ``lam_0 = 0``), the bound holds at every
step.  The clip to ``[0, lam_max]`` does not break it: clipping is
componentwise 1-Lipschitz, so ``min_c ||clip(y) - c 1||_w <= ||y - c* 1||_w``
(take ``c = clip(c*)``), and the ``w``-projection is the minimiser.  A
per-agent bound ``|g_i - w . g| <= sigma`` implies the ``w``-norm bound.  In the
Euclidean norm the same bound holds up to ``sqrt(d_max / d_min)`` when
``sigma`` is the Euclidean sup of the deviation.  (The paper's eq. 11 centres
the signal on the plain mean and its proof on the weighted one; the weighted
mean is what the recursion needs.  With ``update_period = k`` the signal is
the k-step mean that drives each update.)

Metropolis-Hastings weights
---------------------------
With ``weights="metropolis"`` (:func:`cmarl_env.graphs.metropolis_matrix`)
``P = I - eps (I - W_mh)`` is symmetric and doubly stochastic: its eigenvalues
``1 - eps mu_i`` (``mu_i`` eigenvalues of the weighted Laplacian ``I - W_mh``,
``0 = mu_1 < mu_2 <= ... <= mu_n < 2``) are computed from ``W_mh`` itself, the
stationary weights are uniform (``w_i = 1/n``), the consensus value is the
plain average, and everything above holds with ``D -> I``: the contraction and
the Theorem 5.1 bound hold in the Euclidean norm (``||x||_w`` with uniform
``w`` is ``||x||_2 / sqrt(n)``) with constant ``C = 1``, ``sigma`` being the
sup of ``||g_k - mean(g_k) 1||_w``.  Since ``mu_n < 2``, ``rho < 1`` on every
connected graph even for ``eps = 1`` (the random walk has ``rho = 1`` there on
bipartite graphs).  At a fixed point of the dual step + consensus (no
clipping), ``w . (e_grid - c/N) = 0``: the random walk enforces the
degree-weighted constraint ``sum_i pi_i e_grid_i = c/N``, Metropolis the true
one ``mean_i e_grid_i = c/N``.  :func:`stationary_weights` gives ``w`` for either.

Cost (2 CPUs): dense path up to n = 2000 (< 1 s); n = 100,000 takes
0.2-6 s depending on the family (Lanczos for expanders, sparse LU for
rings/lines/geometric graphs); n = 10^6 takes seconds for a ring and about a
minute for a small world.

Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from cmarl_env import graphs as _graphs

__all__ = [
    "SpectralSummary",
    "RateCheck",
    "spectral_summary",
    "consensus_error_bound",
    "consensus_error",
    "weighted_norm",
    "degree_weights",
    "stationary_weights",
    "consensus_rate_check",
    "eigenvector_condition_number",
    "DENSE_MAX_N",
]

#: largest n for which the dense eigen-solver is used by default
DENSE_MAX_N = 2000


# --------------------------------------------------------------------------
# norms and weights
# --------------------------------------------------------------------------
def degree_weights(deg: np.ndarray) -> np.ndarray:
    """``w_i = d_i / sum_j d_j`` (uniform for a single isolated agent)."""
    deg = np.asarray(deg, dtype=np.float64)
    total = deg.sum()
    if total <= 0:
        return np.full(deg.shape, 1.0 / deg.size)
    return deg / total


def stationary_weights(deg: np.ndarray, weights: str = "random_walk") -> np.ndarray:
    """Stationary weights ``pi`` of the consensus matrix selected by ``weights``:
    :func:`degree_weights` for ``"random_walk"``, uniform ``1/n`` for ``"metropolis"``.

    ``pi . lam`` is preserved by every consensus round and is the consensus value;
    at a fixed point of the dual step + consensus (no clipping), ``pi . (e_grid - c/N) = 0``
    is the constraint the method enforces.
    """
    if _graphs.check_weights(weights) == "metropolis":
        deg = np.asarray(deg)
        return np.full(deg.shape, 1.0 / deg.size)
    return degree_weights(deg)


def weighted_norm(x: np.ndarray, weights: np.ndarray) -> float:
    """``||x||_w = sqrt(sum_i w_i x_i^2)`` (the D-norm divided by ``sqrt(sum d)``)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.dot(weights, x * x)))


def consensus_error(lam: np.ndarray, weights: np.ndarray, norm: str = "2") -> float:
    """``||lam - (w . lam) 1||`` with ``norm="2"`` (Euclidean) or ``"w"`` (``||.||_w``)."""
    lam = np.asarray(lam, dtype=np.float64)
    dev = lam - float(np.dot(weights, lam))
    if norm == "2":
        return float(np.linalg.norm(dev))
    if norm == "w":
        return weighted_norm(dev, weights)
    raise ValueError(f"norm must be '2' or 'w', got {norm!r}")


# --------------------------------------------------------------------------
# spectral summary
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class SpectralSummary:
    """Spectral quantities of ``P = I - eps (I - W)`` for a connected graph.

    ``weighting``: which ``W`` -- ``"random_walk"`` (``D^-1 A``, ``I - W = L_rw``)
    or ``"metropolis"`` (Metropolis-Hastings ``W_mh``);
    ``rho``: second-largest eigenvalue modulus of ``P`` (0 for a single agent);
    ``lambda_2``: smallest non-zero eigenvalue of ``I - W`` (for the random
    walk the algebraic connectivity of the normalized Laplacian; ``nan`` for n=1);
    ``lambda_max``: largest eigenvalue of ``I - W`` (``None`` when the sparse
    path did not need it, i.e. when ``eps (lambda_2 + 2) <= 2`` already implies
    ``rho = 1 - eps lambda_2``); ``weights``: the stationary weights ``w``
    (``pi^T P = pi^T``): degree weights ``d_i / sum d`` for the random walk,
    uniform ``1/n`` for Metropolis.  They give both the consensus value
    ``w . lam`` and the norm ``||x||_w = sqrt(sum_i w_i x_i^2)`` in which the
    contraction and the Theorem 5.1 bound hold without constant (for Metropolis
    that is the Euclidean norm divided by ``sqrt(n)``, see :attr:`norm`);
    ``method``: how ``lambda_2`` was computed: ``"dense"``, ``"lanczos"`` (the
    probe of the ``"sparse"`` path converged), ``"eigsh"`` or ``"shift-invert"``.
    """

    n: int
    eps: float
    rho: float
    lambda_2: float
    lambda_max: float | None
    degrees: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    method: str = "dense"
    weighting: str = "random_walk"

    @property
    def spectral_gap(self) -> float:
        """``1 - rho``."""
        return 1.0 - self.rho

    @property
    def norm(self) -> str:
        """The norm of the contraction and of the bound: ``"degree-weighted"`` (random
        walk, ``||x||_w`` with ``w = d / sum d``) or ``"euclidean"`` (Metropolis: ``P`` is
        symmetric; ``||x||_w = ||x||_2 / sqrt(n)`` with the uniform ``w``)."""
        return "euclidean" if self.weighting == "metropolis" else "degree-weighted"

    @property
    def consensus_kind(self) -> str:
        """``"degree-weighted average"`` (random walk) or ``"plain average"`` (Metropolis)."""
        return "plain average" if self.weighting == "metropolis" else "degree-weighted average"

    @property
    def euclidean_constant(self) -> float:
        """Constant ``C`` of the bounds in the plain Euclidean norm (paper Theorem B.5):
        ``sqrt(d_max / d_min)`` for the random walk, 1 for the symmetric Metropolis ``P``."""
        if self.weighting == "metropolis" or self.degrees.size == 0 or self.degrees.min() <= 0:
            return 1.0
        return math.sqrt(float(self.degrees.max()) / float(self.degrees.min()))

    def consensus_value(self, lam0: np.ndarray) -> float:
        """Limit of pure consensus from ``lam0``: ``w . lam0`` -- the degree-weighted
        average (random walk) or the plain average (Metropolis)."""
        lam0 = np.asarray(lam0, dtype=np.float64)
        if lam0.shape != (self.n,):
            raise ValueError(f"lam0 must have shape ({self.n},), got {lam0.shape}")
        return float(np.dot(self.weights, lam0))

    def error_bound(self, rounds: int, alpha: float, sigma: float) -> float:
        """:func:`consensus_error_bound` with this graph's ``rho``."""
        return consensus_error_bound(self.rho, rounds, alpha, sigma)

    def rounds_to_contract(self, factor: float) -> int | float:
        """Smallest ``l`` with ``rho^l <= factor`` (``inf`` if ``rho >= 1``)."""
        if not (0.0 < factor < 1.0):
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if self.rho <= 0.0:
            return 1
        if self.rho >= 1.0:
            return math.inf
        return int(math.ceil(math.log(factor) / math.log(self.rho) - 1e-12))


def _sym_normalized(a: sp.csr_matrix, deg: np.ndarray) -> sp.csr_matrix:
    dis = 1.0 / np.sqrt(deg.astype(np.float64))
    s = sp.diags(dis) @ a @ sp.diags(dis)
    return sp.csr_matrix(s)


class _SymForm(NamedTuple):
    """A symmetric matrix ``s`` similar to the consensus matrix ``W`` (same eigenvalues
    ``1 - mu_i``), its unit top eigenvector ``u`` (eigenvalue 1), and a Laplacian ``lap()``
    (rows sum to 0, null vector 1) with ``I - s = diag(sq)^-1 lap diag(sq)^-1``.

    random_walk: ``s = D^-1/2 A D^-1/2``, ``u ~ sqrt(d)``, ``lap = D - A``, ``sq = sqrt(d)``;
    metropolis: ``s = W_mh``, ``u ~ 1``, ``lap = I - W_mh`` (weighted Laplacian), ``sq = 1``.
    """

    s: sp.csr_matrix
    u: np.ndarray
    sq: np.ndarray
    lap: Callable[[], sp.spmatrix]


def _sym_form(a: sp.csr_matrix, deg: np.ndarray, weights: str) -> _SymForm:
    n = a.shape[0]
    if weights == "metropolis":
        w_mh = _graphs._metropolis_from_adjacency(a)
        u = np.full(n, 1.0 / math.sqrt(n))

        def lap():
            off = w_mh - sp.diags(w_mh.diagonal())
            off.eliminate_zeros()
            # diagonal = sum of the off-diagonal weights (exact zero row sums, no 1 - (1 - x))
            return sp.diags(np.asarray(off.sum(axis=1)).ravel()) - off

        return _SymForm(w_mh, u, np.ones(n), lap)
    u = np.sqrt(deg.astype(np.float64))
    u /= np.linalg.norm(u)
    return _SymForm(_sym_normalized(a, deg), u, np.sqrt(deg.astype(np.float64)),
                    lambda: sp.diags(deg.astype(np.float64)) - a)


def _mu_dense(form: _SymForm) -> np.ndarray:
    s = form.s.toarray()
    # eigenvalues of I - S (L_sym for the random walk), ascending
    mu = 1.0 - scipy.linalg.eigvalsh(s)[::-1]
    return mu


#: the quick Lanczos estimate below this mu_2 means "small spectral gap": go to shift-invert
_SMALL_GAP = 1e-3
_PROBE_STEPS = 100


def _deflated_op(s: sp.csr_matrix, u: np.ndarray) -> spla.LinearOperator:
    """``S - 2 u u^T``: the top eigenvector ``u`` (``~ sqrt(d)`` or ``~ 1``) of ``S`` moved to eigenvalue
    -1 (<= every other eigenvalue), so the largest eigenvalue left is ``1 - mu_2``."""

    def mv(x):
        x = np.asarray(x).ravel()
        return s @ x - 2.0 * u * np.dot(u, x)

    n = s.shape[0]
    return spla.LinearOperator((n, n), matvec=mv, dtype=np.float64)


def _lanczos_probe(op: spla.LinearOperator, n: int, steps: int, rng) -> tuple[float, float]:
    """Plain Lanczos (no re-orthogonalisation, O(n) memory): the largest Ritz value
    and its residual norm ``beta_m |y_m|`` (an eigenvalue lies within it)."""
    q = rng.standard_normal(n)
    q /= np.linalg.norm(q)
    q_prev = np.zeros(n)
    alphas, betas = [], []
    beta = 0.0
    for _ in range(min(steps, n)):
        z = op.matvec(q) - beta * q_prev
        alpha = float(np.dot(q, z))
        z -= alpha * q
        alphas.append(alpha)
        beta = float(np.linalg.norm(z))
        betas.append(beta)
        if beta < 1e-14:
            break
        q_prev, q = q, z / beta
    t_vals, t_vecs = scipy.linalg.eigh_tridiagonal(np.array(alphas), np.array(betas[:-1]))
    return float(t_vals[-1]), abs(betas[-1] * float(t_vecs[-1, -1]))


def _grounded_lu(lap: sp.spmatrix):
    """Sparse LU of the grounded Laplacian ``lap[1:, 1:]`` (``D - A`` or ``I - W_mh``; SPD
    for a connected graph; symmetric ordering, no pivoting)."""
    lap = sp.csc_matrix(sp.csr_matrix(lap)[1:, 1:])
    return spla.splu(lap, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                     options={"SymmetricMode": True})


def _mu2_shift_invert(form: _SymForm, tol: float, rng) -> float:
    """mu_2 by Lanczos on the pseudo-inverse of ``I - S`` (shift-invert at 0).

    Random walk: ``L_sym^+ v = P_u D^1/2 L^+ D^1/2 v`` with ``L = D - A``; the singular
    system ``L x = b`` (``b = D^1/2 v``, which sums to 0 because ``v`` is orthogonal to
    ``u ~ sqrt(d)``) is solved exactly by grounding node 0 (``x_0 = 0``), and
    ``P_u`` removes the ``u`` component.  Metropolis: the same with ``D^1/2 -> I``
    and ``L = I - W_mh``.  The largest eigenvalue of that operator
    is ``1 / mu_2``; no shift close to a singular matrix is needed.
    """
    n = form.s.shape[0]
    lu = _grounded_lu(form.lap())
    sq, u = form.sq, form.u

    def solve(v):
        v = np.asarray(v, dtype=np.float64).ravel()
        v = v - u * np.dot(u, v)
        b = sq * v
        x = np.empty(n)
        x[0] = 0.0
        x[1:] = lu.solve(b[1:])
        y = sq * x
        return y - u * np.dot(u, y)

    op = spla.LinearOperator((n, n), matvec=solve, dtype=np.float64)
    # k=3: ask for a few eigenvalues so that a cluster next to mu_2 cannot hide it
    k = min(3, n - 2)
    vals = spla.eigsh(op, k=k, which="LA", tol=tol, v0=rng.standard_normal(n), return_eigenvectors=False)
    return float(1.0 / np.max(vals))


def _mu2_sparse(form: _SymForm, method: str, tol: float, maxiter: int, rng) -> tuple[float, str]:
    s, u = form.s, form.u
    n = s.shape[0]
    if method == "shift-invert":
        return _mu2_shift_invert(form, tol, rng), "shift-invert"
    op = _deflated_op(s, u)
    if method == "sparse":
        theta, resid = _lanczos_probe(op, n, _PROBE_STEPS, rng)
        if resid <= tol:  # an eigenvalue lies within resid of theta: converged already
            return 1.0 - theta, "lanczos"
        if 1.0 - theta < _SMALL_GAP:
            # clustered top of the spectrum (ring/line/geometric-like graphs): Lanczos
            # needs ~1/sqrt(gap) restarts, while a sparse LU of such graphs is cheap
            return _mu2_shift_invert(form, tol, rng), "shift-invert"
    try:
        vals = spla.eigsh(op, k=1, which="LA", tol=tol, ncv=min(n - 1, 40), maxiter=maxiter,
                          v0=rng.standard_normal(n), return_eigenvectors=False)
        return float(1.0 - vals[0]), "eigsh"
    except spla.ArpackNoConvergence:
        return _mu2_shift_invert(form, tol, rng), "shift-invert"


def _mumax_sparse(s: sp.csr_matrix, tol: float, maxiter: int, rng) -> float:
    """Largest eigenvalue of ``I - S`` (``L_sym``) = 1 - smallest eigenvalue of ``S``."""
    n = s.shape[0]
    try:
        vals = spla.eigsh(s, k=1, which="SA", tol=tol, ncv=min(n - 1, 40), maxiter=maxiter,
                          v0=rng.standard_normal(n), return_eigenvectors=False)
        return float(1.0 - vals[0])
    except spla.ArpackNoConvergence:
        l_sym = sp.csc_matrix(sp.identity(n, format="csr") - s)
        vals = spla.eigsh(l_sym, k=1, sigma=2.0 + 1e-9, which="LM", tol=tol,
                          v0=rng.standard_normal(n), return_eigenvectors=False)
        return float(vals[0])


def spectral_summary(
    graph_or_edges: Any,
    n: int | None = None,
    eps: float = 0.5,
    *,
    weights: str = "random_walk",
    method: str = "auto",
    tol: float = 1e-8,
    maxiter: int = 1000,
) -> SpectralSummary:
    """Spectral summary of the consensus ``P = I - eps (I - W)`` on a connected graph.

    ``weights`` selects ``W`` (:data:`cmarl_env.graphs.CONSENSUS_WEIGHTS`):
    ``"random_walk"`` (default, the paper's ``D^-1 A``; consensus value and norm
    degree-weighted) or ``"metropolis"`` (Metropolis-Hastings; plain average,
    Euclidean norm).  Any other value raises ``ValueError``.

    ``method``:

    * ``"auto"`` -- ``"dense"`` for ``n <= 2000``, else ``"sparse"``;
    * ``"dense"`` -- ``scipy.linalg.eigvalsh`` of the dense symmetric form
      ``S`` (``D^-1/2 A D^-1/2``, or ``W_mh`` itself);
    * ``"sparse"`` -- a 100-step plain Lanczos probe on the deflated operator
      (``S - 2 u u^T``, ``u ~ sqrt(d)`` resp. ``u ~ 1``) first.  If it has converged, done; if it
      already shows a small gap (``mu_2 < 1e-3``: rings, lines, geometric
      graphs, whose top eigenvalues cluster and make Lanczos crawl) use
      shift-invert; otherwise ARPACK ``eigsh`` (k=1, ncv=40, ``tol``,
      ``maxiter`` restarts), falling back to shift-invert if it does not
      converge;
    * ``"eigsh"`` -- ARPACK first (fallback shift-invert), no probe;
    * ``"shift-invert"`` -- Lanczos on the pseudo-inverse, through a sparse LU of
      the grounded Laplacian (``D - A`` resp. ``I - W_mh`` without node 0) with
      the null vector projected out (cheap for low-dimensional graphs, heavy
      fill-in for large expanders such as Erdos-Renyi graphs).

    ``lambda_max`` is computed in the sparse paths only when it can matter,
    i.e. when ``eps (lambda_2 + 2) > 2`` (never for ``eps <= 2/3``).
    Raises ``ValueError`` for a disconnected graph or ``eps`` outside ``(0, 1]``.
    """
    eps = _graphs._check_eps(eps)
    weights = _graphs.check_weights(weights)
    if method not in ("auto", "dense", "sparse", "eigsh", "shift-invert"):
        raise ValueError(
            f"method must be 'auto', 'dense', 'sparse', 'eigsh' or 'shift-invert', got {method!r}"
        )
    a = _graphs.adjacency(graph_or_edges, n)
    nn = a.shape[0]
    msg = _graphs._connectivity_error(a, nn)
    if msg:
        raise ValueError(msg)
    deg = np.diff(a.indptr).astype(np.int64)
    w = stationary_weights(deg, weights)
    if nn == 1:
        return SpectralSummary(1, eps, 0.0, float("nan"), 0.0, deg, w, "dense", weights)
    if method == "auto":
        method = "dense" if nn <= DENSE_MAX_N else "sparse"
    if nn <= 3:
        method = "dense"  # ARPACK needs k < n - 1
    form = _sym_form(a, deg, weights)
    if method == "dense":
        mu = _mu_dense(form)
        mu2, mumax = float(mu[1]), float(mu[-1])
        rho = float(np.max(np.abs(1.0 - eps * mu[1:])))
        return SpectralSummary(nn, eps, rho, mu2, mumax, deg, w, "dense", weights)

    rng = np.random.default_rng(12345)
    mu2, used = _mu2_sparse(form, method, float(tol), int(maxiter), rng)
    mu2 = max(mu2, 0.0)
    mumax = None
    rho = abs(1.0 - eps * mu2)
    if eps * (mu2 + 2.0) > 2.0:  # |1 - eps mu_max| could exceed |1 - eps mu_2|
        mumax = min(_mumax_sparse(form.s, float(tol), int(maxiter), rng), 2.0)
        rho = max(rho, abs(1.0 - eps * mumax))
    return SpectralSummary(nn, eps, float(rho), float(mu2), mumax, deg, w, used, weights)


# --------------------------------------------------------------------------
# Theorem 5.1 bound
# --------------------------------------------------------------------------
def consensus_error_bound(rho: float, rounds: int, alpha: float, sigma: float) -> float:
    """Theorem 5.1 / B.7: ``rho^L alpha sigma / (1 - rho^L)``.

    Returns ``inf`` when ``L = 0`` (no consensus: nothing contracts the
    disagreement) or ``rho^L >= 1`` (no contraction, e.g. ``eps = 1`` on a
    bipartite graph).  The bound is on the ``||.||_w`` consensus error when
    ``sigma`` bounds ``||g - (w . g) 1||_w`` (see the module docstring).
    """
    rho = float(rho)
    alpha = float(alpha)
    sigma = float(sigma)
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
    if not (rho >= 0.0):
        raise ValueError(f"rho must be >= 0, got {rho}")
    if not (alpha >= 0.0) or not (sigma >= 0.0):
        raise ValueError(f"alpha and sigma must be >= 0, got alpha={alpha}, sigma={sigma}")
    if rounds == 0:
        return math.inf
    r = rho ** int(rounds)
    if r >= 1.0:
        return math.inf
    return r * alpha * sigma / (1.0 - r)


# --------------------------------------------------------------------------
# measured contraction
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class RateCheck:
    """Result of :func:`consensus_rate_check`.

    ``errors[l] = ||e_l||_D`` (``e_l = P^l lam0 - (w . lam0) 1``, D-weighted norm
    ``||D^1/2 e||_2``; Euclidean ``||e||_2`` for Metropolis weights) for
    ``l = 0..rounds``; ``ratios[l] = errors[l+1] / errors[l]``
    (``nan`` once ``errors[l]`` is below ``1e-10 errors[0]``, i.e. round-off);
    theory: every ratio ``<= rho``.
    """

    errors: np.ndarray
    ratios: np.ndarray
    rho: float
    consensus_value: float

    @property
    def max_ratio(self) -> float:
        ok = np.isfinite(self.ratios)
        return float(np.max(self.ratios[ok])) if ok.any() else 0.0

    def holds(self, slack: float = 1e-12) -> bool:
        """``errors[l] <= rho^l errors[0] (1 + slack) + slack`` for every ``l``."""
        l = np.arange(self.errors.size)
        return bool(np.all(self.errors <= self.rho ** l * self.errors[0] * (1 + slack) + slack))


def consensus_rate_check(
    graph_or_edges: Any,
    n: int | None = None,
    eps: float = 0.5,
    rounds: int = 20,
    lam0: np.ndarray | None = None,
    seed: int = 0,
    summary: SpectralSummary | None = None,
    weights: str | None = None,
) -> RateCheck:
    """Run ``rounds`` of pure consensus ``lam <- P lam`` from ``lam0`` (default:
    standard normal from ``seed``) and measure the per-round contraction of the
    consensus error in the norm of the weighting (see :class:`RateCheck`).

    ``weights``: ``"random_walk"`` or ``"metropolis"``; ``None`` = the weighting of
    ``summary`` (``"random_walk"`` without a summary).  A ``summary`` computed for the
    other weighting raises ``ValueError``."""
    if weights is None:
        weights = summary.weighting if summary is not None else "random_walk"
    weights = _graphs.check_weights(weights)
    if summary is not None and summary.weighting != weights:
        raise ValueError(f"summary was computed for weights={summary.weighting!r}, not {weights!r}")
    a = _graphs.adjacency(graph_or_edges, n)
    nn = a.shape[0]
    msg = _graphs._connectivity_error(a, nn)
    if msg:
        raise ValueError(msg)
    if summary is None:
        summary = spectral_summary(a, nn, eps, weights=weights)
    w_rw = _graphs._consensus_from_adjacency(a, weights)
    # the norm in which P contracts by rho: D-weighted (random walk) or Euclidean (Metropolis)
    deg = summary.degrees.astype(np.float64) if weights == "random_walk" else np.ones(nn)
    lam = (np.random.default_rng(seed).standard_normal(nn) if lam0 is None
           else np.array(lam0, dtype=np.float64))
    if lam.shape != (nn,):
        raise ValueError(f"lam0 must have shape ({nn},), got {lam.shape}")
    target = summary.consensus_value(lam)
    errors = np.empty(rounds + 1)
    for l in range(rounds + 1):
        e = lam - target
        errors[l] = math.sqrt(float(np.dot(deg, e * e)))
        if l < rounds:
            lam = lam - eps * (lam - w_rw @ lam)
    # ratios only above the round-off floor (once the error is ~1e-16 of its start,
    # the quotient of two round-off values means nothing)
    floor = 1e-10 * errors[0]
    ok = errors[:-1] > floor
    ratios = np.full(rounds, np.nan)
    ratios[ok] = errors[1:][ok] / errors[:-1][ok]
    return RateCheck(errors, ratios, summary.rho, target)


def eigenvector_condition_number(
    graph_or_edges: Any, n: int | None = None, eps: float = 0.5, weights: str = "random_walk"
) -> float:
    """``kappa_2(V)`` for the eigenvector matrix ``V`` of ``P``, the constant ``C`` of Theorem B.5.

    Random walk: ``V = D^-1/2 U`` (``U``: orthonormal eigenvectors of ``L_sym``),
    ``sqrt(d_max / d_min)`` analytically.  Metropolis: ``V`` = the orthonormal
    eigenvectors of the symmetric ``W_mh``, so 1 (up to round-off).  The value
    does not depend on ``eps`` (kept in the signature for symmetry).  Dense:
    ``n <= 2000`` only.
    """
    _graphs._check_eps(eps)
    weights = _graphs.check_weights(weights)
    a = _graphs.adjacency(graph_or_edges, n)
    nn = a.shape[0]
    if nn > DENSE_MAX_N:
        raise ValueError(f"eigenvector_condition_number is dense and limited to n <= {DENSE_MAX_N}, got n={nn}")
    msg = _graphs._connectivity_error(a, nn)
    if msg:
        raise ValueError(msg)
    if nn == 1:
        return 1.0
    if weights == "metropolis":
        _, u = scipy.linalg.eigh(_graphs._metropolis_from_adjacency(a).toarray())
        return float(np.linalg.cond(u))
    deg = np.diff(a.indptr).astype(np.float64)
    s = _sym_normalized(a, deg).toarray()
    _, u = scipy.linalg.eigh(s)
    v = u / np.sqrt(deg)[:, None]
    return float(np.linalg.cond(v))
