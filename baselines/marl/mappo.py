"""MAPPO (Yu et al., 2022) with fixed penalties, on Tianshou 2.0's PPO, Collector and OnPolicyTrainer.

Design (paper section 7: "MAPPO ... use[s] a joint critic"):

* Each (scenario copy, agent) pair is one Tianshou env slot
  (``ScenarioVectorEnv`` mode ``"local_global"``), observing
  ``[local features of agent i, global state]`` where the global state stacks
  all N agents' local features (MAPPO's agent-specific global state) and the
  reward is agent i's own fixed-penalty reward. So Tianshou's PPO computes
  per-agent GAE advantages and per-agent probability ratios (PPO clipping per
  agent), exactly MAPPO's objective, with no change to Tianshou.
* Actor: ONE Gaussian MLP (Tianshou ``ContinuousActorProbabilistic``) shared
  by all agents; its input is the agent's local features (plain observation
  + agent-type one-hot), so the type one-hot is what distinguishes the
  normal- and double-demand agents. ``SlotActor`` slices the local part off
  the slot observation: execution is decentralised (agent i needs only its
  own observation and type).
* Critic: centralised value function ``V(o_i, s)`` on the global state
  (Tianshou ``ContinuousCritic`` without action input). Its input grows
  linearly with N and the number of slots too, so an iteration costs
  O(N^2) - the scaling the paper attributes to CTDE methods.
* Actions: PPO's Gaussian in [-1, 1] clip space, mapped to [0, 1]
  (``action_bound_method="clip"`` + ``action_scaling``), like the
  state-augmented PPO of ``algorithms.train``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from baselines.marl.common import (
    BaselineConfig,
    ScenarioVectorEnv,
    SlotActor,
    build_local_actor,
)

from algorithms.train import make_ppo
from tianshou.algorithm import PPO
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousCritic

ENV_MODE = "local_global"
ACTOR_KIND = "gaussian_clip"


@dataclass
class Built:
    algorithm: PPO
    local_actor: nn.Module
    actor_kind: str = ACTOR_KIND


def build(config: BaselineConfig, env: ScenarioVectorEnv) -> Built:
    """Tianshou PPO with a shared local actor and a centralised critic for ``env`` (mode ``local_global``)."""
    if env.mode != ENV_MODE:
        raise ValueError(f"MAPPO needs a ScenarioVectorEnv in mode {ENV_MODE!r}, got {env.mode!r}")
    feat, n = env.feat_dim, env.n_agents
    inner = build_local_actor(ACTOR_KIND, feat, config.hidden_sizes, env.action_dim)
    actor = SlotActor(inner, feat)
    critic = ContinuousCritic(
        preprocess_net=Net(state_shape=feat * (n + 1), hidden_sizes=config.critic_hidden_sizes, activation=nn.Tanh),
    )
    algorithm = make_ppo(actor, critic, AdamOptimizerFactory(lr=config.lr), config,
                         env.single_action_space, env.single_observation_space)
    return Built(algorithm.to(config.device), inner)
