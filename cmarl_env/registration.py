"""Environment ids: ``cmarl_env.make``, Gymnasium's registry and PettingZoo's registry.

``import cmarl_env`` registers

* with Gymnasium: ``gymnasium.make("cmarl/DemandResponseSingle-v0", **config)``
  (one agent's MDP, ``views.SingleAgentEnv``) and, through the same id's vector
  entry point, ``gymnasium.make_vec("cmarl/DemandResponseSingle-v0", num_envs=64)``
  (``views.BatchedEnv``; Gymnasium 1.x picks it by default, 0.28-0.29 need
  ``vectorization_mode="custom"`` and pass config fields in ``vector_kwargs``). Without a prior import, Gymnasium imports
  the package itself from ``"cmarl_env:cmarl/DemandResponseSingle-v0"``;
* with PettingZoo, when the installed version has a registry (1.27 on):
  ``pettingzoo.make("parallel", "cmarl/DemandResponse-v0")`` and
  ``pettingzoo.make("aec", "cmarl/DemandResponse-v0")``. Older PettingZoo
  versions use the module convention, ``cmarl_env.demand_response_v0``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

REGISTRY: dict[str, str] = {
    "DemandResponse-v0": "cmarl_env.demand_response_v0:parallel_env",
    "DemandResponseAEC-v0": "cmarl_env.demand_response_v0:env",
    "DemandResponseSingle-v0": "cmarl_env.views:SingleAgentEnv",
    "DemandResponseBatched-v0": "cmarl_env.views:BatchedEnv",
}

NAMESPACE = "cmarl"
# Gymnasium id -> (entry point, vector entry point)
GYMNASIUM_IDS: dict[str, tuple[str, str]] = {
    f"{NAMESPACE}/DemandResponseSingle-v0": ("cmarl_env.views:SingleAgentEnv", "cmarl_env.views:BatchedEnv"),
}
# PettingZoo id -> {env type: entry point}
PETTINGZOO_IDS: dict[str, dict[str, str]] = {
    f"{NAMESPACE}/DemandResponse-v0": {
        "parallel": "cmarl_env.demand_response_v0:parallel_env",
        "aec": "cmarl_env.demand_response_v0:env",
    },
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


def register_with_gymnasium() -> list[str]:
    """Register the Gymnasium ids (once per process); returns them."""
    import gymnasium

    for env_id, (entry_point, vector_entry_point) in GYMNASIUM_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point)
    return list(GYMNASIUM_IDS)


def register_with_pettingzoo() -> bool:
    """Register the ids with PettingZoo's registry when the installed PettingZoo has one.

    PettingZoo 1.27 has ``pettingzoo.register(env_type, id, entry_point)``;
    1.24-1.26 have none (environments are imported as modules), so this is a
    no-op there and returns False.
    """
    try:
        import pettingzoo
    except ImportError:
        return False
    register_fn = getattr(pettingzoo, "register", None)
    if register_fn is None or "env_type" not in inspect.signature(register_fn).parameters:
        return False
    for env_id, entry_points in PETTINGZOO_IDS.items():
        for env_type, target in entry_points.items():
            registry = getattr(pettingzoo, f"{env_type}_registry", {})
            if env_id not in registry:
                register_fn(env_type, id=env_id, entry_point=target)
    return True
