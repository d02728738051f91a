"""Consensus error of Algorithm 1 under the communication models: the bounds that apply, computed.

docs/model.md ("Faulty communication") states each bound and where it comes from. Notation: ``pi`` the stationary
weights of the nominal consensus matrix (degree weights for the random walk, uniform for Metropolis), the error
``e = lam - (pi . lam) 1`` in the norm ``||x||_pi = sqrt(sum_i pi_i x_i^2)`` (the norm of Theorem 5.1), ``rho``
the nominal second-largest eigenvalue modulus of ``P = I - eps (I - W)``, ``L`` rounds per hour, and

    sigma_eff = sup_k ||c_k||_pi / alpha,   S_eff = sup_k (max_i - min_i of delta_k) / alpha,

with ``delta_k`` the increment the dual step actually made in hour ``k`` (clip and asynchrony included) and
``c_k`` its centred part (``DualConsensus`` records both). Every bound below is a function of these.

* :func:`quantized_bound` -- b-bit messages (deterministic, holds at every hour from a consensus start);
* :func:`mean_square_rate` / :func:`mean_square_bound` -- links up or down and messages dropped independently each
  hour (``edge_up``, ``message_loss`` with ``loss_mode="drop"``): the mean-square contraction per hour and the bound
  on the root-mean-square error;
* :func:`delay_response_bound` -- a fixed delay: the exact linear response of the delayed iteration;
* :func:`joint_connectivity_bound_log10` -- the worst-case bound for graphs connected only over windows of ``B``
  hours (``edge_up``, ``graph_redraw``); always astronomically loose, reported as log10;
* :func:`fault_theory` -- picks what applies to a run and compares it with the measured error.

Dense linear algebra: everything here is for the sizes of the theory checks (N <= 2,000, the delay response
N <= 200). Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from .theory import consensus_error_bound

__all__ = [
    "quantized_bound",
    "mean_square_rate",
    "mean_square_operator",
    "mean_square_bound",
    "delay_response_bound",
    "joint_connectivity_bound_log10",
    "fault_theory",
    "THEORY_MAX_N",
]

THEORY_MAX_N = 2_000
DELAY_RESPONSE_MAX_N = 200
_ENUMERATE_MAX_LINKS = 12
_MAX_ROW_DEGREE = 16


# --------------------------------------------------------------------------
# helpers: the pi-norm on the disagreement subspace
# --------------------------------------------------------------------------
def _disagreement_basis(pi: np.ndarray) -> np.ndarray:
    """``V`` (N x N-1) with ``pi . V z = 0`` and ``||V z||_pi = ||z||_2``: a pi-orthonormal basis of the
    disagreement subspace."""
    s = np.sqrt(np.asarray(pi, dtype=np.float64))
    n = s.size
    # orthonormal complement of s (Householder-free: the eigenvectors of I - s s^T with eigenvalue 1)
    _, vecs = np.linalg.eigh(np.eye(n) - np.outer(s, s))
    u = vecs[:, 1:]
    return u / s[:, None]


def _q_matrix(pi: np.ndarray) -> np.ndarray:
    """``Q = (I - 1 pi^T)^T diag(pi) (I - 1 pi^T)``: ``x^T Q x = ||x - (pi . x) 1||_pi^2``."""
    n = pi.size
    proj = np.eye(n) - np.outer(np.ones(n), pi)
    return proj.T @ (pi[:, None] * proj)


def _split(W: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = W.toarray() if sp.issparse(W) else np.asarray(W, dtype=np.float64)
    dg = np.diag(w).copy()
    off = w - np.diag(dg)
    return off, dg, off.sum(axis=1)


def _perron(off: np.ndarray, dg: np.ndarray, m: np.ndarray, contrib: np.ndarray, eps: float) -> np.ndarray:
    """One round's matrix when receiver i mixes only with the neighbours ``contrib[i]`` (renormalised weights, as
    in :class:`algorithms.comm.CommNetwork`); a receiver with none keeps its value."""
    wo = off * contrib
    a = wo.sum(axis=1)
    some = a > 0
    factor = np.divide(m, a, out=np.zeros_like(a), where=some)
    r = eps * (np.diag(dg) + factor[:, None] * wo)
    r[np.diag_indices_from(r)] += 1.0 - eps
    r[~some] = np.eye(off.shape[0])[~some]
    return r


# --------------------------------------------------------------------------
# quantised messages (deterministic)
# --------------------------------------------------------------------------
def quantized_bound(rho: float, rounds: int, alpha: float, sigma: float, eps: float, step: float) -> float:
    """Theorem 5.1 with b-bit messages: ``(rho^L alpha sigma + eps (step/2) (1 + rho + ... + rho^(L-1))) / (1 - rho^L)``.

    Each round ``x <- P x + eps u`` with ``|u_i| <= step/2`` (a receiver's weighted mix of its neighbours' rounding
    errors, weights summing to at most 1), and the centred ``u`` has ``||.||_pi <= ||u||_inf``; with the nominal
    contraction ``rho`` per round and the dual step's ``alpha sigma`` per hour the error stays below the fixed point
    of ``E <- rho^L (E + alpha sigma) + eps (step/2) sum_l rho^l``. ``inf`` without consensus or contraction."""
    if rounds == 0 or rho >= 1:
        return math.inf
    r = rho ** rounds
    geometric = (1 - r) / (1 - rho) if rho < 1 else float(rounds)
    return (r * alpha * sigma + eps * 0.5 * step * geometric) / (1 - r)


# --------------------------------------------------------------------------
# independent link failures and drops (mean square)
# --------------------------------------------------------------------------
def _row_moments(off, dg, m, up: np.ndarray, p: float, eps: float):
    """Per receiver, the mean row and the covariance of its round matrix row when each up neighbour's message is
    dropped independently with probability ``p`` (rows are independent given the links)."""
    n = off.shape[0]
    mean = np.zeros((n, n))
    covs = []
    for i in range(n):
        nb = np.flatnonzero(up[i] & (off[i] > 0))
        d = nb.size
        if d > _MAX_ROW_DEGREE:
            raise ValueError(f"agent {i} has {d} neighbours: too many to enumerate its message patterns")
        pats = np.array(list(itertools.product((False, True), repeat=d)), dtype=bool).reshape(2 ** d, d)
        prob = np.prod(np.where(pats, 1 - p, p), axis=1)
        w = off[i, nb]
        a = pats @ w
        some = a > 0
        factor = np.divide(m[i], a, out=np.zeros_like(a), where=some)
        idx = np.concatenate([[i], nb])
        rows = np.zeros((pats.shape[0], d + 1))
        rows[:, 0] = np.where(some, 1 - eps + eps * dg[i], 1.0)
        rows[:, 1:] = eps * factor[:, None] * pats * w
        mu = prob @ rows
        second = (rows * prob[:, None]).T @ rows
        mean[i, idx] = mu
        covs.append((idx, second - np.outer(mu, mu)))
    return mean, covs


def _apply_t(A: np.ndarray, mean: np.ndarray, covs) -> np.ndarray:
    """``E[R^T A R]`` for a random round matrix ``R`` with independent rows (mean rows, row covariances)."""
    out = mean.T @ A @ mean
    for i, (idx, cov) in enumerate(covs):
        if A[i, i] != 0.0:
            out[np.ix_(idx, idx)] += A[i, i] * cov
    return out


def mean_square_rate(W: Any, pi: np.ndarray, eps: float, rounds: int, *, edge_up: float = 1.0,
                     message_loss: float = 0.0, samples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Mean-square contraction per hour of the disagreement under independent failures.

    ``rate = max E||Phi e||_pi^2 / ||e||_pi^2`` over disagreements ``e``, ``Phi = (I - 1 pi^T) R_L ... R_1`` the
    hour's consensus (links drawn once per hour with ``edge_up``, messages dropped per round with ``message_loss``,
    ``loss_mode = "drop"``). Exact (every link pattern, every message pattern) when the graph has at most 12 links;
    otherwise the link patterns are sampled (``samples`` draws, an estimate) while the message patterns stay exact.
    Returns ``{"rate", "rms_factor" (sqrt(rate)), "exact", "link_patterns"}``."""
    pi = np.asarray(pi, dtype=np.float64)
    total, exact, count = mean_square_operator(W, pi, eps, rounds, edge_up=edge_up, message_loss=message_loss,
                                               samples=samples, seed=seed)
    V = _disagreement_basis(pi)
    rate = float(np.linalg.eigvalsh(V.T @ total @ V).max())
    return {"rate": rate, "rms_factor": math.sqrt(max(rate, 0.0)), "exact": bool(exact), "link_patterns": count}


