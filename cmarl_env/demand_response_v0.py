"""Versioned PettingZoo module: ``demand_response_v0.parallel_env(**config)``."""

from __future__ import annotations

from typing import Any

from pettingzoo.utils import parallel_to_aec, wrappers

from cmarl_env.config import EnvConfig
from cmarl_env.parallel_env import DemandResponseParallelEnv

__all__ = ["parallel_env", "env", "raw_env", "DemandResponseParallelEnv"]


def parallel_env(config: EnvConfig | None = None, **kwargs: Any) -> DemandResponseParallelEnv:
    """The parallel environment; keyword arguments are ``EnvConfig`` fields (plus ``data=``)."""
    return DemandResponseParallelEnv(config, **kwargs)


def raw_env(config: EnvConfig | None = None, **kwargs: Any):
    """AEC view (PettingZoo's conversion of the parallel environment)."""
    return parallel_to_aec(parallel_env(config, **kwargs))


def env(config: EnvConfig | None = None, **kwargs: Any):
    """AEC view with PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(raw_env(config, **kwargs))
