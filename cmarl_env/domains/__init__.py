"""Constrained multi-agent domains: one folder each, one registration each (docs/domains.md).

``get_domain("ev_charging")`` returns the domain's adapter (a
:class:`~cmarl_env.domains.base.Domain`); ``domain_of(core)`` the adapter of a
core; ``list_domains()`` the registered names. Registration is lazy (a
``"module:attribute"`` string), so importing this package imports no domain.

Registered: ``demand_response`` (the paper's: ``cmarl_env.core.DemandResponseCore``,
adapter in ``domains/demand_response``) and ``ev_charging`` (``domains/ev_charging``).
"""

from __future__ import annotations

import importlib

from cmarl_env.domains.base import Domain

_REGISTRY: dict[str, str] = {
    "demand_response": "cmarl_env.domains.demand_response.domain:DemandResponseDomain",
    "ev_charging": "cmarl_env.domains.ev_charging.domain:EVChargingDomain",
}
_LOADED: dict[str, Domain] = {}


def register_domain(name: str, entry_point: str) -> None:
    """Register a domain adapter by name: ``entry_point`` is ``"module:ClassName"`` of a :class:`Domain` subclass."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"domain name {name!r} must be a Python identifier such as 'ev_charging'")
    if not isinstance(entry_point, str) or entry_point.count(":") != 1:
        raise ValueError(f"entry_point={entry_point!r} must be 'module:ClassName'")
    _REGISTRY[name] = entry_point
    _LOADED.pop(name, None)


def list_domains() -> list[str]:
    return sorted(_REGISTRY)


def get_domain(name: str) -> Domain:
    """The adapter of a registered domain; an unknown name raises ``ValueError`` listing the known ones."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown domain {name!r}; registered domains: {', '.join(list_domains())}")
    if name not in _LOADED:
        module, attr = _REGISTRY[name].split(":")
        _LOADED[name] = getattr(importlib.import_module(module), attr)()
    return _LOADED[name]


def domain_of(core) -> Domain:
    """The adapter of a core, from its class attribute ``domain``."""
    name = getattr(core, "domain", None)
    if name is None:
        raise ValueError(f"{type(core).__name__} declares no domain (class attribute 'domain'); "
                         f"registered domains: {', '.join(list_domains())}")
    return get_domain(name)


__all__ = ["Domain", "domain_of", "get_domain", "list_domains", "register_domain"]