def mean_square_operator(W: Any, pi: np.ndarray, eps: float, rounds: int, *, edge_up: float = 1.0,
                         message_loss: float = 0.0, samples: int = 200,
                         seed: int = 0) -> tuple[np.ndarray, bool, int]:
    """``M = E[R^T Q R]`` for the hour's random consensus ``R = R_L ... R_1`` (``x^T M x = E||Phi x||_pi^2``),
    whether it is exact, and the number of link patterns used (see :func:`mean_square_rate`)."""
    off, dg, m = _split(W)
    n = off.shape[0]
    pi = np.asarray(pi, dtype=np.float64)
    q = _q_matrix(pi)
    support = off > 0
    iu = np.triu_indices(n, 1)
    link_mask = support[iu]
    links = np.flatnonzero(link_mask)
    exact = edge_up >= 1 or links.size <= _ENUMERATE_MAX_LINKS
    if edge_up >= 1:
        patterns, probs = [np.ones(links.size, dtype=bool)], [1.0]
    elif exact:
        patterns = [np.array(bits, dtype=bool) for bits in itertools.product((False, True), repeat=links.size)]
        probs = [float(np.prod(np.where(b, edge_up, 1 - edge_up))) for b in patterns]
    else:
        rng = np.random.default_rng(seed)
        patterns = [rng.random(links.size) < edge_up for _ in range(samples)]
        probs = [1.0 / samples] * samples
    total = np.zeros((n, n))
    for bits, prob in zip(patterns, probs):
        up = np.zeros((n, n), dtype=bool)
        r_idx, c_idx = iu[0][links[bits]], iu[1][links[bits]]
        up[r_idx, c_idx] = True
        up[c_idx, r_idx] = True
        a = q
        if message_loss > 0:
            mean, covs = _row_moments(off, dg, m, up, message_loss, eps)
            for _ in range(rounds):
                a = _apply_t(a, mean, covs)
        else:
            r = _perron(off, dg, m, up, eps)
            if n > 200:  # sparse products: nnz x N per product instead of N^3
                r = sp.csr_matrix(r)
                for _ in range(rounds):
                    a = np.asarray(r.T @ np.asarray(a @ r))
            else:
                for _ in range(rounds):
                    a = r.T @ a @ r
        total += prob * a
    return total, bool(exact), len(patterns)


