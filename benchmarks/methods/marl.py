"""The MARL baselines (``baselines.marl``, Tianshou), trained then rolled out: MAPPO, MADDPG, MASAC and ISAC with
fixed penalties; MAPPO-L (``mappo_lagrangian``) and networked primal-dual (``networked_pd``) with multipliers learned
during training (frozen into the policy, not used at execution). ``networked_pd`` trains on the scenario's graph.

Both domains: demand-response scenarios train on the paper's training hours; EV-charging scenarios train on the
2023 split (the scenario's ``domain_params`` but ``split``, random start days) at the scenario's level c and are
rolled out on the scenario's 2024 weeks like every EV method (``baselines.marl.domain``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from baselines.marl_names import ALL_BASELINES, LABELS, LAGRANGIAN_BASELINES
from baselines.penalties import check_penalties, selected_inputs
from benchmarks.registry import MethodDef, Prepared, RunContext, checkpoint_params, register

# set by the scenario and the run (the graph fields: networked_pd trains on the scenario's graph)
RESERVED = ("name", "n_agents", "constraint_fraction", "seed", "dataset", "graph", "graph_params", "graph_seed",
            "domain", "domain_params")
# checkpoint: evaluate an existing checkpoint instead of training; penalties: "selected" takes (lambda_, nu) from the
# pair this repository's IPPO grid search selected at the scenario's level (baselines.penalties)
EXTRA = ("checkpoint", "penalties")


def _params() -> tuple[str, ...]:
    """The BaselineConfig fields a suite may set, read from the dataclass itself (torch-free import)."""
    import dataclasses

    try:
        from baselines.marl.common import BaselineConfig
    except ImportError:  # without the [learn] extra the kinds stay known, their runs fail with the reason
        return EXTRA
    return tuple(f.name for f in dataclasses.fields(BaselineConfig) if f.name not in RESERVED) + EXTRA


def _validate(params: Mapping[str, Any]) -> None:
    for key in params:
        if key in RESERVED:
            raise ValueError(f"{key} is set by the scenario and the run, not by the method")
    ckpt = params.get("checkpoint")
    if ckpt is not None and not isinstance(ckpt, str):
        raise ValueError("checkpoint must be a checkpoint path (string)")
    check_penalties(params)


def penalty_inputs(params: Mapping[str, Any]) -> list[Path]:
    """Files a run reads: its checkpoint, and the selected pairs when ``penalties`` is ``"selected"``."""
    return checkpoint_params(params) + selected_inputs(params)


def _scenario(scenario) -> str | None:
    domain = getattr(scenario, "domain", "demand_response")
    if domain not in ("demand_response", "ev_charging"):
        return f"the MARL baselines run on domains 'demand_response' and 'ev_charging' (scenario domain {domain!r})"
    if domain == "demand_response" and scenario.demand_scales is not None:
        return "the MARL baselines train on the paper's demand layout: scenario key demand_scales must be null"
    return None


def _prepare(spec, ctx: RunContext) -> Prepared:
    import torch

    from baselines.marl import BaselineConfig, load_policy, train_baseline
    from baselines.marl.common import MARLController

    torch.set_num_threads(1)
    sc = spec.scenario
    ev = sc.is_ev
    data = None if ev else ctx.data(sc.dataset)
    params = dict(spec.method.params)
    checkpoint = params.pop("checkpoint", None)
    if params.pop("penalties", None) == "selected":
        from baselines.penalties import selected_pair

        if ev:
            raise ValueError(f"method {spec.method.name!r}: penalties=\"selected\" is the IPPO grid search's pair for "
                             "demand response; EV scenarios: give lambda_ and nu")
        if spec.method.kind in LAGRANGIAN_BASELINES:
            raise ValueError(f"{spec.method.kind} learns its multipliers: penalties=\"selected\" applies to the "
                             "fixed-penalty baselines only")
        params["lambda_"], params["nu"] = selected_pair(sc.constraint)
    for key in ("hidden_sizes", "critic_hidden_sizes", "train_window"):
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    if checkpoint:
        policy = load_policy(checkpoint)
        if policy.domain != sc.domain:
            raise ValueError(f"method {spec.method.name!r}: checkpoint {checkpoint} was trained on domain "
                             f"{policy.domain!r}, scenario {sc.name!r} is {sc.domain!r}")
        meta = policy.metadata
        train = {"train_wall_time_s": meta.get("train_loop_time_s", math.nan), "checkpoint": str(checkpoint),
                 "env_steps": meta.get("env_steps")}
        config = {"checkpoint": str(checkpoint), "baseline_config": meta.get("config")}
    else:
        if spec.method.kind in LAGRANGIAN_BASELINES:
            params |= dict(graph=sc.graph, graph_params=dict(sc.graph_params), graph_seed=sc.seed)
        if ev:  # the scenario's EV fields, trained on the 2023 split (the scenario's own split is the evaluation's)
            params |= dict(domain="ev_charging",
                           domain_params={k: v for k, v in sc.domain_params.items() if k != "split"})
        else:
            params["dataset"] = sc.dataset
        bconf = BaselineConfig(name=spec.method.kind, n_agents=sc.n_agents, constraint_fraction=sc.constraint,
                               seed=spec.seed, **params)
        summary = train_baseline(bconf, ctx.workdir / "training", data=data)
        policy = load_policy(summary["checkpoint"])
        train = {"train_wall_time_s": summary["wall_time_s"], "env_steps": summary["env_steps"],
                 "iterations": summary["iterations"], "eval_return_initial": summary["eval_return_initial"],
                 "eval_return_final": summary["eval_return_final"], "checkpoint": "training/policy.pt"}
        if "multipliers_final" in summary:
            train["multipliers_final"] = summary["multipliers_final"]
        config = {"baseline_config": bconf.to_dict()}
    cfg = config.get("baseline_config") or {}
    pair = (cfg.get("lambda_"), cfg.get("nu"))
    steps = train.get("env_steps")
    learned = policy.metadata.get("multipliers_final")
    if learned is not None:
        penalties = (f"; multipliers learned from ({pair[0]:g}, {pair[1]:g}) to lambda {learned['lambda_mean']:.2f}, "
                     f"mu {learned['mu_mean']:.2f} (means), not used at execution")
    else:
        penalties = f"; fixed penalties ({pair[0]:g}, {pair[1]:g})" if None not in pair else ""
    train["budget_detail"] = (f"{spec.method.budget} budget" + (f": {int(steps):,} env steps" if steps else "")
                              + penalties)
    return Prepared(controller=lambda: MARLController(policy), config=config, train=train)


_COLOURS = {"mappo": "tab:orange", "maddpg": "tab:olive", "masac": "tab:cyan", "isac": "k",
            "mappo_lagrangian": "goldenrod", "networked_pd": "teal"}
for _kind in ALL_BASELINES:
    register(MethodDef(kind=_kind, label=LABELS[_kind], prepare=_prepare, params=_params(), validate=_validate,
                       check_scenario=_scenario, budget="full", colour=_COLOURS.get(_kind, "tab:gray"), seeded=True,
                       trains=True, inputs=penalty_inputs))
