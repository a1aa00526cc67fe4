"""The built-in modules, in the order their hooks run, and lookups over them."""

from __future__ import annotations

import difflib
from typing import Any

from ..context import Context
from ..errors import TriggerConfigError
from ..trigger import check_trigger_type_id
from .base import Module, TriggerType
from .core import CoreModule
from .cron import CronModule
from .gateway import GatewayModule
from .http import HttpModule
from .observability import ObservabilityModule
from .pubsub import PubSubModule
from .queue import QueueModule
from .state import StateModule
from .stream import StreamModule

# Adding a capability: write its module, then list it here (and nowhere else).
BUILTIN_MODULES: dict[str, type[Module]] = {
    m.name: m
    for m in (CoreModule, HttpModule, QueueModule, CronModule, StateModule, StreamModule,
              PubSubModule, ObservabilityModule, GatewayModule)
}


def trigger_types(modules: list[Module]) -> dict[str, TriggerType]:
    """Every trigger type the given modules declare, by type name."""
    return {t.name: t for m in modules for t in m.trigger_types}


def all_trigger_types() -> dict[str, TriggerType]:
    return trigger_types([cls() for cls in BUILTIN_MODULES.values()])


def default_modules() -> list[Module]:
    """Every built-in module with its default settings (a process without the settings file)."""
    return [cls.from_config({}) for cls in BUILTIN_MODULES.values()]


def check_custom_type(trigger_type: str, known: Any, function_id: str | None = None) -> str:
    """A trigger type no module declares, taken as a custom one (a worker provides it with
    ``register_trigger_type``; until one does, its triggers wait, inactive). Raises
    :class:`TriggerConfigError` for a malformed id, or one so close to a built-in type
    that it is more likely a typo (``htpp``, ``Cron``)."""
    check_trigger_type_id(trigger_type)
    names = sorted(known)
    folded = {n.lower(): n for n in names}
    close = folded.get(trigger_type.lower()) or next(
        iter(difflib.get_close_matches(trigger_type, names, n=1, cutoff=0.75)), None)
    if close is not None:
        where = f" for {function_id!r}" if function_id else ""
        raise TriggerConfigError(
            f"unknown trigger type {trigger_type!r}{where}: did you mean {close!r}? (a type "
            "no module provides is a custom one, which a worker provides with "
            "register_trigger_type; built-in types: " + ", ".join(names) + ")",
            function_id=function_id)
    return trigger_type


def module_of(trigger_type: str) -> type[Module] | None:
    """The built-in module that declares ``trigger_type``, enabled or not."""
    return next((cls for cls in BUILTIN_MODULES.values()
                 if any(t.name == trigger_type for t in cls.trigger_types)), None)


def extend_context(ctx: Context, modules: list[Module]) -> None:
    """Let every module add its parts to ``ctx.extras``."""
    for module in modules:
        extras: dict[str, Any] = module.context_extras(ctx)
        ctx.extras.update(extras)
