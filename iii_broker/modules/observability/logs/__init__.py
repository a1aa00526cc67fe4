"""Handlers' log records: captured, stored in Redis, listed, and fed to ``log`` triggers.

- :mod:`.capture`: the logging handler of worker and engine processes (records logged
  inside a run, ``ctx.logger`` or plain ``logging``, at or above ``level``);
- :mod:`.record`: a record in iii's shape (an OpenTelemetry log record) and severities;
- :mod:`.store`: the ``NS:logs`` stream and its per-trace index, trimming, listing;
- :mod:`.triggers`: ``log`` triggers (an elected change feed), never fired by quiet runs;
- :mod:`.cli`: ``iii-broker logs``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ....settings import Settings
from ...base import Builtin, Duty
from ...hosts import EngineHost
from ..options import ObservabilityOptions
from . import cli
from .capture import Logs
from .store import LogQuery, LogStore
from .triggers import FEED_INTERVAL_S, feed

TRIM_INTERVAL_S = 5.0
"""How often the leading engine trims the records by count and age."""


def builtins(engine: EngineHost, options: ObservabilityOptions) -> list[Builtin]:
    store = LogStore(engine.registry.r, engine.registry.keys)
    return [Builtin(
        "engine::logs::list", lambda payload: store.find(LogQuery.of(payload)),
        "Log records of handlers, newest first: {start_time?, end_time? (Unix ms), trace_id?, "
        "severity_min? (number or level name), function_id?, limit=100, offset=0} -> "
        "{logs, total?}")]


def duties(engine: EngineHost, options: ObservabilityOptions) -> list[Duty]:
    store = LogStore(engine.registry.r, engine.registry.keys)

    def trim() -> None:
        store.trim(options.logs_max_count, options.logs_max_age_s)

    return [Duty("logs-trim", trim, TRIM_INTERVAL_S),
            Duty("log-triggers", feed(engine).run, FEED_INTERVAL_S)]


def triggers_registered(engine: EngineHost, triggers: list[dict[str, Any]]) -> None:
    """New ``log`` triggers start at the end of the records."""
    feed(engine).start_at_end(triggers)


def cli_commands(sub: argparse._SubParsersAction[Any]
                 ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
    cli.add_parser(sub)
    return {"logs": cli.run}


__all__ = ["Logs", "builtins", "cli_commands", "duties", "triggers_registered"]
