"""MAPPO-Lagrangian (Gu et al., "Multi-agent constrained policy optimisation", 2021; the MAPPO-L of the
Safe-Policy-Optimization benchmark), on Tianshou 2.0's PPO, Collector and OnPolicyTrainer.

The Lagrangian machinery (reward and cost critics, combined advantage, dual ascent on the measured violation,
no multipliers at execution) is :class:`baselines.marl.lagrangian.LagrangianPPO`; this module only wires it up:

* **Actor:** ONE Gaussian MLP shared by all agents on the agent's local features (plain observation + type
  one-hot), exactly the MAPPO baseline's (``SlotActor`` over ``build_local_actor("gaussian_clip")``); execution
  is decentralised and multiplier-free.
* **Centralised critics:** three value networks (reward r0, grid cost - demand response: the excess
  ``e_grid - c/N``, EV with a cap per hour: the hour's overload / N (``BaselineDomain.grid_cost``) - and r2) on
  MAPPO's agent-specific global state ``[local features of agent i, all agents' local features]``
  (``ScenarioVectorEnv`` mode ``"local_global"``), the critic input of the MAPPO baseline.
* **Multipliers:** ONE global ``lambda`` for the coupled grid constraint (dual ascent on the mean of the grid
  cost minus its limit over all agents and hours of the collected batch: the constraint is on the sum) and
  one ``mu_i`` per agent for its own demand constraint (mean r2 of agent i's samples minus the slack).
* **Advantage:** agent i's own ``A^r - lambda A^grid - mu_i A^dem`` (per-agent GAE and PPO ratio, as MAPPO).

What matches the references: separate reward/cost critics, the Lagrangian-combined advantage in the clipped
PPO objective, a multiplier updated from the measured cost of the latest batch before the policy step, shared
actor parameters (MAPPO's). What is simplified: the references' cost limit is on the expected episode cost,
updated with an optimiser (Adam in SafePO); here the constraint is per hour (the paper's long-run average), the
step is plain projected ascent with ``dual_lr_grid`` / ``dual_lr_demand`` in the constraints' units, and the
multipliers live in the paper's box (``lambda <= 15``, ``mu <= 20``). Gu et al.'s MAPPO-L updates agents
sequentially (HAPPO-style); here all agents share one actor and are updated together, as in MAPPO.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from baselines.marl.common import BaselineConfig, ScenarioVectorEnv, SlotActor, build_local_actor
from baselines.marl.lagrangian import LagrangianPPO, MultiCritic, make_lagrangian_ppo

from tianshou.algorithm.optim import AdamOptimizerFactory

ENV_MODE = "local_global"
ACTOR_KIND = "gaussian_clip"


@dataclass
class Built:
    algorithm: LagrangianPPO
    local_actor: nn.Module
    actor_kind: str = ACTOR_KIND


def build(config: BaselineConfig, env: ScenarioVectorEnv) -> Built:
    """LagrangianPPO with a shared local actor, centralised reward/cost critics, one global grid multiplier."""
    if env.mode != ENV_MODE or not env.signals:
        raise ValueError(f"MAPPO-L needs a ScenarioVectorEnv in mode {ENV_MODE!r} with constraint signals "
                         f"(a mappo_lagrangian config), got mode {env.mode!r}")
    feat, n = env.feat_dim, env.n_agents
    inner = build_local_actor(ACTOR_KIND, feat, config.hidden_sizes, env.action_dim)
    critic = MultiCritic(feat * (n + 1), config.critic_hidden_sizes)
    algorithm = make_lagrangian_ppo(SlotActor(inner, feat), critic, AdamOptimizerFactory(lr=config.lr), config,
                                    env.single_action_space, env.single_observation_space, grid_multipliers=1)
    return Built(algorithm.to(config.device), inner)
