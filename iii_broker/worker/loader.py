"""Find the App named by ``-A module[:attr]``, the way Flask finds its app.

Search order without ``:attr``: an attribute named ``app``, then ``application``,
then the only :class:`App` instance in the module, then a ``create_app()`` or
``make_app()`` factory. With ``:attr``, that attribute (called if it is a factory).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from ..app import App
from ..errors import AppNotFound


def load_app(spec: str) -> App:
    """Import ``spec`` and return its App; raises :class:`AppNotFound` saying what to write."""
    if not spec or spec.startswith(":"):
        raise AppNotFound(f"-A {spec!r}: give a module, e.g. -A examples.quickstart or -A shop:app")
    module_name, _, attr = spec.partition(":")
    if module_name.endswith(".py"):
        module_name = module_name[:-3].replace(os.sep, ".")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppNotFound(
                f"-A {spec}: no module named {exc.name!r} (looked on sys.path from "
                f"{os.getcwd()}); write the dotted module path, e.g. -A examples.quickstart"
            ) from None
        raise AppNotFound(f"-A {spec}: importing {module_name!r} failed: {exc}") from exc
    if attr:
        if not hasattr(module, attr):
            found = _apps_in(module)
            hint = f"; apps in it: {', '.join(found)}" if found else ""
            raise AppNotFound(f"-A {spec}: module {module_name!r} has no attribute {attr!r}{hint}")
        return _as_app(getattr(module, attr), spec)
    for name in ("app", "application"):
        if isinstance(getattr(module, name, None), App):
            return getattr(module, name)
    apps = _apps_in(module)
    if len(apps) == 1:
        return getattr(module, apps[0])
    if len(apps) > 1:
        raise AppNotFound(f"-A {spec}: module {module_name!r} has several apps "
                          f"({', '.join(apps)}); pick one with -A {module_name}:NAME")
    for name in ("create_app", "make_app"):
        if callable(getattr(module, name, None)):
            return _as_app(getattr(module, name), spec)
    raise AppNotFound(f"-A {spec}: found no iii_broker.App in module {module_name!r}; define "
                      f"app = App(...) there or write -A {module_name}:NAME")


def _apps_in(module: Any) -> list[str]:
    return [k for k, v in vars(module).items() if isinstance(v, App)]


def _as_app(value: Any, spec: str) -> App:
    if isinstance(value, App):
        return value
    if callable(value):
        try:
            inspect.signature(value).bind()
        except TypeError:
            raise AppNotFound(f"-A {spec}: {_name(value)} is not an App instance, and as an "
                              "app factory it would need arguments") from None
        except ValueError:
            pass  # no signature to check (some builtins): just try it
        made = value()
        if isinstance(made, App):
            return made
        raise AppNotFound(f"-A {spec}: the factory returned {type(made).__name__}, not an App")
    raise AppNotFound(f"-A {spec}: is a {type(value).__name__}, not an iii_broker.App")


def _name(value: Any) -> str:
    return getattr(value, "__qualname__", None) or type(value).__name__
