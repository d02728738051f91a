"""Which hours an evaluation covers, and therefore which hours set its grid limit.

The grid limit of an evaluation is ``c`` times the peak of the agents'
aggregate demand over **the evaluated hours** ``[start_hour, start_hour +
steps)``: the environment of every evaluation (``cmarl run``, ``cmarl
oracle``, ``cmarl bench``, the grid search) has exactly those hours as its
data window, so the same flags give the same ``grid_limit`` everywhere. The
training environment (80-hour episodes drawn from hours [0, 3000)) uses its
own window, hours [0, 3000), the same way.
"""

from __future__ import annotations

from typing import Any, Mapping

from cmarl_env.config import DEFAULT_DATASET, EnvConfig, check_int


def evaluation_config(*, n_agents: int, constraint: float, start_hour: int, steps: int, n_hours: int,
                      dataset: str = DEFAULT_DATASET, demand_scales=None, graph: Any = "two_clusters",
                      graph_params: Mapping[str, Any] | None = None, seed: int = 0, augment: bool = False,
                      lambda_range: tuple[float, float] = (0.0, 15.0),
                      nu_range: tuple[float, float] = (-20.0, 20.0)) -> EnvConfig:
    """The environment of one evaluation of ``steps`` hours from ``start_hour`` on a dataset of ``n_hours`` hours.

    Raises ``ValueError`` naming the start hour, the length and the dataset's
    hours when the evaluation would run past the end of the data.
    """
    check_int("start_hour", start_hour, 0, 10**7)
    check_int("steps", steps, 1, 10**7)
    end = start_hour + steps
    if end > n_hours:
        raise ValueError(f"start_hour={start_hour} + steps={steps} = {end} runs past the end of the data "
                         f"({n_hours} hours of {dataset}); allowed: start_hour + steps <= {n_hours}")
    return EnvConfig(n_agents=n_agents, dataset=dataset, demand_scales=demand_scales, graph=graph,
                     graph_params=dict(graph_params or {}), constraint_fraction=constraint, episode_length=steps,
                     window=(start_hour, end), start_hour=start_hour, augment=augment,
                     lambda_range=tuple(lambda_range), nu_range=tuple(nu_range), seed=seed)


def rollout_start_hours(start_hour: int, rollouts: int, jitter: int, seed: int) -> tuple[int, ...]:
    """Where an evaluation's roll-outs start: the first at ``start_hour``, roll-out k >= 1 at ``start_hour + u``
    with ``u ~ U{0..jitter}`` from ``rng([seed, k])``. The seed is the scenario's, never a training seed, so every
    method and every training seed is judged on the same hours."""
    import numpy as np

    check_int("rollouts", rollouts, 1, 10**6)
    check_int("jitter", jitter, 0, 10**7)
    hours = [int(start_hour)]
    for k in range(1, rollouts):
        u = int(np.random.default_rng([seed, k]).integers(0, jitter + 1)) if jitter else 0
        hours.append(int(start_hour) + u)
    return tuple(hours)
