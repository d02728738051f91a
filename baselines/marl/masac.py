"""MASAC: multi-agent soft actor-critic with centralised critics and fixed penalties, extending Tianshou 2.0's SAC.

Design (paper section 7: "MASAC ... use[s] a joint critic"):

* The team is one Tianshou env per scenario copy (``ScenarioVectorEnv`` mode
  ``"team"``; see ``baselines.marl.maddpg``): observation = global state
  (N, F), action = joint action (2N,), per-agent rewards in
  ``info["agent_rew"]``.
* Actor: one tanh-squashed Gaussian MLP shared by all agents (Tianshou
  ``ContinuousActorProbabilistic``, type one-hot in the input), applied
  row-wise by ``TeamActor``; agents sample independently, so the joint
  log-probability is the sum of the per-agent ones (``MASACPolicy`` also
  returns them per agent). Decentralised execution: each agent's action is
  the mode of its own Gaussian, squashed.
* Critics: twin ``JointCritic``s ``Q_i(s, a_1..a_N)`` (centralised trunk on
  the global state and the joint action, one head per agent, trained on
  agent i's own reward) with Polyak targets - Tianshou's dual-critic
  machinery.
* Update (``MASAC._update_with_batch``): soft one-step targets
  ``y_i = r_i + gamma * (min_k Q'_k,i(s', a') - alpha * log pi_i(a'_i | o'_i))``
  with ``a' ~ pi(.|o')`` jointly; actor loss
  ``mean_i [alpha * log pi_i(a_i | o_i) - min_k Q_k,i(s, a_1 .. a_i .. a_N)]``
  where only agent i's own action is resampled from the current policy and
  the others keep the buffer's (the MADDPG-style rule,
  ``baselines.marl.common.own_action_q``); temperature auto-tuned with Tianshou's ``AutoAlpha`` on
  the per-agent entropy (target -2) unless ``config.alpha`` fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Independent, Normal

from baselines.marl.common import (
    BaselineConfig,
    JointCritic,
    ScenarioVectorEnv,
    TeamActor,
    build_local_actor,
    own_action_q,
    per_agent_td_targets,
)
from baselines.marl.isac import make_alpha

from tianshou.algorithm import SAC
from tianshou.algorithm.modelfree.sac import SACPolicy, SACTrainingStats
from tianshou.algorithm.modelfree.td3 import ActorDualCriticsOffPolicyAlgorithm
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Batch
from tianshou.utils.conversion import to_optional_float

ENV_MODE = "team"
ACTOR_KIND = "gaussian_tanh"
_EPS = float(np.finfo(np.float32).eps)


class MASACPolicy(SACPolicy):
    """Tianshou's SAC policy over the joint action, also returning per-agent log-probabilities (B, N)."""

    def __init__(self, *, n_agents: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.n_agents = int(n_agents)

    def forward(self, batch, state=None, **kwargs: Any):
        (loc, scale), hidden = self.actor(batch.obs, state=state, info=batch.info)
        dist = Independent(Normal(loc=loc, scale=scale), 1)
        raw = dist.mode if (self.deterministic_eval and not self.is_within_training_step) else dist.rsample()
        squashed = torch.tanh(raw)
        # log N(raw) - log(1 - tanh(raw)^2): the tanh-corrected density, per action dimension, summed per agent
        per_dim = dist.base_dist.log_prob(raw) - torch.log(1.0 - squashed.pow(2) + _EPS)
        per_agent = per_dim.reshape(per_dim.shape[0], self.n_agents, -1).sum(-1)
        return Batch(
            logits=(loc, scale),
            act=squashed,
            state=hidden,
            dist=dist,
            log_prob=per_agent.sum(-1, keepdim=True),
            log_prob_agents=per_agent,
        )


class MASAC(SAC):
    """Tianshou SAC with per-agent centralised twin critics (see the module docstring)."""

    def _preprocess_batch(self, batch, buffer, indices):
        return per_agent_td_targets(self, batch, buffer, indices)

    def _target_q_compute_value(self, obs_batch, act_batch) -> torch.Tensor:
        min_q = ActorDualCriticsOffPolicyAlgorithm._target_q_compute_value(self, obs_batch, act_batch)
        return min_q - self.alpha.value * act_batch.log_prob_agents

    def _update_with_batch(self, batch) -> SACTrainingStats:
        q1 = self.critic(batch.obs, batch.act)
        critic1_loss = (q1 - batch.returns).pow(2).mean()
        self.critic_optim.step(critic1_loss)
        q2 = self.critic2(batch.obs, batch.act)
        critic2_loss = (q2 - batch.returns).pow(2).mean()
        self.critic2_optim.step(critic2_loss)
        batch.weight = ((q1 + q2) / 2.0 - batch.returns).detach().mean(dim=1)  # prioritized buffers only

        result = self.policy(batch)
        n = self.policy.n_agents
        q1a = own_action_q(self.critic, batch.obs, batch.act, result.act, n)
        q2a = own_action_q(self.critic2, batch.obs, batch.act, result.act, n)
        actor_loss = (self.alpha.value * result.log_prob_agents - torch.min(q1a, q2a)).mean()
        self.policy_optim.step(actor_loss)
        alpha_loss = self.alpha.update(-result.log_prob_agents.detach())
        self._update_lagged_network_weights()
        return SACTrainingStats(
            actor_loss=actor_loss.item(),
            critic1_loss=critic1_loss.item(),
            critic2_loss=critic2_loss.item(),
            alpha=to_optional_float(self.alpha.value),
            alpha_loss=to_optional_float(alpha_loss),
        )


@dataclass
class Built:
    algorithm: MASAC
    local_actor: nn.Module
    actor_kind: str = ACTOR_KIND


def build(config: BaselineConfig, env: ScenarioVectorEnv) -> Built:
    """MASAC for ``env`` (mode ``team``)."""
    if env.mode != ENV_MODE:
        raise ValueError(f"MASAC needs a ScenarioVectorEnv in mode {ENV_MODE!r}, got {env.mode!r}")
    feat, n = env.feat_dim, env.n_agents
    inner = build_local_actor(ACTOR_KIND, feat, config.hidden_sizes, env.action_dim)
    policy = MASACPolicy(
        n_agents=n,
        actor=TeamActor(inner, n),
        action_space=env.single_action_space,
        observation_space=env.single_observation_space,
        deterministic_eval=True,
        action_scaling=True,
    )
    algorithm = MASAC(
        policy=policy,
        policy_optim=AdamOptimizerFactory(lr=config.lr),
        critic=JointCritic(n, feat, config.critic_hidden_sizes, env.action_dim),
        critic_optim=AdamOptimizerFactory(lr=config.critic_lr),
        critic2=JointCritic(n, feat, config.critic_hidden_sizes, env.action_dim),
        critic2_optim=AdamOptimizerFactory(lr=config.critic_lr),
        tau=config.tau,
        gamma=config.gamma,
        alpha=make_alpha(config, env.action_dim),
        n_step_return_horizon=1,
    )
    return Built(algorithm.to(config.device), inner)
