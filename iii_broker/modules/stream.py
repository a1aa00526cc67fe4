"""Live streams over WebSockets: ``stream``, ``stream:join`` and ``stream:leave`` triggers."""

from __future__ import annotations

from typing import ClassVar

from .base import CONDITION, Field, Module, TriggerType, nonempty


class StreamModule(Module):
    name = "stream"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType("stream", {
            "stream_name": Field(str, required=True, check=nonempty),
            "group_id": Field(str),
            "item_id": Field(str),
            "condition_function_id": CONDITION,
        }, "fires when a stream item changes"),
        TriggerType("stream:join", {"condition_function_id": CONDITION},
                    "a client subscribes to a stream"),
        TriggerType("stream:leave", {"condition_function_id": CONDITION},
                    "a client leaves a stream"),
    )
    options: ClassVar[dict[str, Field]] = {
        "enabled": Field(bool, default=True),
    }
