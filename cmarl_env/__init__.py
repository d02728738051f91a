"""Constrained multi-agent demand response on real CityLearn buildings.

``from cmarl_env import demand_response_v0; env = demand_response_v0.parallel_env()``
gives the PettingZoo environment; ``cmarl_env.make("DemandResponse-v0", ...)``
does the same by id. This package imports without torch, Tianshou or Ray.
"""

from cmarl_env.config import EnvConfig
from cmarl_env.core import DemandResponseCore, observation_layout
from cmarl_env.data import BuildingData, list_datasets, load_dataset
from cmarl_env.registration import make, register, register_with_gymnasium, register_with_pettingzoo

__all__ = [
    "BuildingData",
    "DemandResponseCore",
    "EnvConfig",
    "list_datasets",
    "load_dataset",
    "make",
    "observation_layout",
    "register",
]
__version__ = "0.1.0"

register_with_gymnasium()
register_with_pettingzoo()
