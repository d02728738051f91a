"""Local dual steps and neighbour consensus on the multipliers (paper Algorithm 1, eq. 10 and 14).

Pure vectorized functions on float64 arrays of N agents, and ``DualConsensus``,
which applies them every ``update_period`` hours:

1. ``lambda_i <- clip(lambda_i + alpha * (e_grid_i - c/N), 0, lambda_max)`` (local dual step),
2. L rounds of ``lambda_i <- lambda_i - eps * (lambda_i - mean_{j in N(i)} lambda_j)`` (consensus),
3. ``nu_i <- clip(nu_i - eta * r2_i, nu_min, nu_max)`` (local, no consensus).

L = 0 is the paper's "no consensus" variant. Between updates the signals
are averaged, so a period of k hours takes one step on the k-hour mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def dual_step_lambda(lam: np.ndarray, e_grid: np.ndarray, share, alpha: float, lam_max: float = 15.0, lam_min: float = 0.0) -> np.ndarray:
    """Projected dual ascent on the grid constraint: lambda grows while the agent uses more than its share."""
    return np.clip(lam + alpha * (e_grid - share), lam_min, lam_max)


def consensus(lam: np.ndarray, walk: sp.spmatrix, eps: float, rounds: int) -> np.ndarray:
    """``rounds`` applications of the Perron matrix ``P = I - eps (I - D^-1 A)``; rounds = 0 returns ``lam``."""
    for _ in range(rounds):
        lam = lam - eps * (lam - walk @ lam)
    return lam


def dual_step_nu(nu: np.ndarray, r2: np.ndarray, eta: float, nu_min: float = -20.0, nu_max: float = 20.0) -> np.ndarray:
    """Projected step on the local demand constraint: nu falls while demand is postponed (r2 > 0)."""
    return np.clip(nu - eta * r2, nu_min, nu_max)


@dataclass(frozen=True)
class DualConfig:
    """Step sizes, consensus rounds and multiplier ranges of Algorithm 1."""

    alpha: float = 0.05
    eps: float = 0.5
    eta: float = 0.05
    rounds: int = 1
    update_period: int = 1
    lambda_min: float = 0.0
    lambda_max: float = 15.0
    nu_min: float = -20.0
    nu_max: float = 20.0

    def __post_init__(self) -> None:
        _positive("alpha", self.alpha)
        _positive("eta", self.eta)
        if not _finite(self.eps) or not 0.0 < self.eps <= 1.0:
            raise ValueError(f"eps={self.eps!r} is out of range; allowed: (0, 1]")
        for name in ("rounds", "update_period"):
            value = getattr(self, name)
            low = 0 if name == "rounds" else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}={value!r} is out of range; allowed: integers >= {low}")
        if not (_finite(self.lambda_min) and _finite(self.lambda_max) and 0.0 <= self.lambda_min < self.lambda_max):
            raise ValueError(f"lambda range [{self.lambda_min}, {self.lambda_max}] must satisfy 0 <= lambda_min < lambda_max")
        if not (_finite(self.nu_min) and _finite(self.nu_max) and self.nu_min < self.nu_max):
            raise ValueError(f"nu range [{self.nu_min}, {self.nu_max}] must satisfy nu_min < nu_max")


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _positive(name: str, value) -> None:
    if not _finite(value) or float(value) <= 0.0:
        raise ValueError(f"{name}={value!r} is out of range; allowed: finite numbers > 0")


class DualConsensus:
    """The multipliers of N agents and the Algorithm 1 update, over a fixed communication graph."""

    def __init__(self, walk: sp.spmatrix, config: DualConfig | None = None, *, n_agents: int | None = None, share=0.0,
                 lam0=None, nu0=None):
        self.config = config or DualConfig()
        self.walk = sp.csr_matrix(walk)
        n = self.walk.shape[0] if n_agents is None else n_agents
        if self.walk.shape != (n, n):
            raise ValueError(f"random-walk matrix has shape {self.walk.shape}, expected ({n}, {n})")
        self.n_agents = n
        self.share = share
        degrees = np.diff(self.walk.indptr).astype(np.float64)
        self.weights = degrees / degrees.sum()
        self.lam = np.zeros(n) if lam0 is None else np.array(np.broadcast_to(lam0, (n,)), dtype=np.float64)
        self.nu = np.zeros(n) if nu0 is None else np.array(np.broadcast_to(nu0, (n,)), dtype=np.float64)
        self._e_sum = np.zeros(n)
        self._r2_sum = np.zeros(n)
        self._count = 0

    def step(self, e_grid: np.ndarray, r2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed one hour of signals; every ``update_period`` hours apply Algorithm 1. Returns (lambda, nu)."""
        c = self.config
        if c.update_period == 1:
            e_mean, r2_mean = e_grid, r2
        else:
            self._e_sum += e_grid
            self._r2_sum += r2
            self._count += 1
            if self._count < c.update_period:
                return self.lam, self.nu
            e_mean, r2_mean = self._e_sum / self._count, self._r2_sum / self._count
            self._e_sum[:] = 0.0
            self._r2_sum[:] = 0.0
            self._count = 0
        lam = dual_step_lambda(self.lam, e_mean, self.share, c.alpha, c.lambda_max, c.lambda_min)
        self.lam = consensus(lam, self.walk, c.eps, c.rounds)
        self.nu = dual_step_nu(self.nu, r2_mean, c.eta, c.nu_min, c.nu_max)
        return self.lam, self.nu

    def weighted_average(self) -> float:
        """The degree-weighted average ``w . lambda`` that pure consensus preserves."""
        return float(self.weights @ self.lam)

    def consensus_error(self) -> float:
        """Euclidean distance of lambda from consensus at its degree-weighted average."""
        return float(np.linalg.norm(self.lam - self.weighted_average()))
