"""MADDPG (Lowe et al., 2017) with fixed penalties, as an extension of Tianshou 2.0's DDPG.

Design (paper section 7: "MADDPG conditions each critic on the full joint action"):

* The team is one Tianshou env per scenario copy (``ScenarioVectorEnv`` mode
  ``"team"``): observation (N, F) = every agent's local features (the
  global state), action (2N,) = the joint action, team reward = mean agent
  reward (shown in Tianshou's progress bar); each agent's own reward travels
  in ``info["agent_rew"]`` and is kept in Tianshou's replay buffer.
* Actors: deterministic, one MLP shared by all agents (Tianshou
  ``ContinuousActorDeterministic``; the agent-type one-hot in the local
  features distinguishes the types) applied row-wise by ``TeamActor``: agent
  i's action depends on its own observation only (decentralised execution).
  Exploration: Tianshou's Gaussian noise on the joint action.
* Critics: ``JointCritic`` = one centralised trunk on (global state, full
  joint action) with one head per agent, ``Q_i(s, a_1..a_N)`` trained on
  agent i's own reward (each agent's critic conditions on the full joint
  action), with Polyak-averaged target actor and critic (Tianshou's lagged
  networks).
* Update (the MADDPG rule, in ``MADDPG._update_with_batch``):
  critic: ``(Q_i(s, a) - y_i)^2`` averaged over agents with one-step
  targets ``y_i = r_i + gamma * Q'_i(s', mu'(o'_1..o'_N))``;
  actor: ``-Q_i(s, a_1, .., mu(o_i), .., a_N)`` averaged over agents, where
  the other agents' actions come from the replay buffer. The N substituted
  joint actions are evaluated in one batched critic call of size B*N with
  inputs of size O(N): an update costs O(N^2).

What is reused from Tianshou unchanged: the policy class, exploration noise,
lagged (target) networks and Polyak updates, optimizers, ``Collector``,
``VectorReplayBuffer`` and ``OffPolicyTrainer``. What is overridden: the
return computation (per-agent rewards, one-step) and the update rule above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from baselines.marl.common import (
    BaselineConfig,
    JointCritic,
    ScenarioVectorEnv,
    TeamActor,
    build_local_actor,
    own_action_q,
    per_agent_td_targets,
)

from tianshou.algorithm import DDPG
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy, DDPGTrainingStats
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.exploration import GaussianNoise

ENV_MODE = "team"
ACTOR_KIND = "deterministic"


class MADDPG(DDPG):
    """Tianshou DDPG with per-agent centralised critics and the MADDPG actor update."""

    def __init__(self, *, n_agents: int, **kwargs):
        super().__init__(**kwargs)
        self.n_agents = int(n_agents)

    def _preprocess_batch(self, batch, buffer, indices):
        return per_agent_td_targets(self, batch, buffer, indices)

    def _update_with_batch(self, batch) -> DDPGTrainingStats:
        n = self.n_agents
        q = self.critic(batch.obs, batch.act)
        critic_loss = (q - batch.returns).pow(2).mean()
        self.critic_optim.step(critic_loss)
        batch.weight = (q - batch.returns).detach().mean(dim=1)  # prioritized buffers only

        own = self.policy(batch).act                                            # mu(o_j) for every agent j
        actor_loss = -own_action_q(self.critic, batch.obs, batch.act, own, n).mean()  # only agent i's action replaced
        self.policy_optim.step(actor_loss)
        self._update_lagged_network_weights()
        return DDPGTrainingStats(actor_loss=actor_loss.item(), critic_loss=critic_loss.item())


@dataclass
class Built:
    algorithm: MADDPG
    local_actor: nn.Module
    actor_kind: str = ACTOR_KIND


def build(config: BaselineConfig, env: ScenarioVectorEnv) -> Built:
    """MADDPG for ``env`` (mode ``team``)."""
    if env.mode != ENV_MODE:
        raise ValueError(f"MADDPG needs a ScenarioVectorEnv in mode {ENV_MODE!r}, got {env.mode!r}")
    feat, n = env.feat_dim, env.n_agents
    inner = build_local_actor(ACTOR_KIND, feat, config.hidden_sizes, env.action_dim)
    policy = ContinuousDeterministicPolicy(
        actor=TeamActor(inner, n),
        exploration_noise=GaussianNoise(sigma=config.exploration_noise) if config.exploration_noise > 0 else None,
        action_space=env.single_action_space,
        observation_space=env.single_observation_space,
        action_scaling=True,
        action_bound_method="clip",
    )
    algorithm = MADDPG(
        n_agents=n,
        policy=policy,
        policy_optim=AdamOptimizerFactory(lr=config.lr),
        critic=JointCritic(n, feat, config.critic_hidden_sizes, env.action_dim),
        critic_optim=AdamOptimizerFactory(lr=config.critic_lr),
        tau=config.tau,
        gamma=config.gamma,
        n_step_return_horizon=1,
    )
    return Built(algorithm.to(config.device), inner)
