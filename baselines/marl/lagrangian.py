"""Learned multipliers for the MARL baselines: Lagrangian PPO on Tianshou (MAPPO-L and networked primal-dual).

The constrained problem (paper section 2, ``docs/model.md``), per hour and agent i::

    maximise   E[sum_t gamma^t r0_i]                       (objective: r0 = -price * e_grid)
    subject to mean(e_grid) <= c/N                         (grid: the coupled, global constraint)
               mean(r2_i)   <= demand_slack                (demand: agent i's backlog growth r2 = B' - B)

``demand_slack`` defaults to the feasibility rule's backlog-slope limit (0.005 kWh/step/agent,
``cmarl_env.evaluation.feasibility``), so the demand constraint a baseline learns is the one it is judged by.
The Lagrangian reward of agent i is ``r0_i - lambda (e_grid_i - c/N) - mu_i r2_i``, i.e. the paper's
``r0 + lambda (c/N - e_grid) + nu r2`` with ``nu_i = -mu_i`` (``mu_i >= 0``, since only backlog *growth* is a
violation).

What is shared by both learned-multiplier baselines (:class:`LagrangianPPO`)
----------------------------------------------------------------------------
* **Separate reward and cost critics** (``MultiCritic``: three independent MLPs on the same critic input,
  stacked as the columns (reward, grid, demand)), as in the MAPPO-L of Gu et al. (Safe MAMuJoCo) and SafePO,
  where the reward critic and the cost critic are separate networks. Each is fitted to its own GAE(lambda)
  return (Tianshou's ``compute_episodic_return``, per column) with its own squared error (the value loss is the
  sum of the three); the column signals, all divided by ``reward_scale``, are ``r0_i``, the grid cost (demand
  response: ``e_grid_i - c/N``; the domain's ``grid_cost``, see below) and ``r2_i``, read from the slot infos of
  ``ScenarioVectorEnv`` (the env reward of these baselines is ``r0``).
* **Combined advantage** ``A_i = A^r_i - lambda_i A^grid_i - mu_i A^dem_i`` for agent i's PPO ratio (clip 0.2),
  normalised per minibatch as in the MAPPO baseline. SafePO divides ``A^r - lambda A^c`` by ``1 + lambda``; with
  per-minibatch normalisation that factor cancels, so it is omitted.
* **Dual ascent after each collect, on the measured violation**: before the PPO epochs of an update, on the
  whole just-collected batch (``num_envs * rollout_steps`` hours), ``lambda <- clip(lambda + dual_lr_grid *
  mean(grid cost - grid limit), 0, lambda_max)`` (demand response: ``mean e_grid - c/N``) and
  ``mu_i <- clip(mu_i + dual_lr_demand * (mean r2_i - demand_slack), 0, mu_max)``; the policy update of that
  iteration uses the updated multipliers (SafePO's order: multiplier first, then the policy). The references
  (SafePO's ``Lagrange`` class) take a gradient step on the mean episode cost minus the cost limit with Adam or
  SGD; here plain projected (sub)gradient ascent on the batch mean per hour, so the step is in the constraints'
  own units (kWh per agent-hour) and the box is the paper's (``lambda in [0, 15]``, ``|nu| <= 20``).
* **The executed policy carries no multipliers.** The actor sees only the agent's local features (as every
  baseline's), so the learned ``lambda``/``mu`` shape the policy during training and are then frozen into its
  weights; a new constraint level or population needs retraining. This is the contrast with state
  augmentation, whose policy takes the multipliers as inputs and whose executor keeps adapting them.
  The multipliers are kept in the checkpoint (algorithm state) and their trajectory in ``metrics.json``.

Measured behaviour worth knowing: with the reward split over separate critics the policy learns to cut grid
use more slowly than the fixed-penalty MAPPO at the same multipliers (3 agents, c = 0.05, (lambda, mu) held at
(15, 0), 4,800 env steps: training grid use 4.22 -> 3.79 kWh/h over the two epochs, MAPPO's 4.14 -> 1.88). A
fitted grid critic values the backlog a postponement leaves behind (it is served from the grid later), so the
per-hour advantage of not buying is only the discounting of that later cost; MAPPO's single critic lags its
large combined return early on, and its advantages are closer to truncated Monte-Carlo returns, in which demand
pushed past the end of a training episode is free. The primal-dual loop still learns (``tests/test_constrained_baselines.py``).

Other domains (``baselines.marl.domain``): the slot infos carry the domain's signals through the seam; the grid
column and its limit are the per-step form of the global constraint the domain JUDGES
(``BaselineDomain.grid_cost``), and ``r2`` is the domain's dual local signal (EV: unmet energy minus
``unmet_allowance`` x the energy the departing cars requested; ``demand_slack`` defaults to 0 there). On EV with a
cap per hour (``limit`` "peak"/"hourly") the judged rule is the average hourly overload, so the grid cost of every
site is the hour's overload ``max(0, sum_i load_i - L_t) / N`` and its limit ``GRID_TOLERANCE x L_t / N``; with
``"average"`` it is the site load minus the share ``L_t / N`` with limit 0, as for demand response. Measured on
EV (``cmarl bench ev``, 10 sites, 4,608 env steps): the earlier mean excess over the share was about -1.8 kWh per
site-hour (-2.1 with the hourly profile; quiet hours cancel peak hours), so lambda stayed at 0; on the overload
lambda rises at every dual step, to 1.1-1.3 (MAPPO-L 1.12 peak / 1.27 hourly, networked PD 1.25 / 1.32), but
at that budget the policies barely change (overload 0.016-0.019 x the cap, unmet 7-8 %: still infeasible).

The two variants differ in the critic input, the multipliers and the advantage (``mappo_lagrangian.py``,
``networked_pd.py``). Multipliers are registered buffers of the Tianshou algorithm, so they are saved with and
restored by ``algorithm.state_dict()``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from tianshou.algorithm import PPO
from tianshou.algorithm.modelfree.a2c import A2CTrainingStats
from tianshou.data import SequenceSummaryStats, to_torch_as
from tianshou.utils.net.common import Net

HEADS = ("reward", "grid", "demand")


class MultiCritic(nn.Module):
    """Independent value networks on one input, one per signal of ``HEADS``: output (B, 3)."""

    def __init__(self, input_dim: int, hidden_sizes: Sequence[int]):
        super().__init__()
        self.nets = nn.ModuleList(
            Net(state_shape=input_dim, action_shape=1, hidden_sizes=hidden_sizes, activation=nn.Tanh)
            for _ in HEADS
        )

    def forward(self, obs, state=None, info=None) -> torch.Tensor:
        x = torch.as_tensor(obs, dtype=torch.float32, device=next(self.parameters()).device)
        return torch.cat([net(x)[0] for net in self.nets], dim=1)


class LagrangianPPO(PPO):
    """Tianshou PPO with reward and cost critics and multipliers learned by dual ascent (see the module docstring).

    ``grid_multipliers``: 1 (one global lambda, MAPPO-L) or N (one per agent, networked PD);
    ``consensus``: None, or the (N, N) row-stochastic matrix the per-agent lambdas are averaged with
    (``consensus_rounds`` times) before each local ascent step. Agent i's policy advantage is its own
    ``A^r_i - lambda A^grid_i - mu_i A^dem_i`` (lambda: the global one or lambda_i).
    """

    def __init__(self, *, n_agents: int, reward_scale: float, lambda_init: float, mu_init: float,
                 lr_grid: float, lr_demand: float, lambda_max: float, mu_max: float, demand_slack: float,
                 grid_multipliers: int = 1, consensus: Any = None, consensus_rounds: int = 1, **ppo_kwargs: Any):
        super().__init__(**ppo_kwargs)
        if grid_multipliers not in (1, n_agents):
            raise ValueError(f"grid_multipliers={grid_multipliers} must be 1 (global) or n_agents={n_agents}")
        self.n_agents = int(n_agents)
        self.reward_scale = float(reward_scale)
        self.lr_grid, self.lr_demand = float(lr_grid), float(lr_demand)
        self.lambda_max, self.mu_max = float(lambda_max), float(mu_max)
        self.demand_slack = float(demand_slack)
        if consensus is not None and not sp.issparse(consensus):
            consensus = np.asarray(consensus, dtype=np.float64)
        self.consensus = consensus
        self.consensus_rounds = int(consensus_rounds)
        self.register_buffer("grid_multiplier", torch.full((grid_multipliers,), float(lambda_init), dtype=torch.float64))
        self.register_buffer("demand_multiplier", torch.full((n_agents,), float(mu_init), dtype=torch.float64))
        self.register_buffer("dual_updates", torch.zeros((), dtype=torch.int64))
        self.dual_history: list[dict[str, Any]] = []

    # ------------------------------------------------------------ multipliers
    def multipliers(self) -> dict[str, Any]:
        lam = self.grid_multiplier.cpu().numpy()
        mu = self.demand_multiplier.cpu().numpy()
        return {"lambda": lam.tolist(), "mu": mu.tolist(), "lambda_mean": float(lam.mean()),
                "mu_mean": float(mu.mean()), "dual_updates": int(self.dual_updates)}

    def dual_step(self, grid: np.ndarray, r2: np.ndarray, agent: np.ndarray,
                  grid_limit: np.ndarray | None = None) -> dict[str, Any]:
        """One projected dual-ascent step on a batch's raw signals (grid cost, ``r2``, agent index), on the
        excess ``grid - grid_limit`` (``BaselineDomain.grid_cost``; no limit: ``grid`` is the excess already)."""
        n = self.n_agents
        if grid_limit is not None:
            grid = grid - grid_limit
        count = np.maximum(np.bincount(agent, minlength=n), 1)
        grid_i = np.bincount(agent, weights=grid, minlength=n) / count       # mean excess grid use per agent
        demand_i = np.bincount(agent, weights=r2, minlength=n) / count - self.demand_slack
        lam = self.grid_multiplier.cpu().numpy().copy()
        if lam.shape[0] == 1:   # one global multiplier on the mean over all agents and hours
            lam = lam + self.lr_grid * float(grid.mean())
        else:                   # local multipliers: neighbour averaging, then each agent's own ascent step
            if self.consensus is not None:
                for _ in range(self.consensus_rounds):
                    lam = self.consensus @ lam
            lam = lam + self.lr_grid * grid_i
        lam = np.clip(lam, 0.0, self.lambda_max)
        mu = np.clip(self.demand_multiplier.cpu().numpy() + self.lr_demand * demand_i, 0.0, self.mu_max)
        self.grid_multiplier.copy_(torch.as_tensor(lam))
        self.demand_multiplier.copy_(torch.as_tensor(mu))
        self.dual_updates += 1
        record = {"update": int(self.dual_updates), "grid_excess": float(grid.mean()),
                  "demand_excess": float(demand_i.mean()), "lambda_mean": float(lam.mean()),
                  "lambda_min": float(lam.min()), "lambda_max": float(lam.max()), "mu_mean": float(mu.mean()),
                  "mu_min": float(mu.min()), "mu_max": float(mu.max())}
        self.dual_history.append(record)
        return record

    # --------------------------------------------------------------- update
    def _signals(self, batch) -> tuple[np.ndarray, ...]:
        info = batch.info
        try:
            cols = [np.asarray(info[k], dtype=np.float64) for k in ("r0", "grid", "grid_limit", "r2")]
            agent = np.asarray(info["agent"], dtype=np.int64)
        except (KeyError, AttributeError, TypeError) as err:
            raise RuntimeError("LagrangianPPO needs the constraint-signal infos of ScenarioVectorEnv "
                               "(a learned-multiplier BaselineConfig)") from err
        return (*cols, agent)

    def _preprocess_batch(self, batch, buffer, indices):
        r0, grid, grid_limit, r2, agent = self._signals(batch)
        self.dual_step(grid, r2, agent, grid_limit)
        with torch.no_grad():
            v_s = torch.cat([self.critic(mb.obs) for mb in batch.split(self.max_batchsize, shuffle=False,
                                                                        merge_last=True)])
            v_next = torch.cat([self.critic(mb.obs_next) for mb in batch.split(self.max_batchsize, shuffle=False,
                                                                               merge_last=True)])
        v_s_np, v_next_np = v_s.cpu().numpy(), v_next.cpu().numpy()
        rew = batch.rew
        returns, advs = [], []
        try:
            for k, signal in enumerate((r0, grid, r2)):
                batch.rew = signal / self.reward_scale
                ret, adv = self.compute_episodic_return(batch, buffer, indices, v_next_np[:, k], v_s_np[:, k],
                                                        gamma=self.gamma, gae_lambda=self.gae_lambda)
                returns.append(ret)
                advs.append(adv)
        finally:
            batch.rew = rew
        lam = self.grid_multiplier.cpu().numpy()
        lam = lam[agent] if lam.shape[0] > 1 else lam[0]
        mu = self.demand_multiplier.cpu().numpy()[agent]
        adv = advs[0] - lam * advs[1] - mu * advs[2]
        batch.v_s = v_s
        batch.returns = to_torch_as(np.stack(returns, axis=1), v_s)
        batch.adv = to_torch_as(adv, v_s)
        batch.act = to_torch_as(batch.act, v_s)
        with torch.no_grad():
            batch.logp_old = torch.cat([self.policy(mb).dist.log_prob(mb.act) for mb in
                                        batch.split(self.max_batchsize, shuffle=False, merge_last=True)]).flatten()
        return batch

    def _update_with_batch(self, batch, batch_size: int | None, repeat: int) -> A2CTrainingStats:  # type: ignore[override]
        """Tianshou PPO's clipped update with the three-column value loss (sum of the critics' squared errors)."""
        losses, clip_losses, vf_losses, ent_losses = [], [], [], []
        gradient_steps = 0
        for _ in range(repeat):
            for minibatch in batch.split(batch_size or -1, merge_last=True):
                gradient_steps += 1
                advantages = minibatch.adv
                dist = self.policy(minibatch).dist
                if self.advantage_normalization:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + self._eps)
                ratios = (dist.log_prob(minibatch.act) - minibatch.logp_old).exp().float()
                ratios = ratios.reshape(ratios.size(0), -1).transpose(0, 1)
                surr1 = ratios * advantages
                surr2 = ratios.clamp(1.0 - self.eps_clip, 1.0 + self.eps_clip) * advantages
                clip_loss = -torch.min(surr1, surr2).mean()
                value = self.critic(minibatch.obs)
                vf_loss = (minibatch.returns - value).pow(2).mean(dim=0).sum()
                ent_loss = dist.entropy().mean()
                loss = clip_loss + self.vf_coef * vf_loss - self.ent_coef * ent_loss
                self.optim.step(loss)
                clip_losses.append(clip_loss.item())
                vf_losses.append(vf_loss.item())
                ent_losses.append(ent_loss.item())
                losses.append(loss.item())
        return A2CTrainingStats(
            loss=SequenceSummaryStats.from_sequence(losses),
            actor_loss=SequenceSummaryStats.from_sequence(clip_losses),
            vf_loss=SequenceSummaryStats.from_sequence(vf_losses),
            ent_loss=SequenceSummaryStats.from_sequence(ent_losses),
            gradient_steps=gradient_steps,
        )


def make_lagrangian_ppo(actor, critic, optim, config, action_space, observation_space, **kwargs: Any) -> LagrangianPPO:
    """``LagrangianPPO`` with the same policy and PPO settings as ``algorithms.train.make_ppo`` (MAPPO's)."""
    from algorithms.train import gaussian_dist
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy

    policy = ProbabilisticActorPolicy(
        actor=actor, dist_fn=gaussian_dist, action_space=action_space, observation_space=observation_space,
        deterministic_eval=True, action_scaling=True, action_bound_method="clip",
    )
    return LagrangianPPO(
        policy=policy, critic=critic, optim=optim, eps_clip=config.clip_eps, vf_coef=config.vf_coef,
        ent_coef=config.ent_coef, max_grad_norm=config.max_grad_norm, gae_lambda=config.gae_lambda,
        gamma=config.gamma, max_batchsize=max(config.batch_size, 4096), advantage_normalization=True,
        return_scaling=False, n_agents=config.n_agents, reward_scale=config.reward_scale,
        lambda_init=config.lambda_, mu_init=-config.nu, lr_grid=config.dual_lr_grid,
        lr_demand=config.dual_lr_demand, lambda_max=config.lambda_max, mu_max=config.mu_max,
        demand_slack=config.demand_slack, **kwargs,
    )


__all__ = ["HEADS", "LagrangianPPO", "MultiCritic", "make_lagrangian_ppo"]
