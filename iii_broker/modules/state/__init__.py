"""State: JSON values by scope and key in Redis, the ``state::*`` built-ins, and ``state``
triggers that fire on every change (iii-reference §3, state).

    [modules.state]
    max_value_bytes = 1048576   # a value's size once stored (JSON)
    max_path_depth = 32         # segments in an update op's path
    max_key_length = 256
    max_scope_length = 256
    changes_maxlen = 100000     # change records kept for triggers whose worker is away

Built-ins: ``state::set {scope, key, value}`` → ``{old_value, new_value}``, ``state::get
{scope, key}`` → the value or null, ``state::delete {scope, key}`` → the deleted value or
null, ``state::list {scope}`` → the values, ``state::list_groups`` → ``{groups}``,
``state::update {scope, key, ops}`` → ``{old_value, new_value, errors?}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ...documents import DocumentStore, Limits
from ...documents.codec import unpack
from ..base import CONDITION, LIMITS, Builtin, Duty, Field, Module, TriggerType
from ..changes import Change, ChangeFeed
from ..hosts import EngineHost
from .builtins import StateBuiltins

STATE = "state"
FEED_INTERVAL_S = 0.05


class StateModule(Module):
    name = "state"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType(STATE, {
            "scope": Field(str),
            "key": Field(str),
            "condition_function_id": CONDITION,
        }, "fires with {type, event_type, scope, key, old_value, new_value} when a state "
           "value is created, updated or deleted"),
    )
    options: ClassVar[dict[str, Field]] = {"enabled": Field(bool, default=True), **LIMITS}

    def limits(self) -> Limits:
        return Limits.of(self.config)

    def _feed(self, engine: EngineHost) -> ChangeFeed:
        feed: ChangeFeed | None = getattr(self, "_state_feed", None)
        if feed is None:  # one per engine process
            keys = engine.registry.keys
            feed = self._state_feed = ChangeFeed(
                engine, STATE, keys.state_changes, keys.state_cursors,
                matches=_matches, payload=change_payload, lane=lambda c: c.meta["scope"] + "\n" + c.key)
        return feed

    # -- engine ---------------------------------------------------------------------

    def builtins(self, engine: EngineHost) -> list[Builtin]:
        store = DocumentStore(engine.registry.r, self.limits())
        return StateBuiltins(store, engine.registry.keys).builtins()

    def duties(self, engine: EngineHost) -> list[Duty]:
        return [Duty("state-triggers", self._feed(engine).run, FEED_INTERVAL_S)]

    def triggers_registered(self, engine: EngineHost, triggers: list[dict[str, Any]]) -> None:
        self._feed(engine).start_at_end(triggers)


def _matches(config: dict[str, Any], change: Change) -> bool:
    scope, key = config.get("scope"), config.get("key")
    return (scope is None or scope == change.meta.get("scope")) and (key is None or key == change.key)


def change_payload(change: Change) -> dict[str, Any]:
    """What a ``state`` trigger's function receives (iii-reference §3, state)."""
    return {"type": "state", "event_type": f"state:{change.event}",
            "scope": change.meta.get("scope"), "key": change.key,
            "old_value": unpack(change.old) if change.old else None,
            "new_value": unpack(change.new) if change.new else None}
