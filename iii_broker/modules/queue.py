"""Durable topics: ``durable:subscriber`` triggers with an optional queue_config."""

from __future__ import annotations

from typing import Any, ClassVar

from ..errors import TriggerConfigError
from .base import CONDITION, Field, Module, TriggerType, check_fields, nonempty

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
    options: ClassVar[dict[str, Field]] = {"enabled": Field(bool, default=True)}
