"""iii's browser stream protocol (iii-reference §3, streams): the frames a client sends and
the messages the server sends back.

Client → server::

    {"type": "join",  "data": {"subscriptionId", "streamName", "groupId", "id"?}}
    {"type": "leave", "data": {"subscriptionId", ...}}

Server → client: the wrapper ``{"type": "stream", "timestamp", "streamName", "groupId",
"id", "event"}`` (its ``event`` a ``sync``, ``create``, ``update``, ``delete``, ``event`` or
``unauthorized``), and, for a frame the server cannot use, ``{"type": "error", "error":
{"code", "message"}}`` — the socket stays open after an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

INVALID_FRAME = "invalid_frame"
"""The frame is not JSON, not an object, or binary."""
UNKNOWN_TYPE = "unknown_type"
"""The frame's ``type`` is neither ``join`` nor ``leave``."""
INVALID_FIELD = "invalid_field"
"""A field is missing or of the wrong kind."""
NOT_SUBSCRIBED = "not_subscribed"
"""A ``leave`` names a subscription this socket does not have."""


class ProtocolError(Exception):
    """A frame the server cannot use; answered with an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Subscription:
    """One subscription of a socket: a whole group, or one item of it (``item_id``)."""

    subscription_id: str
    stream_name: str
    group_id: str
    item_id: str | None = None

    @property
    def target(self) -> tuple[str, str] | tuple[str, str, str]:
        """What it listens to: (stream, group) or (stream, group, item)."""
        if self.item_id is None:
            return (self.stream_name, self.group_id)
        return (self.stream_name, self.group_id, self.item_id)


@dataclass(frozen=True)
class Join:
    subscription: Subscription


@dataclass(frozen=True)
class Leave:
    subscription_id: str


def parse_frame(text: str) -> Join | Leave:
    """A client's text frame; raises :class:`ProtocolError`."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(INVALID_FRAME, "the frame is not JSON") from None
    if not isinstance(frame, dict):
        raise ProtocolError(INVALID_FRAME, "a frame is a JSON object with 'type' and 'data'")
    kind = frame.get("type")
    if kind not in ("join", "leave"):
        raise ProtocolError(UNKNOWN_TYPE, f"unknown frame type {_shown(kind)}; a client sends "
                            "'join' or 'leave'")
    data = frame.get("data")
    if not isinstance(data, dict):
        raise ProtocolError(INVALID_FIELD, f"a {kind} frame needs 'data', an object")
    subscription_id = _text(data, "subscriptionId", kind)
    if kind == "leave":
        return Leave(subscription_id)
    item_id = data.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not item_id):
        raise ProtocolError(INVALID_FIELD, f"'id' of a join is an item id (a non-empty string) "
                            f"or absent, not {_shown(item_id)}")
    return Join(Subscription(subscription_id, _text(data, "streamName", kind),
                             _text(data, "groupId", kind), item_id))


def _text(data: dict[str, Any], key: str, kind: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(INVALID_FIELD, f"a {kind} frame needs data.{key}, a non-empty "
                            f"string (got {_shown(value)})")
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def encode(message: dict[str, Any]) -> str:
    """A server message as the text frame that carries it."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def wrapper(sub: Subscription, event: dict[str, Any], timestamp_ms: int) -> dict[str, Any]:
    """The wrapper of a message about ``sub``'s group or item."""
    return {"type": "stream", "timestamp": timestamp_ms, "streamName": sub.stream_name,
            "groupId": sub.group_id, "id": sub.item_id, "event": event}


def sync(sub: Subscription, data: Any, timestamp_ms: int) -> str:
    """The ``sync`` sent on join (and after an outage): the group's items as a list of values,
    or the item's value."""
    return encode(wrapper(sub, {"type": "sync", "data": data}, timestamp_ms))


def unauthorized(sub: Subscription, timestamp_ms: int) -> str:
    """A ``stream:join`` handler refused the subscription."""
    return encode(wrapper(sub, {"type": "unauthorized"}, timestamp_ms))


def error(code: str, message: str, subscription_id: str | None = None) -> str:
    """An error about a frame (or a subscription); the socket stays open."""
    err: dict[str, Any] = {"code": code, "message": message}
    if subscription_id is not None:
        err["subscriptionId"] = subscription_id
    return encode({"type": "error", "error": err})
