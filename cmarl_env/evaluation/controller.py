"""The controller protocol every method implements, and the controllers that need no learning.

A controller is driven by :func:`cmarl_env.evaluation.rollout`::

    controller.reset(core)          # a new roll-out: read the scenario's facts from the core
    for every hour:
        actions = controller.act(obs)   # (N, K) actions in [0, 1]; K = domain_of(core).action_width(core):
                                        # 2 for demand response (battery, grid), the ports for EV charging
        controller.observe(step)        # the hour's signals (a CoreStep): dual updates, budgets, ...

``reset`` receives the core of the roll-out, of any registered domain
(:mod:`cmarl_env.domains`; ``domain_of(core)`` gives its global and local
signals, limit and share). A controller may read it (for demand response
``share``, ``grid_limit``, ``layout``, the current ``demand``/``soc``/``backlog``)
and, when it declares
``augment = True``, write the agents' multipliers ``core.lam``/``core.nu``
(the observation then carries them); it never steps the core. ``trace()``
returns per-step arrays the controller recorded (stored with the roll-out),
``summary()`` scalars for the run's metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Controller:
    """Base class: override ``act``; ``reset``/``observe``/``trace``/``summary`` are optional."""

    name = "controller"
    augment = False  # True: the observations carry (lambda, nu), which the controller sets on the core

    def reset(self, core) -> None:
        self.core = core

    def act(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.act")

    def observe(self, step) -> None:
        pass

    def trace(self) -> dict[str, np.ndarray]:
        return {}

    def summary(self) -> dict[str, Any]:
        return {}


class ServeAll(Controller):  # demand-response controllers: (N, 2) actions
    """No control: battery first, then the grid for all the rest, never postpone (``a = (1, 1)``)."""

    name = "serve_all"

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.ones((obs.shape[0], 2))


class GridOnly(Controller):
    """Everything from the grid, ``a = (0, 1)``: no battery, no postponement."""

    name = "grid_only"

    def act(self, obs: np.ndarray) -> np.ndarray:
        a = np.zeros((obs.shape[0], 2))
        a[:, 1] = 1.0
        return a


class RandomController(Controller):
    """Uniformly random actions in [0, 1]^2, seeded: the floor every learned method must clear."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def reset(self, core) -> None:
        super().reset(core)
        self.rng = np.random.default_rng([self.seed, 0x5A11D])

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.random((obs.shape[0], 2))
