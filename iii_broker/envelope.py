"""Kombu's Redis message envelope: the one encoder and the one decoder.

On a Redis broker Kombu keeps each message as a JSON envelope on a list: ``body`` (base64
when ``properties.body_encoding`` says so), ``content-type``, ``content-encoding``,
``headers`` and ``properties`` (``delivery_info {exchange, routing_key}``,
``delivery_tag``, ``reply_to``, ``correlation_id``, ...). iii-broker writes that format
itself where it skips Kombu's producer (replies and calls pushed straight onto a known
queue, durable jobs claimed by script) and reads it where it skips Kombu's consumer (reply
queues, claimed jobs); everything else goes through Kombu, which reads and writes the
same thing. Job messages keep their body as plain JSON so that they read as such in Redis.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import PayloadError
from .message import CONTENT_TYPE

_COMPACT = (",", ":")


@dataclass(frozen=True)
class Envelope:
    """A decoded envelope: the body as text, and what travels with it."""

    body: str
    content_type: str | None
    headers: dict[str, Any]
    properties: dict[str, Any]


def encode(body: str, *, exchange: str, routing_key: str,
           headers: dict[str, Any] | None = None, reply_to: str | None = None,
           correlation_id: str | None = None, delivery_mode: int = 1,
           delivery_tag: str | None = None, base64_body: bool = True) -> str:
    """The envelope of a JSON ``body``, as Kombu's ``Producer.publish`` writes it (priority 0).
    ``base64_body=False`` leaves the body readable (durable jobs).

    Every call and every reply builds one, so it is written from a template rather than
    by ``json.dumps`` of nested dicts: only the values vary, each escaped by json's own
    string encoder (the same text ``json.dumps`` makes)."""
    if base64_body:
        text = _quote(base64.b64encode(body.encode("utf-8")).decode("ascii"))
        encoding = ', "body_encoding": "base64"'
    else:
        text, encoding = _quote(body), ""
    return _TEMPLATE % (
        text, json.dumps(headers) if headers else "{}",
        "null" if reply_to is None else _quote(reply_to),
        "null" if correlation_id is None else _quote(correlation_id),
        delivery_mode, _quote(exchange), _quote(routing_key), encoding,
        _quote(delivery_tag or str(uuid.uuid4())))


_quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]  # json.dumps(str)
_TEMPLATE = (
    '{"body": %s, "content-encoding": "utf-8", "content-type": "' + CONTENT_TYPE + '", '
    '"headers": %s, "properties": {"reply_to": %s, "correlation_id": %s, "delivery_mode": %d, '
    '"delivery_info": {"exchange": %s, "routing_key": %s}, "priority": 0%s, '
    '"delivery_tag": %s}}'
)


def check(payload: Any) -> None:
    """Raise ValueError unless ``payload`` (a parsed item) has the shape of an envelope."""
    if not isinstance(payload, dict):
        raise ValueError(f"a JSON {type(payload).__name__}, not a Kombu message envelope")
    props = payload.get("properties")
    if not isinstance(props, dict) or not isinstance(props.get("delivery_info"), dict) \
            or "delivery_tag" not in props or "body" not in payload:
        raise ValueError("a JSON object without Kombu's body/properties/delivery_info")


def load(raw: str | bytes) -> dict[str, Any]:
    """An item off a queue as the dict Kombu's transport delivers; raises ValueError (or
    TypeError) unless it has the shape of an envelope. Plain ``json.loads``: envelopes
    carry no Kombu-typed values, and the C scanner without Kombu's object hook is several
    times faster."""
    payload = json.loads(raw)
    check(payload)
    return payload  # type: ignore[no-any-return]


def decode(raw: str | bytes) -> Envelope:
    """Parse an envelope; raises :class:`PayloadError` naming what is wrong with it."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("nested too deeply to be decoded as JSON") from None
    if not isinstance(data, dict) or "body" not in data:
        raise PayloadError("not a Kombu message envelope")
    headers = data.get("headers") or {}
    properties = data.get("properties") or {}
    body = data["body"]
    if not isinstance(body, str) or not isinstance(headers, dict) \
            or not isinstance(properties, dict):
        raise PayloadError("the envelope's body must be a string, and its headers and "
                           "properties objects")
    if properties.get("body_encoding") == "base64":
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise PayloadError(f"the envelope's base64 body cannot be read: {exc}") from None
    return Envelope(body, data.get("content-type"), headers, properties)


def with_body(raw: str, body: str) -> str:
    """The same (plain-bodied) envelope with another body."""
    data = json.loads(raw)
    data["body"] = body
    return json.dumps(data, separators=_COMPACT)
