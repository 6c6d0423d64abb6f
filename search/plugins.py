"""Plug-ins: the user's own data, models, knobs and figures, named as Python modules.

``package.module:function`` names a data or model plug-in (``--data``, ``--model``);
``package.module`` names a module imported before the study's search space is read
(``--plugin``), whose ``register_knob`` / ``register_figure`` calls add knobs and figures. The
working directory is importable, as with ``python -m``. Plug-ins are code the user chose to
run; a study stores their names so that every worker imports the same ones.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable

from tradeoff.search.errors import UsageError


def is_plugin(spec: str) -> bool:
    """``package.module:function`` (and not a path that exists)."""
    mod, sep, fn = spec.partition(":")
    return bool(sep and mod and fn.isidentifier() and not os.path.exists(spec))


def _importable_cwd() -> None:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def load_plugin(spec: str, what: str) -> Callable:
    """The function named by ``package.module:function``; the working directory is importable,
    as with ``python -m``."""
    module_name, _, fn_name = spec.partition(":")
    _importable_cwd()
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the plug-in's
        raise UsageError(
            f"{what} plug-in {spec!r}: cannot import {module_name}: {type(e).__name__}: {e}"
        ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UsageError(f"{what} plug-in {spec!r}: {module_name} has no function {fn_name!r}")
    return fn


def call_with_accepted(fn: Callable, spec: str, what: str, **kwargs):
    """Call a plug-in with the keyword arguments its signature accepts."""
    try:
        params = inspect.signature(fn).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}
    except (TypeError, ValueError):
        pass
    try:
        return fn(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"{what} plug-in {spec!r} raised {type(e).__name__}: {e}") from None


def import_plugin_modules(modules: Iterable[str]) -> None:
    """Import each ``package.module`` (knob and figure plug-ins register themselves on import)."""
    for name in modules:
        if not isinstance(name, str) or not name or ":" in name or "/" in name:
            raise UsageError(f"--plugin {name!r}: give a module to import, as package.module")
        _importable_cwd()
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any import failure is the plug-in's
            raise UsageError(f"plug-in {name!r} does not import: {type(e).__name__}: {e}") from None