def mean_square_bound(rms_factor: float, alpha: float, sigma: float) -> float:
    """``r alpha sigma / (1 - r)`` with ``r`` the root of the hour's mean-square rate: the limit of the
    root-mean-square consensus error when the hour's failures are independent of the past (Minkowski's inequality
    on ``e_{k+1} = Phi_k (e_k + c_k)``). ``inf`` when ``r >= 1``."""
    if rms_factor >= 1:
        return math.inf
    return rms_factor * alpha * sigma / (1 - rms_factor)


# --------------------------------------------------------------------------
# fixed delay (linear response)
# --------------------------------------------------------------------------
def delay_response_bound(W: Any, pi: np.ndarray, eps: float, delay_hours: int, rounds: int, alpha: float,
                         sigma: float, *, max_rounds: int = 200_000, tol: float = 1e-10) -> dict[str, Any]:
    """Fixed delay ``d`` hours: the delayed iteration ``x(s+1) = ((1 - eps) I + eps W_d) x(s) + eps W_o x(s - dL)``
    (``W_d`` the self weights, ``W_o`` the neighbour weights) is linear, so the error at the end of an hour is the
    sum of the responses ``G_h`` to the increments of the past hours:

        limsup ||e||_pi <= alpha sigma sum_{h >= 0} ||(I - 1 pi^T) G_h||_pi

    (the start, before the first message arrives, is a transient that dies out when the iteration is stable).
    Also the asymptotic rate per hour (spectral radius on the disagreement). Dense; N <= 200."""
    off, dg, _ = _split(W)
    n = off.shape[0]
    if n > DELAY_RESPONSE_MAX_N:
        raise ValueError(f"delay_response_bound is dense: N <= {DELAY_RESPONSE_MAX_N}, got {n}")
    pi = np.asarray(pi, dtype=np.float64)
    delta = int(delay_hours) * rounds
    a0 = (1 - eps) * np.eye(n) + eps * np.diag(dg)
    b0 = eps * off
    proj = np.eye(n) - np.outer(np.ones(n), pi)
    sq = np.sqrt(pi)
    V = _disagreement_basis(pi)
    exact_norm = n <= 50

    def norm(h):
        mat = (sq[:, None] * (proj @ h)) @ V
        return float(np.linalg.norm(mat, 2)) if exact_norm else float(np.linalg.norm(mat))

    # asymptotic rate: the companion matrix of the delayed iteration; its eigenvalue 1 is the consensus direction
    dim = n * (delta + 1)
    if dim > 3_000:
        raise ValueError(f"the delayed iteration has {dim} states (N (dL + 1)); the dense analysis stops at 3,000")
    comp = np.zeros((dim, dim))
    comp[:n, :n] = a0
    comp[:n, -n:] += b0
    if delta:
        comp[n:, :-n] = np.eye(n * delta)
    eig = np.linalg.eigvals(comp)
    rest = np.delete(eig, np.argmin(np.abs(eig - 1.0)))  # the consensus eigenvalue 1 removed
    rate_round = float(np.abs(rest).max()) if rest.size else 0.0
    rate = rate_round ** rounds
    if rate_round >= 1 - 1e-12:
        return {"bound": math.inf, "response_sum": math.inf, "rate_per_hour": rate, "norm": None, "rounds_summed": 0}
    needed = (delta + 1) * 4 + math.log(tol) / math.log(max(rate_round, 1e-300)) * 4
    if needed > max_rounds:
        raise ValueError(f"the delayed iteration contracts too slowly (rate {rate_round:.6f} per round) to sum "
                         f"its response within {max_rounds} rounds")
    hist = [np.eye(n)] + [np.zeros((n, n))] * delta  # H_s, H_{s-1}, ..., H_{s-delta}
    total, s, last = 0.0, 0, math.inf
    while s < max_rounds:
        h_new = a0 @ hist[0] + b0 @ hist[-1]
        hist = [h_new] + hist[:-1]
        s += 1
        if s % rounds == 0:  # the end of an hour
            last = norm(h_new)
            total += last
            if last < tol * max(total, 1e-300) and s > (delta + 1) * 4:
                break
    converged = s < max_rounds
    bound = alpha * sigma * total if converged else math.inf
    return {"bound": bound, "response_sum": total if converged else math.inf, "rate_per_hour": rate,
            "norm": "exact" if exact_norm else "frobenius (upper bound)", "rounds_summed": s}


