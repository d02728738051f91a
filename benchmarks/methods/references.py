"""Reference methods that learn nothing: what a learned method must beat, and the clairvoyant bounds."""

from __future__ import annotations

import math
from typing import Any, Mapping

from benchmarks.registry import MethodDef, Prepared, RunContext, register
from cmarl_env.config import TRAIN_HOURS


def _dr_only(scenario) -> str | None:
    """Demand-response references without an EV counterpart (grid-only, the tuned price rule) refuse other domains."""
    if getattr(scenario, "domain", "demand_response") != "demand_response":
        return (f"a demand-response reference; scenario domain is {scenario.domain!r} (references on EV charging: "
                "serve_all = uncontrolled charging, rule_based = least-laxity-first under the cap, random, lp_oracle)")
    return None


def _fixed(controller_cls, ev_cls=None):
    """A fixed controller; ``ev_cls`` is the kind's EV-charging counterpart (used on EV scenarios)."""
    def prepare(spec, ctx: RunContext) -> Prepared:
        cls = ev_cls if ev_cls is not None and getattr(spec.scenario, "is_ev", False) else controller_cls
        return Prepared(controller=cls, config={"controller": cls.name})
    return prepare


def _prepare_random(spec, ctx: RunContext) -> Prepared:
    from cmarl_env.evaluation import RandomController

    if spec.scenario.is_ev:
        from cmarl_env.domains.ev_charging.references import RandomRate

        return Prepared(controller=lambda: RandomRate(spec.seed), config={"controller": "random", "seed": spec.seed})
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
    if spec.scenario.is_ev:
        from cmarl_env.domains.ev_charging.references import ClairvoyantLP

        if cap is not None:
            raise ValueError(f"backlog_cap={cap!r} is a demand-response LP setting; EV scenarios allow: null")
        return Prepared(controller=ClairvoyantLP,
                        config={"solver": "HiGHS (scipy.optimize.linprog)", "objective":
                                "min energy cost + the horizon's highest price x (unmet + pending energy) s.t. every "
                                "hour's load <= its cap, every car's power and presence (clairvoyant: every car of "
                                "the episode known in advance)"})

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

    from cmarl_env.domains.ev_charging.references import LeastLaxityFirst, Uncontrolled

    # On EV-charging scenarios the references that control nothing or follow a price-blind rule under the limit have
    # their EV counterparts (cmarl_env/domains/ev_charging/references.py): serve_all = uncontrolled charging (every
    # car at full power on arrival), rule_based = least-laxity-first under the hourly cap (centralised); the EV suite
    # labels them so. grid_only and the price rule (tuned on demand-response hours) have none.
    register(MethodDef(kind="serve_all", label="Serve-all (no control)", prepare=_fixed(ServeAll, Uncontrolled),
                       colour="tab:gray", family="reference"))
    register(MethodDef(kind="grid_only", label="Grid only", prepare=_fixed(GridOnly), colour="tab:brown",
                       family="reference", check_scenario=_dr_only))
    register(MethodDef(kind="rule_based", label="Share rule (price-blind)", prepare=_fixed(ShareRule, LeastLaxityFirst),
                       colour="tab:purple", family="reference"))
    register(MethodDef(kind="price_rule", label="Price rule (tuned on training hours)", prepare=_prepare_price_rule,
                       colour="tab:pink", family="reference", check_scenario=_dr_only))
    register(MethodDef(kind="random", label="Random", prepare=_prepare_random, colour="0.6", seeded=True,
                       family="reference"))
    register(MethodDef(kind="lp_oracle", label="Clairvoyant LP", prepare=_prepare_lp, params=("backlog_cap",),
                       validate=_validate_cap, check_scenario=_lp_scenario, colour="tab:green", reference=True,
                       family="reference"))


_register()
