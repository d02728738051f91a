"""Reference methods that learn nothing: what a learned method must beat, and the clairvoyant bounds."""

from __future__ import annotations

import math
from typing import Any, Mapping

from benchmarks.registry import MethodDef, Prepared, RunContext, register
from cmarl_env.config import TRAIN_HOURS


def _fixed(controller_cls):
    def prepare(spec, ctx: RunContext) -> Prepared:
        return Prepared(controller=controller_cls, config={"controller": controller_cls.name})
    return prepare


def _prepare_random(spec, ctx: RunContext) -> Prepared:
    from cmarl_env.evaluation import RandomController

    return Prepared(controller=lambda: RandomController(spec.seed), config={"controller": "random", "seed": spec.seed})


def _prepare_price_rule(spec, ctx: RunContext) -> Prepared:
    """Tune the price rule on the training hours of this scenario (cached per scenario), then use it everywhere."""
    import json

    from baselines.rule_based import PriceRule, PriceRuleParams, tune_price_rule
    from cmarl_env.core import DemandResponseCore
    from cmarl_env.records import atomic_write_text, dump_json

    sc = spec.scenario
    data = ctx.data(sc.dataset)
    lo, hi = TRAIN_HOURS
    hi = min(hi, data.n_steps)
    cache = None if ctx.cache_dir is None else ctx.cache_dir / "price_rule" / f"{sc.cache_key()}.json"
    if cache is not None and cache.is_file():
        record = json.loads(cache.read_text())
    else:
        best, table = tune_price_rule(lambda: DemandResponseCore(sc.env_config(lo, data.n_steps, steps=hi - lo), data),
                                      hi - lo, lo)
        record = {"tuned_on_hours": [lo, hi], "params": best.to_dict(), "candidates": table}
        if cache is not None:
            atomic_write_text(cache, dump_json(record))
    params = PriceRuleParams.from_dict(record["params"])
    return Prepared(controller=lambda: PriceRule(params),
                    config={"controller": "price_rule", "params": record["params"],
                            "tuned_on_hours": record["tuned_on_hours"]},
                    facts={"price_rule_tuning": record})


def _validate_cap(params: Mapping[str, Any]) -> None:
    cap = params.get("backlog_cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not math.isfinite(cap)
                            or cap < 0):
        raise ValueError(f"backlog_cap={cap!r} must be a number >= 0 (kWh per agent) or null")


def _prepare_lp(spec, ctx: RunContext) -> Prepared:
    import numpy as np

    from baselines.oracle import lp_rollout
    from cmarl_env.evaluation import Rollout

    cap = spec.method.params.get("backlog_cap")

    def run(core, start_hour: int, steps: int):
        ro, res = lp_rollout(core, steps, start_hour, backlog_cap=cap)
        if ro is None:  # below the frontier: no schedule exists, which the table shows as an infeasible bound
            nan = np.full(steps, np.nan)
            ro = Rollout(controller="lp", start_hour=int(start_hour), n_agents=core.n_agents,
                         grid_limit=float(core.grid_limit), peak_demand=float(core.peak_demand), total_grid=nan,
                         total_demand=nan, total_backlog=nan, energy_cost=nan, prices=nan, max_agent_backlog=np.nan,
                         wall_time_s=res.solve_seconds, info={"lp_status": res.status, "lp_message": res.message})
        return ro

    return Prepared(rollout=run, config={"solver": "HiGHS (scipy.optimize.linprog)", "backlog_cap": cap,
                                         "objective": "min total cost s.t. mean_t sum_i e_grid <= limit, all demand "
                                                      "served by the end of the horizon"})


def _lp_scenario(scenario) -> str | None:
    if scenario.n_agents > 5000:
        return f"the LP is limited to n_agents <= 5000 (scenario has {scenario.n_agents})"
    return None


def _register() -> None:
    from baselines.rule_based import ShareRule
    from cmarl_env.evaluation import GridOnly, ServeAll

    register(MethodDef(kind="serve_all", label="Serve-all (no control)", prepare=_fixed(ServeAll),
                       colour="tab:gray", family="reference"))
    register(MethodDef(kind="grid_only", label="Grid only", prepare=_fixed(GridOnly), colour="tab:brown",
                       family="reference"))
    register(MethodDef(kind="rule_based", label="Share rule (price-blind)", prepare=_fixed(ShareRule),
                       colour="tab:purple", family="reference"))
    register(MethodDef(kind="price_rule", label="Price rule (tuned on training hours)", prepare=_prepare_price_rule,
                       colour="tab:pink", family="reference"))
    register(MethodDef(kind="random", label="Random", prepare=_prepare_random, colour="0.6", seeded=True,
                       family="reference"))
    register(MethodDef(kind="lp_oracle", label="Clairvoyant LP", prepare=_prepare_lp, params=("backlog_cap",),
                       validate=_validate_cap, check_scenario=_lp_scenario, colour="tab:green", reference=True,
                       family="reference"))


_register()
