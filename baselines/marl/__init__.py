"""CTDE and independent MARL baselines with fixed penalties (paper section 7, appendix A.3), on Tianshou 2.0.

* ``mappo``  - shared local actor, centralised value function on the global state (``baselines.marl.mappo``)
* ``maddpg`` - shared deterministic actor, per-agent critics on the global state and the full joint action
* ``masac``  - shared stochastic actor, per-agent centralised soft twin critics
* ``isac``   - independent SAC: shared actor and LOCAL twin critics (own observation and action only)

All four are trained on ``r0 + lambda * (c/N - e_grid) + nu * r2`` with fixed
(lambda, nu) = (8, -8) by default and plain observations. Every baseline also runs on EV charging
(``BaselineConfig(domain="ev_charging", domain_params={...})``): the same code reads the signals through the
domain seam, ``r0 + lambda (L_t/N - load) + nu unmet`` with default (0.25, -2) (``baselines.marl.domain``). Two more learn their
multipliers during training (``baselines.marl.lagrangian``; the executed policy
carries none):

* ``mappo_lagrangian`` - MAPPO-L: shared actor, centralised reward and cost critics, one global grid
  multiplier and per-agent demand multipliers, dual ascent on the measured violation after each collect
* ``networked_pd`` - networked primal-dual: neighbourhood critics on the scenario graph, per-agent
  multipliers averaged with the neighbours (consensus) before each local dual step

See
``baselines.marl.common`` for the shared pieces (config, env adapter,
``MARLController`` and ``evaluate`` through ``cmarl_env.evaluation.rollout``) and each module's docstring for its design.

Usage::

    from baselines.marl import BaselineConfig, train_baseline, load_policy, evaluate
    summary = train_baseline(BaselineConfig(name="mappo", total_steps=50_000), "runs/mappo")
    report = evaluate(load_policy(summary["checkpoint"]), start_hours=[0], steps=3000)
"""

from baselines.marl.common import (
    ALL_BASELINES,
    BASELINES,
    LAGRANGIAN_BASELINES,
    EVAL_START_HOURS,
    BaselineConfig,
    CheckpointError,
    MARLController,
    MARLPolicy,
    ScenarioVectorEnv,
    evaluate,
    evaluate_return,
    load_policy,
    save_checkpoint,
)
from baselines.marl.training import train_baseline

__all__ = [
    "ALL_BASELINES",
    "BASELINES",
    "LAGRANGIAN_BASELINES",
    "EVAL_START_HOURS",
    "BaselineConfig",
    "CheckpointError",
    "MARLController",
    "MARLPolicy",
    "ScenarioVectorEnv",
    "evaluate",
    "evaluate_return",
    "load_policy",
    "save_checkpoint",
    "train_baseline",
]
