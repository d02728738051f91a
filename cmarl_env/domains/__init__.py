"""Constrained multi-agent domains, one folder each (``ev_charging`` so far; demand response lives in
``cmarl_env.core`` until the domain seam lands)."""
