"""Evaluation protocol: the controller interface, the one roll-out loop, the feasibility rule, the grid limit.

Nothing here imports torch, Tianshou or Ray. Methods (``algorithms``,
``baselines``, a user's own controller) implement :class:`Controller`;
``benchmarks`` runs them through :func:`rollout` and judges them with
:func:`judge`. :func:`rollout` works for every registered domain
(:mod:`cmarl_env.domains`, docs/domains.md): the core's domain supplies the
signals, the limit per step and the verdict; ``feasibility`` holds demand
response's rule, ``cmarl_env.domains.ev_charging.evaluation`` EV charging's.
"""

from cmarl_env.evaluation.controller import Controller, GridOnly, RandomController, ServeAll
from cmarl_env.evaluation.feasibility import (
    BACKLOG_SLOPE_LIMIT,
    GRID_TOLERANCE,
    Verdict,
    backlog_slope,
    is_binding,
    judge,
    terminal_backlog_value,
)
from cmarl_env.evaluation.rollout import Rollout, rollout
from cmarl_env.evaluation.window import evaluation_config, rollout_start_hours

__all__ = [
    "BACKLOG_SLOPE_LIMIT", "GRID_TOLERANCE", "Controller", "GridOnly", "RandomController", "Rollout", "ServeAll",
    "Verdict", "backlog_slope", "evaluation_config", "is_binding", "judge", "rollout", "rollout_start_hours", "terminal_backlog_value",
]
