"""``cmarl_env.make("DemandResponse-v0", ...)`` and PettingZoo registry hook-up."""

from __future__ import annotations

import importlib
from typing import Any, Callable

REGISTRY: dict[str, str] = {
    "DemandResponse-v0": "cmarl_env.demand_response_v0:parallel_env",
    "DemandResponseAEC-v0": "cmarl_env.demand_response_v0:env",
    "DemandResponseSingle-v0": "cmarl_env.views:SingleAgentEnv",
    "DemandResponseBatched-v0": "cmarl_env.views:BatchedEnv",
}


def _entry(name: str) -> Callable[..., Any]:
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown environment id {name!r}; registered ids: {sorted(REGISTRY)}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def make(name: str = "DemandResponse-v0", **kwargs: Any):
    """Build a registered environment; keyword arguments are ``EnvConfig`` fields."""
    return _entry(name)(**kwargs)


def register(name: str, entry_point: str) -> None:
    """Add an id (``"module:callable"``) to the registry."""
    REGISTRY[name] = entry_point


def register_with_pettingzoo() -> bool:
    """Register the ids with PettingZoo's registry when the installed PettingZoo has one.

    PettingZoo 1.24 ships none (environments are imported as modules), so this
    is a no-op there and returns False.
    """
    try:
        import pettingzoo
    except ImportError:
        return False
    register_fn = getattr(pettingzoo, "register", None)
    if register_fn is None:
        return False
    for name, target in REGISTRY.items():
        register_fn(id=name, entry_point=target)
    return True
