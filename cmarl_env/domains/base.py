"""The domain seam: what a constrained multi-agent domain tells the roll-out loop, Algorithm 1 and the benchmarks.

A *domain* is a family of problems with separable per-agent dynamics, a money
objective, one shared (global) budget and one obligation per agent (local
constraint), the setting of the paper's method. Each domain is one folder under
``cmarl_env/domains/`` holding a vectorized *core* (N agents stepped with array
operations) and one small :class:`Domain` subclass, registered by name in
:mod:`cmarl_env.domains` (PettingZoo MPE's pattern: one small class per
scenario on a shared base).

What the seam asks of a core (duck-typed; both cores have it):

* ``n_agents``, ``config`` (a frozen :class:`~cmarl_env.config.ConfigBase`;
  ``config.graph``/``graph_params``/``seed`` name the communication graph of
  Algorithm 1), ``observe() -> (N, obs_dim)``, ``step(actions) -> step`` whose
  ``step.signals`` hold the hour's per-agent signals and ``step.obs`` the next
  observation, ``lam``/``nu`` (per-agent multipliers, read by the observation
  when the config says ``augment=True``), ``describe()``;
* a class attribute ``domain`` naming its registered domain, so
  :func:`cmarl_env.domains.domain_of` finds the adapter from a core.

What a :class:`Domain` supplies (every method takes the core and/or one step's
signals; nothing here loops over agents):

==========================  ==================================================
``build(config, data)``     the core of a scenario (config + data window)
``config_type``             the domain's config dataclass
``action_width(core)``      K: actions are (N, K) in [0, 1]
``observation_layout``      names of the observation columns
``agent_types(core)``       (N,) type index; ``type_keys``/``type_mask`` name
                            the types (policies are shipped per type)
``objective(signals)``      (N,) money cost of the step (what is minimised)
``global_signal(signals)``  (N,) each agent's use of the shared budget
``limit(core, t)``          the budget on the SUM of the global signal at step t
``share(core, signals)``    each agent's part of it at this step
``share_varies``            True when the limit changes from step to step
``local_signal(signals)``   (N,) r2: > 0 = the agent's obligation not met
``dual_local_signal``       what the nu step of Algorithm 1 reads (the local
                            signal minus the domain's documented allowance)
``dual_defaults``           DualConfig fields suited to the domain's units
``begin(core, start, ...)`` reset the core for a roll-out of ``steps`` steps
``recorder(core, steps)``   per-step totals -> the domain's roll-out record,
                            whose ``verdict`` is the domain's feasibility rule
                            and ``metrics()`` its JSON-friendly metrics
==========================  ==================================================

:func:`cmarl_env.evaluation.rollout` is written against this class only; so is
:class:`algorithms.execute.DualConsensusController` (Algorithm 1).
docs/domains.md explains how to add a domain.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np


class Recorder(Protocol):
    """Collects one roll-out's per-step totals and builds the domain's record."""

    def record(self, t: int, signals: Any) -> None: ...

    def finish(self, *, controller: str, wall_time_s: float, traces: dict, info: dict) -> Any: ...


class Domain:
    """Base class of a domain adapter; subclasses fill in the methods below (see the module docstring)."""

    name: ClassVar[str] = ""
    #: True when the budget (``limit``/``share``) changes from step to step (Algorithm 1 then reads it per step)
    share_varies: ClassVar[bool] = False
    #: DualConfig field overrides for Algorithm 1 on this domain (step sizes in the domain's units, sign range of nu)
    dual_defaults: ClassVar[dict[str, Any]] = {}
    #: whether the package ships trained policies per agent type (``algorithms.policy.load_pretrained``)
    ships_policies: ClassVar[bool] = False
    #: what ``start`` means in ``rollout(controller, core, start, steps)``
    start_unit: ClassVar[str] = "step"

    # -- building -------------------------------------------------------------------------------------------------
    @property
    def config_type(self) -> type:
        raise NotImplementedError

    @property
    def core_type(self) -> type:
        raise NotImplementedError

    def build(self, config=None, data=None):
        """The core of a scenario: ``config`` (the domain's config, default one if None) and its data."""
        raise NotImplementedError

    # -- agents -----------------------------------------------------------------------------------------------------
    def action_width(self, core) -> int:
        raise NotImplementedError

    def observation_layout(self, core) -> tuple[str, ...]:
        return tuple(core.layout_names)

    def agent_types(self, core) -> np.ndarray:
        """(N,) int type index of every agent."""
        return np.asarray(core.agent_types)

    def type_keys(self, core) -> list:
        """The agent types' keys, in type-index order (what policies are keyed by)."""
        raise NotImplementedError

    def type_mask(self, core, key) -> np.ndarray:
        """(N,) bool: the agents of type ``key``."""
        raise NotImplementedError

    # -- signals of one step ----------------------------------------------------------------------------------------
    def objective(self, signals) -> np.ndarray:
        """(N,) money cost of the step (minimised); the cores report it as ``r0 = -cost``."""
        return -signals.r0

    def global_signal(self, signals) -> np.ndarray:
        raise NotImplementedError

    def limit(self, core, t: int) -> float:
        """The limit on the sum over agents of the global signal at step ``t`` of the episode."""
        raise NotImplementedError

    def share(self, core, signals) -> float:
        """Each agent's part of this step's limit (``limit / N``)."""
        raise NotImplementedError

    def local_signal(self, signals) -> np.ndarray:
        return signals.r2

    def dual_local_signal(self, core, signals) -> np.ndarray:
        """The signal of the nu step ``nu <- clip(nu - eta r, ...)``; the local signal unless the domain allows a
        documented tolerance."""
        return self.local_signal(signals)

    # -- roll-outs ----------------------------------------------------------------------------------------------------
    def begin(self, core, start, steps, seed=None):
        """Reset ``core`` for a roll-out of ``steps`` steps from ``start``; returns the number of steps."""
        raise NotImplementedError

    def episode_start(self, core) -> int:
        """An integer naming where the current episode starts (seeds Algorithm 1's communication draws)."""
        raise NotImplementedError

    def episode_steps(self, core) -> int:
        raise NotImplementedError

    def recorder(self, core, steps: int) -> Recorder:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<domain {self.name!r}>"
