"""Demand response on CityLearn buildings, the paper's domain.

Its core, environment and data stay where they were (``cmarl_env.core``,
``cmarl_env.dynamics``, ``cmarl_env.parallel_env``, ``cmarl_env.demand_response_v0``);
this folder holds only its adapter to the domain seam (``domain.DemandResponseDomain``).
"""