# --------------------------------------------------------------------------
# jointly connected graphs (worst case)
# --------------------------------------------------------------------------
def joint_connectivity_bound_log10(n: int, window: int, eta: float, alpha: float, spread: float) -> float:
    """log10 of the worst-case bound on the spread of ``lambda`` (hence on the consensus error) when every window
    of ``B`` hours has a connected union graph, every agent keeps a self weight and every weight in use is at
    least ``eta``: the product of ``K = (N-1) B`` consecutive hours has all entries ``>= gamma = eta^K``, so it
    shrinks the spread by ``1 - N gamma`` (Dobrushin's coefficient), the increments add at most ``K alpha S``
    per block, and the spread stays below ``K alpha S (1 + 1 / (N gamma))``."""
    if n == 1:
        return -math.inf
    k = (n - 1) * int(window)
    log_c = math.log10(n) + k * math.log10(eta)
    if alpha * spread <= 0:
        return -math.inf
    c = 10 ** log_c if log_c > -300 else 0.0
    base = math.log10(k * alpha * spread)
    return base + (math.log10(1 + 1 / c) if c > 0 else -log_c)


# --------------------------------------------------------------------------
# what applies to a run
# --------------------------------------------------------------------------
def fault_theory(config: Any, W: Any, pi: np.ndarray, rho: float | None, sigma_eff: float, spread_eff: float,
                 errors: np.ndarray, *, joint_window: int | None = None) -> dict[str, Any]:
    """The consensus error of a run against the bounds that apply to its communication models.

    ``errors``: the run's consensus error per hour (``||e||_pi``). Always: the measured error (final, mean, RMS
    and max over the second half) and Theorem 5.1 for the nominal graph with ``sigma_eff``. Then the model's own
    bound when one is known (``model_bound``, ``model_bound_kind``; compared with the max over every hour for the
    deterministic bounds, the RMS over the second half for the mean-square one) and, for time-varying graphs, the
    worst-case joint-connectivity bound (log10)."""
    c = config
    errors = np.asarray(errors, dtype=np.float64)
    half = errors[errors.size // 2:] if errors.size else errors
    measured = {
        "final": float(errors[-1]) if errors.size else None,
        "mean_2nd_half": float(half.mean()) if half.size else None,
        "rms_2nd_half": float(np.sqrt(np.mean(half ** 2))) if half.size else None,
        "max_2nd_half": float(half.max()) if half.size else None,
        "max": float(errors.max()) if errors.size else None,
    }
    out: dict[str, Any] = {"sigma_eff": sigma_eff, "spread_eff": spread_eff, "measured": measured,
                           "theorem_5_1_nominal": (consensus_error_bound(rho, c.rounds, c.alpha, sigma_eff)
                                                   if rho is not None else None),
                           "model_bound": None, "model_bound_kind": None, "model_bound_holds": None}
    n = len(pi)
    on = {name for name, active in [("delay", c.delay > 0), ("loss", c.message_loss > 0), ("edge_up", c.edge_up < 1),
                                    ("redraw", c.graph_redraw > 0), ("async", c.update_prob < 1 or c.agent_period_max > 1),
                                    ("quantize", c.quantize_bits > 0)] if active}
    if c.rounds == 0 or n > THEORY_MAX_N:
        out["model_bound_kind"] = "none (no consensus)" if c.rounds == 0 else f"not computed (N > {THEORY_MAX_N})"
        return out
    try:
        if on == {"quantize"} and rho is not None:
            from .comm import quantization_step

            step = quantization_step(c.quantize_bits, c.lambda_min, c.lambda_max)
            out["model_bound"] = quantized_bound(rho, c.rounds, c.alpha, sigma_eff, c.eps, step)
            out["model_bound_kind"] = "quantised messages: deterministic, every hour"
            out["model_bound_holds"] = bool(measured["max"] <= out["model_bound"] * (1 + 1e-9) + 1e-12)
        elif on and on <= {"loss", "edge_up"} and (c.message_loss == 0 or c.loss_mode == "drop"):
            ms = mean_square_rate(W, pi, c.eps, c.rounds, edge_up=c.edge_up, message_loss=c.message_loss)
            out["mean_square"] = ms
            out["model_bound"] = mean_square_bound(ms["rms_factor"], c.alpha, sigma_eff)
            out["model_bound_kind"] = ("independent failures: root-mean-square limit"
                                       + ("" if ms["exact"] else " (link patterns sampled: an estimate)"))
            out["model_bound_holds"] = bool(measured["rms_2nd_half"] <= out["model_bound"])
        elif on == {"delay"} and not c.delay_random and n > DELAY_RESPONSE_MAX_N:
            out["model_bound_kind"] = f"fixed delay: not computed (dense analysis, N > {DELAY_RESPONSE_MAX_N})"
        elif on == {"delay"} and not c.delay_random:
            dr = delay_response_bound(W, pi, c.eps, c.delay, c.rounds, c.alpha, sigma_eff)
            out["delay_response"] = dr
            out["model_bound"] = dr["bound"]
            out["model_bound_kind"] = "fixed delay: linear response, limsup"
            out["model_bound_holds"] = bool(measured["max_2nd_half"] <= dr["bound"] * (1 + 1e-9))
        else:
            out["model_bound_kind"] = "none known to apply: measured only"
    except ValueError as err:  # too large to enumerate / dense
        out["model_bound_kind"] = f"not computed: {err}"
    if on and on <= {"edge_up", "redraw"} and joint_window is not None:
        off, dg, _ = _split(W)
        eta = min(1 - c.eps + c.eps * (float(dg.min()) if dg.any() else 0.0), c.eps * float(off[off > 0].min()))
        if eta > 0:
            out["joint_bound_log10"] = joint_connectivity_bound_log10(n, joint_window, eta, c.alpha, spread_eff)
            out["joint_bound_eta"] = eta
    return out
