"""The paper's method: state-augmented policies + Algorithm 1 (``algorithms.execute.DualConsensusController``)."""

from __future__ import annotations

import importlib.resources
import math
from pathlib import Path
from typing import Any, Mapping

from benchmarks.registry import MethodDef, Prepared, RunContext, checkpoint_params, register

POLICY_PARAM = "policies"  # {demand scale: checkpoint path} instead of the shipped policies


def _dual_params() -> tuple[str, ...]:
    import dataclasses

    from algorithms.dual import DualConfig

    return tuple(f.name for f in dataclasses.fields(DualConfig)) + (POLICY_PARAM,)


def _validate(params: Mapping[str, Any], *, rounds_zero: bool = False) -> None:
    from algorithms.dual import DualConfig

    values = {k: v for k, v in params.items() if k != POLICY_PARAM}
    if rounds_zero and values.get("rounds", 0) != 0:
        raise ValueError(f"rounds={values['rounds']!r} contradicts kind 'no_consensus' (rounds = 0); "
                         "use kind 'consensus'")
    DualConfig(**values)
    paths = params.get(POLICY_PARAM)
    if paths is not None:
        if not isinstance(paths, Mapping) or not paths:
            raise ValueError(f"{POLICY_PARAM} must map demand scales (e.g. \"2.0\") to checkpoint paths")
        for s, path in paths.items():
            try:
                scale = float(s)
            except (TypeError, ValueError):
                scale = math.nan
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"{POLICY_PARAM}.{s} is not a demand scale (a number > 0 such as \"2.0\")")
            if not isinstance(path, str) or not path:
                raise ValueError(f"{POLICY_PARAM}.{s} must be a checkpoint path (non-empty string)")


def _prepare_ev(spec, ctx: RunContext, *, rounds: int | None) -> Prepared:
    """EV charging: the shipped EV policies (one per site category, ``algorithms/pretrained/ev``) under Algorithm 1
    with the EV domain's dual defaults (``EVChargingDomain.dual_defaults``) and the suite's params on top."""
    from algorithms.dual import DualConfig
    from algorithms.execute import INFERENCE_CHUNK
    from algorithms.policy import shipped_ev_policies
    from cmarl_env.domains import get_domain
    from cmarl_env.domains.ev_charging.core import EVChargingCore

    _one_thread()
    sc = spec.scenario
    params = dict(spec.method.params)
    if params.pop(POLICY_PARAM, None):
        raise ValueError(f"method {spec.method.name!r}: {POLICY_PARAM} (checkpoints by demand scale) is for "
                         "demand-response scenarios; EV scenarios use the shipped EV policies (allowed: none)")
    if rounds is not None:
        params["rounds"] = rounds
    domain = get_domain("ev_charging")
    dual = DualConfig(**(dict(domain.dual_defaults) | params))
    core0 = EVChargingCore(sc.ev_config(augment=True))
    loaded, policies, source = shipped_ev_policies(core0, chunk_size=INFERENCE_CHUNK)
    return _prepared(spec, dual, policies, loaded, source, "shipped pretrained EV policies")


def _prepare(spec, ctx: RunContext, *, rounds: int | None) -> Prepared:
    if spec.scenario.is_ev:
        return _prepare_ev(spec, ctx, rounds=rounds)
    from algorithms.dual import DualConfig
    from algorithms.execute import INFERENCE_CHUNK
    from algorithms.policy import load_policies_by_scale, load_pretrained
    from cmarl_env.core import DemandResponseCore

    _one_thread()
    sc = spec.scenario
    data = ctx.data(sc.dataset)
    params = dict(spec.method.params)
    paths = params.pop(POLICY_PARAM, None)
    if rounds is not None:
        params["rounds"] = rounds
    dual = DualConfig(**params)
    core0 = DemandResponseCore(sc.env_config(spec.start_hours[0], data.n_steps, augment=True), data)
    scales = core0.type_scales.tolist()
    if paths:
        # each checkpoint: trained for the demand scale it is assigned to (a scale no agent of the scenario has is
        # an error), this observation layout, these multiplier ranges and this dataset (CheckpointMismatchError)
        loaded = load_policies_by_scale(paths, expected=core0)
        missing = [s for s in scales if s not in loaded]
        if missing:
            raise ValueError(f"method {spec.method.name!r}: {POLICY_PARAM} has no checkpoint for demand scale(s) "
                             f"{missing} of scenario {sc.name!r}")
        source: Any = {str(s): str(p) for s, p in paths.items()}
    else:
        loaded = {s: load_pretrained(s, expected=core0) for s in scales}
        source = "shipped pretrained policies (algorithms/pretrained)"
    policies = {s: (lambda obs, p=p: p.act(obs, chunk_size=INFERENCE_CHUNK)) for s, p in loaded.items()}
    return _prepared(spec, dual, policies, loaded, source,
                     "shipped pretrained policies" if not paths else "custom policies")


def _prepared(spec, dual, policies, loaded, source, detail: str) -> Prepared:
    """Algorithm 1 with these policies: a fresh controller per roll-out (the first records the multipliers and
    the theory), the training time the checkpoints recorded."""
    from algorithms.execute import DualConsensusController

    train_time = sum(float(p.metadata.get("train_wall_time_s", math.nan)) for p in loaded.values())
    record = min(spec.scenario.record_agents, spec.scenario.n_agents)
    made = []

    def controller() -> DualConsensusController:
        made.append(1)
        return DualConsensusController(dual, policies, record_agents=record if len(made) == 1 else 0,
                                       name=spec.method.kind, theory=len(made) == 1)

    return Prepared(controller=controller, config={"dual": dual.to_dict(), "policies": source},
                    train={"train_wall_time_s": train_time, "policies": source, "budget_detail": detail})


def _inputs(params) -> list[Path]:
    """The checkpoints a run reads: the suite's ``policies`` or every shipped one (torch-free)."""
    if params.get(POLICY_PARAM):
        return checkpoint_params(params)
    root = importlib.resources.files("algorithms") / "pretrained"
    return sorted(Path(str(root / f.name)) for f in root.iterdir() if f.name.endswith(".pt"))


def _defaults() -> dict[str, Any]:
    """Algorithm 1's code defaults in both domains (``DualConfig`` and the EV domain's overrides): a run that
    leaves the step sizes to the defaults is re-run when they change."""
    from algorithms.dual import DualConfig
    from cmarl_env.domains import get_domain

    return {"dual": DualConfig().to_dict(), "ev_charging": dict(get_domain("ev_charging").dual_defaults)}


def _one_thread() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - the dual kinds need torch anyway
        pass


register(MethodDef(
    kind="consensus", label="Dual consensus (ours)", family="ours", budget="pretrained", colour="tab:blue",
    prepare=lambda spec, ctx: _prepare(spec, ctx, rounds=None), params=_dual_params(), validate=_validate,
    inputs=_inputs, defaults=_defaults,
))
register(MethodDef(
    kind="no_consensus", label="No consensus (L = 0)", family="ours", budget="pretrained", colour="tab:red",
    prepare=lambda spec, ctx: _prepare(spec, ctx, rounds=0), params=_dual_params(),
    validate=lambda p: _validate(p, rounds_zero=True), inputs=_inputs, defaults=_defaults,
))
