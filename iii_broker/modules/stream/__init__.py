"""Live streams over WebSockets: ``stream``, ``stream:join`` and ``stream:leave`` triggers."""

from __future__ import annotations

from typing import Any, ClassVar

from ...documents import DocumentStore, Limits
from ..base import CONDITION, LIMITS, Builtin, Duty, Field, Module, TriggerType, nonempty
from ..changes import ChangeFeed
from ..hosts import EngineHost
from . import builtins

FEED_INTERVAL_S = 0.05


class StreamModule(Module):
    name = "stream"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType(builtins.STREAM, {
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
        **LIMITS,
    }

    # -- engine ---------------------------------------------------------------------

    def builtins(self, engine: EngineHost) -> list[Builtin]:
        store = DocumentStore(engine.registry.r, Limits.of(self.config))
        return builtins.StreamBuiltins(store, engine.registry.keys).builtins()

    def _feed(self, engine: EngineHost) -> ChangeFeed:
        feed: ChangeFeed | None = getattr(self, "_stream_feed", None)
        if feed is None:  # one per engine process
            keys = engine.registry.keys
            feed = self._stream_feed = ChangeFeed(
                engine, builtins.STREAM, keys.stream_changes, keys.stream_cursors,
                matches=builtins.matches, payload=builtins.change_payload, lane=builtins.lane)
        return feed

    def duties(self, engine: EngineHost) -> list[Duty]:
        return [Duty("stream-triggers", self._feed(engine).run, FEED_INTERVAL_S)]

    def triggers_registered(self, engine: EngineHost, triggers: list[dict[str, Any]]) -> None:
        self._feed(engine).start_at_end(triggers)
