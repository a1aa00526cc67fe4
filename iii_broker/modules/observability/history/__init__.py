"""Invocation history: every run recorded in Redis, listed, shown, run again.

- :mod:`.record`: one attempt's record, built from a :class:`~iii_broker.observe.Run`.
- :mod:`.recorder`: the observer (a dict insert as a run starts, a buffer append as it
  ends) and the batching thread that writes the records.
- :mod:`.store`: the Redis keys, their Lua scripts, listing and trimming.
- :mod:`.api`: the ``engine::invocations::*`` built-ins and rerunning.
- :mod:`.cli`: ``iii-broker invocations``.

Engine duties (elected): ``history-interrupted`` marks records left ``running`` by a worker
that is no longer live as ``interrupted`` (error ``invocation_stopped``), and
``history-trim`` keeps the history within ``history_max_count`` and ``history_max_age_s``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from ....message import now_ms
from ....settings import Settings
from ...base import Builtin, Duty
from ...hosts import EngineHost
from ..options import ObservabilityOptions
from . import cli
from .api import get_invocation, invocation_id_of, list_invocations, rerun
from .recorder import History, HistoryObserver
from .store import HistoryStore

log = logging.getLogger("iii.observability")

INTERRUPTED_EVERY_S = 2.0
TRIM_EVERY_S = 10.0


def builtins(engine: EngineHost, options: ObservabilityOptions) -> list[Builtin]:
    store = HistoryStore(engine.registry.r, engine.registry.keys)
    return [
        Builtin("engine::invocations::list", lambda p: list_invocations(store, p),
                "Recorded invocations, newest first: {function_id?, status?, since?, until? "
                "(Unix ms), limit=50, offset=0} -> {invocations, total}"),
        Builtin("engine::invocations::get",
                lambda p: get_invocation(store, invocation_id_of(p)),
                "Every recorded attempt of one invocation: {invocation_id} -> "
                "{invocation_id, function_id, attempts}"),
        Builtin("engine::invocations::rerun",
                lambda p: rerun(store, engine.caller, invocation_id_of(p)),
                "Run an invocation again with its original payload: {invocation_id} -> "
                "{invocation_id (the new run's), rerun_of}"),
    ]


def duties(engine: EngineHost, options: ObservabilityOptions) -> list[Duty]:
    store = HistoryStore(engine.registry.r, engine.registry.keys)

    def interrupted() -> None:
        running = store.running()
        if not running:
            return
        live = set(engine.registry.r.zrangebyscore(engine.registry.keys.workers,
                                                    now_ms(), "+inf"))
        for invocation_id, worker_id in running.items():
            if worker_id not in live and store.interrupt(invocation_id, worker_id):
                log.info("invocation %s was running on worker %s, which is gone: marked "
                         "interrupted", invocation_id, worker_id)

    def trim() -> None:
        current = _current_options(engine, options)
        store.trim(current.history_max_count, current.history_max_age_s)

    return [Duty("history-interrupted", interrupted, INTERRUPTED_EVERY_S),
            Duty("history-trim", trim, TRIM_EVERY_S)]


def _current_options(engine: EngineHost, options: ObservabilityOptions) -> ObservabilityOptions:
    """The cluster's settings as Redis has them (what the engine seeded)."""
    return options.with_shared(engine.registry.r.get(engine.registry.keys.observability))


def cli_commands(sub: argparse._SubParsersAction[Any]
                 ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
    cli.add_parser(sub)
    return {"invocations": cli.run}


__all__ = ["History", "HistoryObserver", "HistoryStore", "builtins", "cli_commands", "duties",
           "rerun"]
