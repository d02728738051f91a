"""ISAC: independent SAC with LOCAL critics and fixed penalties, on Tianshou 2.0's SAC unchanged.

Design. The paper (section 7) lists ISAC among the methods with "a joint
critic"; independent SAC by definition has none, and this project follows
the issue: ISAC = independent SAC whose critics see only the agent's own
observation and action.

* Each (scenario copy, agent) pair is one Tianshou env slot
  (``ScenarioVectorEnv`` mode ``"local"``): observation = the agent's local
  features (plain observation + agent-type one-hot), action = its own
  (a_bat, a_grid), reward = its own fixed-penalty reward.
* Actor: one tanh-squashed Gaussian MLP shared by all agents (parameter
  sharing per type through the type one-hot); twin critics
  ``Q(o_i, a_i)`` and their Polyak targets, also shared. This is Tianshou's
  ``SAC`` and ``SACPolicy`` with no modification: every agent is simply a
  sample of the same single-agent problem, so the cost of an iteration is
  linear in N (like the consensus method's training, but with fixed
  penalties instead of state augmentation).
* Entropy temperature: auto-tuned (``AutoAlpha``, target entropy -2 = minus
  the per-agent action dimension) unless ``config.alpha`` fixes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from baselines.marl.common import ACTION_DIM, BaselineConfig, ScenarioVectorEnv, SlotActor, build_local_actor

from tianshou.algorithm import SAC
from tianshou.algorithm.modelfree.sac import AutoAlpha, SACPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousCritic

ENV_MODE = "local"
ACTOR_KIND = "gaussian_tanh"
INITIAL_ALPHA = 0.02


@dataclass
class Built:
    algorithm: SAC
    local_actor: nn.Module
    actor_kind: str = ACTOR_KIND


def make_alpha(config: BaselineConfig, action_dim: int = ACTION_DIM):
    """Fixed ``config.alpha`` or Tianshou's ``AutoAlpha`` with target entropy -(per-agent action dim)."""
    if config.alpha is not None:
        return float(config.alpha)
    return AutoAlpha(target_entropy=-float(action_dim), log_alpha=math.log(INITIAL_ALPHA),
                     optim=AdamOptimizerFactory(lr=config.lr))


def build(config: BaselineConfig, env: ScenarioVectorEnv) -> Built:
    """Tianshou SAC with a shared local actor and shared local twin critics for ``env`` (mode ``local``)."""
    if env.mode != ENV_MODE:
        raise ValueError(f"ISAC needs a ScenarioVectorEnv in mode {ENV_MODE!r}, got {env.mode!r}")
    feat = env.feat_dim
    inner = build_local_actor(ACTOR_KIND, feat, config.hidden_sizes, env.action_dim)

    def critic() -> ContinuousCritic:
        return ContinuousCritic(preprocess_net=Net(state_shape=feat, action_shape=env.action_dim, concat=True,
                                                   hidden_sizes=config.critic_hidden_sizes))

    policy = SACPolicy(
        actor=SlotActor(inner, feat),
        action_space=env.single_action_space,
        observation_space=env.single_observation_space,
        deterministic_eval=True,
        action_scaling=True,
    )
    algorithm = SAC(
        policy=policy,
        policy_optim=AdamOptimizerFactory(lr=config.lr),
        critic=critic(),
        critic_optim=AdamOptimizerFactory(lr=config.critic_lr),
        critic2=critic(),
        critic2_optim=AdamOptimizerFactory(lr=config.critic_lr),
        tau=config.tau,
        gamma=config.gamma,
        alpha=make_alpha(config, env.action_dim),
        n_step_return_horizon=1,
    )
    return Built(algorithm.to(config.device), inner)
