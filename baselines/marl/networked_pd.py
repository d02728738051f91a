"""Networked primal-dual baseline: local critics on each agent's graph neighbourhood, local multipliers averaged
with the neighbours during training, decentralised multiplier-free execution (Tianshou 2.0 PPO).

In the spirit of Scalable MAPPO-Lagrangian (Zhang et al., NeurIPS 2024) and the scalable primal-dual
actor-critic of Ying et al. (NeurIPS 2023): no centralised critic, no global multiplier. The Lagrangian
machinery is :class:`baselines.marl.lagrangian.LagrangianPPO`; this module wires it up:

* **Graph:** the scenario's communication graph (``config.graph``, ``graph_params``, ``graph_seed`` through
  ``cmarl_env.graphs``, the graph dual consensus uses).
* **Local critics:** agent i's three value networks (reward, grid cost, backlog growth) see only its closed
  neighbourhood ``[own features, each neighbour's features, zero padding up to the largest degree]``
  (``ScenarioVectorEnv`` mode ``"local_neighbourhood"``; the input width is ``(max degree + 1) x features``, so it
  does not grow with N on bounded-degree graphs, unlike MAPPO's O(N) global state). The critic weights are
  shared by all agents (as the actor's are): a simplification, equivalent to every agent fitting its own copy
  on the pooled data; what each critic *sees* is local.
* **Local multipliers with neighbour averaging:** every agent keeps its own ``lambda_i`` for its share of the
  coupled grid constraint (``mean e_grid_i <= c/N``) and ``mu_i`` for its demand constraint. After each collect,
  ``lambda <- W^L lambda`` (``consensus_rounds`` = L rounds with the ``consensus_weights`` matrix of the graph,
  Metropolis-Hastings by default: doubly stochastic, so the average of the lambdas - the multiplier of the
  true, summed constraint - is what the averaging preserves), then each agent's own projected ascent step on
  its measured excess ``mean e_grid_i - c/N``: a distributed dual subgradient method (consensus + local step).
  ``mu_i`` needs no exchange (local constraint).
* **Grid cost per domain** (``BaselineDomain.grid_cost``): on EV with a cap per hour the judged constraint is
  the average hourly overload of the SUM of the loads, so agent i's cost is the hour's overload / N and its
  limit 1 % of ``L_t / N``. That cost needs the hour's aggregate load, which a local agent does not observe: the
  training env steps all N sites together and hands every slot the overload (centralised training,
  decentralised execution - the executed actor still reads only local features). The per-agent excesses are
  then equal, so the local lambdas stay in agreement; the local critics fit a global quantity from a
  neighbourhood view, a noisier target than demand response's own excess.
* **Advantage:** agent i's own ``A^r_i - lambda_i A^grid_i - mu_i A^dem_i``. The truncated-Q policy gradient of
  the networked-MARL references averages the local values of the kappa-hop neighbourhood because a neighbour's
  action changes agent i's transitions; here agents' rewards and transitions are independent given the
  multipliers (they couple only through the grid constraint, which the multipliers carry), so the
  neighbours' terms would add variance and no signal, and kappa = 0 is used.
* **Execution:** the shared actor on the agent's local features only, no multipliers, no communication.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from baselines.marl.common import BaselineConfig, ScenarioVectorEnv, SlotActor, build_local_actor, scenario_adjacency
from baselines.marl.lagrangian import LagrangianPPO, MultiCritic, make_lagrangian_ppo

from tianshou.algorithm.optim import AdamOptimizerFactory

ENV_MODE = "local_neighbourhood"
ACTOR_KIND = "gaussian_clip"


@dataclass
class Built:
    algorithm: LagrangianPPO
    local_actor: nn.Module
    actor_kind: str = ACTOR_KIND


def consensus_weights(config: BaselineConfig):
    """The sparse (N, N) consensus matrix of the scenario graph (``config.consensus_weights``)."""
    from cmarl_env import graphs

    return graphs.consensus_matrix(scenario_adjacency(config), config.n_agents, weights=config.consensus_weights)


def build(config: BaselineConfig, env: ScenarioVectorEnv) -> Built:
    """LagrangianPPO with a shared local actor, neighbourhood critics and per-agent multipliers with consensus."""
    if env.mode != ENV_MODE or not env.signals:
        raise ValueError(f"networked PD needs a ScenarioVectorEnv in mode {ENV_MODE!r} with constraint signals "
                         f"(a networked_pd config), got mode {env.mode!r}")
    feat, n = env.feat_dim, env.n_agents
    inner = build_local_actor(ACTOR_KIND, feat, config.hidden_sizes, env.action_dim)
    critic = MultiCritic(env.single_observation_space.shape[0], config.critic_hidden_sizes)
    algorithm = make_lagrangian_ppo(
        SlotActor(inner, feat), critic, AdamOptimizerFactory(lr=config.lr), config, env.single_action_space,
        env.single_observation_space, grid_multipliers=n, consensus=consensus_weights(config),
        consensus_rounds=config.consensus_rounds,
    )
    return Built(algorithm.to(config.device), inner)
