"""Modules: one per capability (core, http, queue, pubsub, cron, state, stream,
observability), each holding the whole story of its capability.

A module declares the trigger types it owns (with config schemas checked when a trigger
is registered), and implements hooks that the process hosts call: built-in functions
and duties in the engine, registration checks, services in a worker, views in the web
process, Context additions and CLI subcommands (:class:`~.base.Module`). Modules are
enabled and configured in the engine settings file (``[modules.NAME]`` tables in
``iii.toml``, see :mod:`.config`). The hosts (``engine/``, ``worker/``, ``web/``) loop
over the enabled modules; they never test a trigger type's name.
"""

from .base import Builtin, Duty, Field, Module, Service, TriggerType
from .catalog import (
    BUILTIN_MODULES,
    all_trigger_types,
    check_custom_type,
    default_modules,
    extend_context,
    module_of,
    trigger_types,
)
from .config import EngineConfig

__all__ = ["BUILTIN_MODULES", "Builtin", "Duty", "EngineConfig", "Field", "Module", "Service",
           "TriggerType", "all_trigger_types", "check_custom_type", "default_modules",
           "extend_context", "module_of", "trigger_types"]
