"""The built-in modules, in the order their hooks run, and lookups over them."""

from __future__ import annotations

from typing import Any

from ..context import Context
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


def module_of(trigger_type: str) -> type[Module] | None:
    """The built-in module that declares ``trigger_type``, enabled or not."""
    return next((cls for cls in BUILTIN_MODULES.values()
                 if any(t.name == trigger_type for t in cls.trigger_types)), None)


def extend_context(ctx: Context, modules: list[Module]) -> None:
    """Let every module add its parts to ``ctx.extras``."""
    for module in modules:
        extras: dict[str, Any] = module.context_extras(ctx)
        ctx.extras.update(extras)
