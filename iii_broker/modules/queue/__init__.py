"""Named queues and durable topics.

Named queues are configured here, in ``[modules.queue.queues.NAME]`` tables (see
:mod:`iii_broker.queues.config`); durable topics are ``durable:subscriber`` triggers
with an optional ``queue_config`` of the same fields.

    [modules.queue]
    idempotency_ttl_s = 86400

    [modules.queue.queues.payment]
    max_retries = 5
    concurrency = 4
    backoff_ms = 500

    [modules.queue.queues.orders]
    type = "fifo"
    message_group_field = "customer_id"
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, ClassVar

from ...errors import TriggerConfigError
from ...queues.config import QUEUE_CONFIG, QueueConfig, parse_queues
from ...settings import Settings
from ..base import CONDITION, Builtin, Duty, Field, Module, Service, TriggerType, check_fields, nonempty
from ..hosts import EngineHost, WorkerHost
from . import cli
from .duties import PROMOTE_INTERVAL_S, QueueDuties
from .jobs import JobRunner
from .topics import SUBSCRIBER, subscriber_queue


def _queue_config(value: Any) -> str | None:
    try:
        checked = check_fields("queue_config", value, QUEUE_CONFIG)
    except TriggerConfigError as exc:  # reported as the field's problem
        return f"is invalid: {exc.message}"
    if checked.get("type") == "fifo" and not checked.get("message_group_field"):
        return "needs message_group_field when type is fifo"
    return None


class QueueModule(Module):
    name = "queue"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType(SUBSCRIBER, {
            "topic": Field(str, required=True, check=nonempty),
            "queue_config": Field(dict, check=_queue_config),
            "condition_function_id": CONDITION,
        }, "a durable copy of every message published to a topic"),
    )
    options: ClassVar[dict[str, Field]] = {
        "enabled": Field(bool, default=True),
        "idempotency_ttl_s": Field(int, default=86_400,
                                   check=lambda v: "must be >= 1" if v < 1 else None),
        "queues": Field(dict, default={}),
    }

    @classmethod
    def from_config(cls, table: dict[str, Any]) -> Module:
        module = super().from_config(table)
        assert isinstance(module, QueueModule)
        module.queues()  # raises ConfigError naming a bad queue table
        return module

    def queues(self) -> dict[str, QueueConfig]:
        """The configured named queues (``default`` included)."""
        return parse_queues(self.config.get("queues"),
                            idempotency_ttl_s=self.config.get("idempotency_ttl_s", 86_400))

    # -- engine ---------------------------------------------------------------------

    def _engine_duties(self, engine: EngineHost) -> QueueDuties:
        duties: QueueDuties | None = getattr(self, "_duties", None)
        if duties is None:  # one per engine process (a module instance serves one engine)
            duties = self._duties = QueueDuties(engine, self)
        return duties

    def builtins(self, engine: EngineHost) -> list[Builtin]:
        return self._engine_duties(engine).builtins()

    def seed(self, engine: EngineHost) -> None:
        self._engine_duties(engine).publish_settings()

    def duties(self, engine: EngineHost) -> list[Duty]:
        duties = self._engine_duties(engine)
        return [Duty("queue-retries", duties.promote_due, PROMOTE_INTERVAL_S),
                Duty("queue-orphans", duties.return_orphans,
                     engine.settings.heartbeat_interval_s / 2)]

    def triggers_registered(self, engine: EngineHost, triggers: list[dict[str, Any]]) -> None:
        """Record the queue of each durable subscriber being registered."""
        self._engine_duties(engine).register_subscribers(
            [t for t in triggers if t["type"] == SUBSCRIBER])

    # -- worker ---------------------------------------------------------------------

    def worker_services(self, worker: WorkerHost) -> list[Service]:
        return [JobRunner(worker)]

    # -- CLI ------------------------------------------------------------------------

    def cli_commands(self, sub: argparse._SubParsersAction[Any]
                     ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
        cli.add_parsers(sub)
        return {"queues": cli.run, "dlq": cli.run}


__all__ = ["QueueModule", "subscriber_queue"]
