"""IPPO with fixed penalties: independent PPO learners trained on plain observations and
``r0 + lambda (c/N - e_grid) + nu r2`` (``baselines.grid_search.train_ippo``), then rolled out with the multipliers
held fixed (no augmentation). ``sharing="per_agent"`` (default): one learner per agent on its own building and demand
scale; ``"per_type"``: one policy per agent type shared by its agents (the labelled, cheaper option)."""

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


def _prepare(spec, ctx: RunContext) -> Prepared:
    import torch

    from baselines.grid_search import GridSearchConfig, fixed_controller, train_ippo

    torch.set_num_threads(1)
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
    if getattr(scenario, "domain", "demand_response") != "demand_response":
        return (f"IPPO runs on domain 'demand_response' only (scenario domain {scenario.domain!r}; EV charging is "
                "not wired into the IPPO baseline yet, issue 15)")
    if scenario.demand_scales is not None:
        return "IPPO trains on the paper's demand layout: demand_scales must be null"
    return None


register(MethodDef(kind="ippo", label="IPPO (independent PPO)", prepare=_prepare, params=PARAMS, validate=_validate,
                   check_scenario=_scenario, budget="full", colour="tab:olive", seeded=True, trains=True,
                   inputs=penalty_inputs))
