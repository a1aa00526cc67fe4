"""Modules: one per capability (http, queue, cron, state, stream, pubsub, observability).

A module declares the trigger types it owns, each with a config schema that is
checked when a trigger is registered, and may add to the Context handed to
functions. Modules are enabled and configured in the engine settings file
(``[modules.NAME]`` tables in ``iii.toml``, see :mod:`iii_broker.config`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Field, Module, TriggerType
from .core import CoreModule
from .cron import CronModule
from .http import HttpModule
from .observability import ObservabilityModule
from .pubsub import PubSubModule
from .queue import QueueModule
from .state import StateModule
from .stream import StreamModule

if TYPE_CHECKING:
    from ..context import Context

BUILTIN_MODULES: dict[str, type[Module]] = {
    m.name: m
    for m in (CoreModule, HttpModule, QueueModule, CronModule, StateModule, StreamModule, PubSubModule,
              ObservabilityModule)
}


def trigger_types(modules: list[Module]) -> dict[str, TriggerType]:
    """Every trigger type the given modules declare, by type name."""
    return {t.name: t for m in modules for t in m.trigger_types}


def all_trigger_types() -> dict[str, TriggerType]:
    return trigger_types([cls() for cls in BUILTIN_MODULES.values()])


def extend_context(ctx: Context, modules: list[Module]) -> None:
    """Let every module add its parts to ``ctx.extras``."""
    for module in modules:
        extras: dict[str, Any] = module.context_extras(ctx)
        ctx.extras.update(extras)


__all__ = ["BUILTIN_MODULES", "Field", "Module", "TriggerType", "all_trigger_types",
           "extend_context", "trigger_types"]
