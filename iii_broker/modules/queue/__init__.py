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

from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import TriggerConfigError
from .base import CONDITION, Field, Module, TriggerType, check_fields, nonempty

if TYPE_CHECKING:
    from ..queues.config import QueueConfig

QUEUE_CONFIG = {
    "max_retries": Field(int, check=lambda v: "must be >= 0" if v < 0 else None),
    "concurrency": Field(int, check=lambda v: "must be >= 1" if v < 1 else None),
    "type": Field(str, choices=("standard", "fifo")),
    "message_group_field": Field(str),
    "backoff_ms": Field(int, check=lambda v: "must be >= 0" if v < 0 else None),
}


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
        TriggerType("durable:subscriber", {
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
        from ..queues.config import parse_queues
        return parse_queues(self.config.get("queues"),
                            idempotency_ttl_s=self.config.get("idempotency_ttl_s", 86_400))
