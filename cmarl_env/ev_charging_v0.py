"""Versioned PettingZoo module: ``ev_charging_v0.parallel_env(**config)`` (the EV-charging domain)."""

from __future__ import annotations

from typing import Any

from pettingzoo.utils import parallel_to_aec, wrappers

from cmarl_env.domains.ev_charging.config import EVConfig
from cmarl_env.domains.ev_charging.parallel_env import EVChargingParallelEnv

__all__ = ["parallel_env", "env", "raw_env", "EVChargingParallelEnv", "EVConfig"]


def parallel_env(config: EVConfig | None = None, **kwargs: Any) -> EVChargingParallelEnv:
    """The parallel environment; keyword arguments are ``EVConfig`` fields (plus ``tables=``, ``max_cycles=``)."""
    return EVChargingParallelEnv(config, **kwargs)


def raw_env(config: EVConfig | None = None, **kwargs: Any):
    """AEC view (PettingZoo's conversion of the parallel environment)."""
    return parallel_to_aec(parallel_env(config, **kwargs))


def env(config: EVConfig | None = None, **kwargs: Any):
    """AEC view with PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(raw_env(config, **kwargs))
