"""A user's own controller, named in a suite file by path and class::

    "mine": {"kind": "controller", "params": {"path": "my_controller.py", "class": "MyController",
                                               "kwargs": {"threshold": 0.4}}}

The class implements :class:`cmarl_env.evaluation.Controller`; one instance is
built per roll-out with ``kwargs``. A relative ``path`` is resolved against
the suite file's folder when the suite is loaded.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Mapping

from benchmarks.registry import MethodDef, Prepared, RunContext, register


def load_class(path: str, name: str):
    """The class ``name`` from the Python file ``path`` (a clear error when either is missing)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"controller path={path!r} is not a file")
    module_name = f"cmarl_user_controller_{abs(hash(str(file.resolve())))}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    cls = getattr(module, name, None)
    if cls is None:
        raise ValueError(f"controller class={name!r} is not defined in {path}")
    return cls


def _validate(params: Mapping[str, Any]) -> None:
    for key in ("path", "class"):
        if not isinstance(params.get(key), str) or not params.get(key):
            raise ValueError(f"{key} must name the controller's Python file and class (a string)")
    if not isinstance(params.get("kwargs", {}), Mapping):
        raise ValueError("kwargs must be an object of keyword arguments for the controller class")


def _prepare(spec, ctx: RunContext) -> Prepared:
    p = spec.method.params
    cls = load_class(p["path"], p["class"])
    kwargs = dict(p.get("kwargs", {}))
    return Prepared(controller=lambda: cls(**kwargs), config={"path": p["path"], "class": p["class"],
                                                               "kwargs": kwargs})


# label "": a user controller is labelled by its method name in the suite
register(MethodDef(kind="controller", label="", prepare=_prepare, params=("path", "class", "kwargs"),
                   validate=_validate, colour="tab:cyan", seeded=False, family="baseline"))
