"""The ``stream::*`` built-ins, served by every engine, and ``stream`` change triggers.

Streams hold JSON items by ``stream_name`` → ``group_id`` → ``item_id`` (a Redis hash per
group, :func:`~iii_broker.store.Keys.stream_group`). Every write also publishes the live
message that stream processes fan out to browsers, and appends the change record that
``stream`` triggers read, in the same atomic step (:mod:`iii_broker.documents.lua`).
"""

from __future__ import annotations

from typing import Any

from ...documents import Collection, DocumentStore, live
from ...documents.codec import unpack
from ...errors import BrokerUnavailable, InvalidArgument
from ...store import Keys, RedisError
from ..base import Builtin
from ..changes import Change, traced

STREAM = "stream"


class StreamBuiltins:
    def __init__(self, store: DocumentStore, keys: Keys) -> None:
        self.store = store
        self.keys = keys

    def builtins(self) -> list[Builtin]:
        return [
            Builtin("stream::set", self.set, "Store an item and push it to subscribers: "
                    "{stream_name, group_id, item_id, data} -> {old_value, new_value}"),
            Builtin("stream::get", self.get, "An item: {stream_name, group_id, item_id} -> "
                    "data or null"),
            Builtin("stream::delete", self.delete, "Delete an item and tell subscribers: "
                    "{stream_name, group_id, item_id} -> {old_value}"),
            Builtin("stream::list", self.list, "A group's items: {stream_name, group_id} -> "
                    "[data]"),
            Builtin("stream::list_groups", self.list_groups, "Groups of a stream that hold "
                    "items: {stream_name} -> {groups}"),
            Builtin("stream::send", self.send, "Push a custom event to a group's subscribers: "
                    "{stream_name, group_id, type, id?, data}"),
            Builtin("stream::update", self.update, "Apply ops atomically (as state::update): "
                    "{stream_name, group_id, item_id, ops} -> {old_value, new_value, errors?}"),
        ]

    def collection(self, payload: Any, *, item: bool = True) -> tuple[Collection, str]:
        if not isinstance(payload, dict):
            raise InvalidArgument("the payload must be an object with 'stream_name', "
                                  "'group_id'" + (" and 'item_id'" if item else ""))
        limits = self.store.limits
        name = limits.check_name("stream_name", payload.get("stream_name"), scope=True)
        group = limits.check_name("group_id", payload.get("group_id"), scope=True)
        item_id = limits.check_name("item_id", payload.get("item_id")) if item else ""
        coll = Collection(key=self.keys.stream_group(name, group),
                          index=self.keys.stream_groups(name), member=group,
                          changes=self.keys.stream_changes, live=self.keys.stream_live,
                          meta=traced({"stream_name": name, "group_id": group}))
        return coll, item_id

    def set(self, payload: Any) -> dict[str, Any]:
        coll, item_id = self.collection(payload)
        if "data" not in payload:
            raise InvalidArgument("stream::set needs 'data' (use stream::delete to remove an item)")
        return self.store.set(coll, item_id, payload["data"]).result()

    def get(self, payload: Any) -> Any:
        coll, item_id = self.collection(payload)
        return self.store.get(coll, item_id)

    def delete(self, payload: Any) -> dict[str, Any]:
        coll, item_id = self.collection(payload)
        return {"old_value": self.store.delete(coll, item_id).old_value}

    def list(self, payload: Any) -> list[Any]:
        coll, _ = self.collection(payload, item=False)
        return [value for _id, value in self.store.items(coll)]

    def list_groups(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise InvalidArgument("the payload must be an object with 'stream_name'")
        name = self.store.limits.check_name("stream_name", payload.get("stream_name"), scope=True)
        return {"groups": self.store.names(self.keys.stream_groups(name))}

    def send(self, payload: Any) -> dict[str, Any]:
        coll, _ = self.collection(payload, item=False)
        kind = payload.get("type")
        if not isinstance(kind, str) or not kind:
            raise InvalidArgument("stream::send needs 'type', the event's name (a non-empty string)")
        item_id = payload.get("id")
        if item_id is not None:
            item_id = self.store.limits.check_name("id", item_id)
        meta = coll.meta
        try:
            seconds, micros = self.store.r.time()
            message = live.event_message(meta["stream_name"], meta["group_id"], item_id, kind,
                                         payload.get("data"), seconds * 1000 + micros // 1000)
            receivers = self.store.r.publish(self.keys.stream_live, message)
        except RedisError as exc:
            raise BrokerUnavailable(f"Redis is unavailable: {exc}") from exc
        return {"stream_processes": receivers}

    def update(self, payload: Any) -> dict[str, Any]:
        coll, item_id = self.collection(payload)
        if "ops" not in payload:
            raise InvalidArgument("stream::update needs 'ops', a list like "
                                  '[{"type": "set", "path": "status", "value": "done"}]')
        return self.store.update(coll, item_id, payload["ops"]).result()


EVENTS = {"created": "create", "updated": "update", "deleted": "delete"}


def matches(config: dict[str, Any], change: Change) -> bool:
    """Whether a ``stream`` trigger's config covers a change."""
    meta = change.meta
    return (config.get("stream_name") == meta.get("stream_name")
            and config.get("group_id") in (None, meta.get("group_id"))
            and config.get("item_id") in (None, change.key))


def change_payload(change: Change) -> dict[str, Any]:
    """What a ``stream`` trigger's function receives: the message subscribers get (iii's
    wrapper), with ``old_value`` and ``new_value`` beside it."""
    old = unpack(change.old) if change.old else None
    new = unpack(change.new) if change.new else None
    kind = EVENTS[change.event]
    return {"type": "stream", "timestamp": change.ts, "streamName": change.meta["stream_name"],
            "groupId": change.meta["group_id"], "id": change.key,
            "event": {"type": kind, "data": old if kind == "delete" else new},
            "old_value": old, "new_value": new}


def lane(change: Change) -> str:
    return "\n".join((change.meta["stream_name"], change.meta["group_id"], change.key))
