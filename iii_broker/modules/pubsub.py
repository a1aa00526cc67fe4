"""Non-durable pub/sub: ``subscribe`` triggers fed by the ``publish`` built-in."""

from __future__ import annotations

from typing import ClassVar

from .base import CONDITION, Field, Module, TriggerType, nonempty


class PubSubModule(Module):
    name = "pubsub"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType("subscribe", {
            "topic": Field(str, required=True, check=nonempty),
            "condition_function_id": CONDITION,
        }, "every message published to a topic while the subscriber is up"),
    )
    options: ClassVar[dict[str, Field]] = {"enabled": Field(bool, default=True)}
