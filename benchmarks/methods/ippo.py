"""IPPO with fixed penalties: independent PPO learners trained on plain observations and
``r0 + lambda (c/N - e_grid) + nu r2`` (``baselines.grid_search.train_ippo``), then rolled out with the multipliers
held fixed (no augmentation). ``sharing="per_agent"`` (default): one learner per agent on its own building and demand
scale; ``"per_type"``: one policy per agent type shared by its agents (the labelled, cheaper option).

EV charging: the same learner (``algorithms.train`` with ``fixed_multipliers``, plain observations, the core's reward
``r0 + lambda (L_t/N - load) + nu unmet``) on one site of the agent's category over random 2023 days; ``per_agent``
trains one learner per site (its category, its own seed: an EV site has no data of its own, its cars are its
category's draws), ``per_type`` one per category. Default pair (0.25, -2) EUR/kWh, the MARL baselines' EV default
(``baselines.marl.domain.EVBaselines``); ``penalties="selected"`` is demand response's grid-search pair and refused."""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

from baselines.penalties import check_penalties
from benchmarks.methods.marl import penalty_inputs
from benchmarks.registry import MethodDef, Prepared, RunContext, register

PARAMS = ("lambda_", "nu", "total_steps", "sharing", "penalties")


def _validate(params: Mapping[str, Any]) -> None:
    for key in ("lambda_", "nu"):
        v = params.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"{key}={v!r} must be a finite number")
    from baselines.grid_search import SHARING
    check_penalties(params)

    if params.get("sharing", "per_agent") not in SHARING:
        raise ValueError(f"sharing={params.get('sharing')!r} is not allowed; choose one of {SHARING}")
    steps = params.get("total_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"total_steps={steps!r} must be an integer >= 1")


def _prepare_ev(spec, ctx: RunContext) -> Prepared:
    """IPPO on EV: one fixed-penalty PPO per site (or per site category) from ``algorithms.train``."""
    from algorithms.execute import INFERENCE_CHUNK
    from algorithms.policy import ev_policy_fn
    from algorithms.train import TrainConfig, train
    from baselines.grid_search import fixed_controller
    from baselines.marl.domain import EVBaselines
    from cmarl_env.domains import get_domain
    from cmarl_env.domains.ev_charging.core import EVChargingCore
    from cmarl_env.domains.ev_charging.data import CATEGORIES

    sc, p = spec.scenario, spec.method.params
    if p.get("penalties") == "selected":
        raise ValueError(f"method {spec.method.name!r}: penalties=\"selected\" is the IPPO grid search's pair for "
                         "demand response; EV scenarios: give lambda_ and nu (default 0.25, -2)")
    default = EVBaselines.default_penalties
    lam, nu = float(p.get("lambda_", default[0])), float(p.get("nu", default[1]))
    steps = int(p.get("total_steps", 200_000))
    sharing = p.get("sharing", "per_agent")
    core0 = EVChargingCore(sc.ev_config(augment=False))
    root = ctx.workdir / "training"

    def learn(name: str, site_type: str, seed: int):
        cfg = TrainConfig(domain="ev_charging", site_type=site_type, ports=core0.ports, fixed_multipliers=(lam, nu),
                          total_steps=steps, constraint_fraction=float(sc.constraint), seed=seed,
                          out_dir=str(root / name), num_envs=16, epochs=max(1, min(10, steps // 20_000)),
                          eval_episodes=8, init_backlog_hours=0.0, random_soc=False)
        return ev_policy_fn(train(cfg, progress=False).policy, core0, chunk_size=INFERENCE_CHUNK)

    t0 = time.perf_counter()
    if sharing == "per_type":
        policies: Any = {t: learn(f"type_{t}", t, spec.seed) for t in get_domain("ev_charging").type_keys(core0)}
    else:
        kinds = [CATEGORIES[c] for c in core0.site_category]
        policies = [learn(f"site{i}", t, spec.seed * 100_003 + i) for i, t in enumerate(kinds)]
    wall = time.perf_counter() - t0
    learners = "per site (own seed)" if sharing == "per_agent" else "per site category"
    return Prepared(controller=lambda: fixed_controller(lam, nu, policies),
                    config={"lambda": lam, "nu": nu, "train_steps_per_learner": steps, "sharing": sharing},
                    train={"train_wall_time_s": wall, "env_steps": steps * len(policies), "checkpoint": "training/",
                           "budget_detail": f"{spec.method.budget} budget: {steps:,} env steps per learner, "
                                            f"one PPO {learners}; fixed penalties ({lam:g}, {nu:g})"})


def _prepare(spec, ctx: RunContext) -> Prepared:
    import torch

    from baselines.grid_search import GridSearchConfig, fixed_controller, train_ippo

    torch.set_num_threads(1)
    if spec.scenario.is_ev:
        return _prepare_ev(spec, ctx)
    sc, p = spec.scenario, spec.method.params
    if p.get("penalties") == "selected":
        from baselines.penalties import selected_pair

        lam, nu = selected_pair(sc.constraint)
    else:
        lam, nu = float(p.get("lambda_", 6.0)), float(p.get("nu", -11.0))
    steps = int(p.get("total_steps", 200_000))
    config = GridSearchConfig(method="ippo", sharing=p.get("sharing", "per_agent"), train_steps=steps,
                              constraint=float(sc.constraint), n_agents=sc.n_agents, start_hour=spec.start_hours[0],
                              eval_steps=sc.steps, seed=sc.seed, train_seeds=(spec.seed,))
    t0 = time.perf_counter()
    policies = train_ippo(config, lam, nu, data=ctx.data(sc.dataset), out_dir=ctx.workdir / "training")
    wall = time.perf_counter() - t0
    learners = "per agent (own building)" if config.sharing == "per_agent" else "per agent type"
    return Prepared(controller=lambda: fixed_controller(lam, nu, policies),
                    config={"lambda": lam, "nu": nu, "train_steps_per_learner": steps, "sharing": config.sharing},
                    train={"train_wall_time_s": wall, "env_steps": steps * len(policies), "checkpoint": "training/",
                           "budget_detail": f"{spec.method.budget} budget: {steps:,} env steps per learner, "
                                            f"one PPO {learners}; fixed penalties ({lam:g}, {nu:g})"})


def _scenario(scenario) -> str | None:
    domain = getattr(scenario, "domain", "demand_response")
    if domain not in ("demand_response", "ev_charging"):
        return f"IPPO runs on domains 'demand_response' and 'ev_charging' (scenario domain {domain!r})"
    if domain == "demand_response" and scenario.demand_scales is not None:
        return "IPPO trains on the paper's demand layout: demand_scales must be null"
    return None


register(MethodDef(kind="ippo", label="IPPO (independent PPO)", prepare=_prepare, params=PARAMS, validate=_validate,
                   check_scenario=_scenario, budget="full", colour="tab:olive", seeded=True, trains=True,
                   inputs=penalty_inputs))
