"""The invocation and reply envelopes: JSON bodies, W3C trace context in headers.

An invocation body is ``{invocation_id, function_id, payload, deadline, attempt,
metadata}``; ``deadline`` is a Unix time in milliseconds (``None`` for fire and
forget). A reply body is ``{invocation_id, result}`` or ``{invocation_id, error}``.
Nothing here ever unpickles: a body that is not JSON is refused.

Payloads and results have a size and a depth limit (:class:`Limits`, from
``III_PAYLOAD_MAX_BYTES`` and ``III_PAYLOAD_MAX_DEPTH``), checked on the encoded body
where a call enters and again where a worker reads it: a structure nested deeper than
Python's recursion limit cannot even be decoded, and one that can may still break the
code that walks it.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import IIIError, PayloadError, PayloadLimitExceeded
from .settings import MAX_PAYLOAD_DEPTH, Settings

CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Limits:
    """The largest (``max_bytes``, encoded as JSON) and deepest (``max_depth`` levels of
    arrays and objects) payload or result a call may carry."""

    max_bytes: int
    max_depth: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.payload_max_bytes, settings.payload_max_depth)

    def check(self, body: str | bytes, what: str, *, values: tuple[Any, ...] | None = None,
              frame: int = 0) -> None:
        """Raise :class:`PayloadError` naming ``what`` and the limit when ``body`` (JSON
        text; ASCII when we encoded it, so characters are bytes) is too large, or when the
        ``values`` it carries nest deeper than ``max_depth``. ``frame`` is how many
        brackets the body has besides those of ``values`` (its own object, ...).

        Cheap for the common body: its length, and two ``str.count`` calls — a depth
        of d needs d opening brackets, so only a body with more brackets than the limit
        has its ``values`` walked (iteratively). With ``values`` None only the size and
        that bound are checked (the caller decodes, then calls :meth:`check_depth`)."""
        if len(body) > self.max_bytes:
            raise PayloadLimitExceeded(
                f"{what} is {len(body)} bytes encoded as JSON, over the limit of "
                f"{self.max_bytes} bytes (III_PAYLOAD_MAX_BYTES)")
        if values is None:
            return
        if isinstance(body, str):
            brackets = body.count("[") + body.count("{")
        else:
            brackets = body.count(b"[") + body.count(b"{")
        if brackets - frame > self.max_depth:
            for value in values:
                self.check_depth(value, what)

    def check_depth(self, value: Any, what: str) -> None:
        """Raise :class:`PayloadError` when ``value`` nests deeper than ``max_depth``."""
        if depth_exceeds(value, self.max_depth):
            raise too_deep(what, self.max_depth)


def too_deep(what: str, limit: int) -> PayloadLimitExceeded:
    return PayloadLimitExceeded(f"{what} is nested deeper than the limit of {limit} levels of "
                        "arrays and objects (III_PAYLOAD_MAX_DEPTH)")


def depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` has more than ``limit`` levels of lists, tuples and dicts;
    walks iteratively (any depth, cycles included), stopping at the first level past the
    limit."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, (list, tuple)):
            continue
        depth += 1
        if depth > limit:
            return True
        for child in item:
            if isinstance(child, (dict, list, tuple)):
                push((child, depth))
    return False


def dumps(value: Any, *, what: str = "payload", limits: Limits | None = None) -> str:
    """Serialize ``value`` as strict JSON; raises :class:`PayloadError` naming ``what``
    (:class:`PayloadLimitExceeded` when it is nested too deeply to encode, or with
    ``limits``, when it is too large or too deep)."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise too_deep(what, limits.max_depth if limits else MAX_PAYLOAD_DEPTH) from None
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} is not JSON-serializable: {_explain(value, exc)}") from None
    if limits is not None:
        limits.check(text, what, values=(value,))
    return text


def _explain(value: Any, exc: Exception) -> str:
    try:
        bad = _find_bad(value, "$", set())
    except RecursionError:
        return "it is nested too deeply"
    return f"{bad} ({exc})" if bad else str(exc)


def _find_bad(value: Any, path: str, seen: set[int]) -> str | None:
    if isinstance(value, (list, tuple, dict)):
        if id(value) in seen:
            return f"{path} refers back to itself (a circular reference)"
        seen = seen | {id(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} is {value!r}"
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if found := _find_bad(item, f"{path}[{i}]", seen):
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return f"{path} has a key of type {type(key).__name__}"
            if found := _find_bad(item, f"{path}.{key}", seen):
                return found
        return None
    return f"{path} is a {type(value).__name__}"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Invocation:
    """One call of one function, as carried in a message body."""

    function_id: str
    payload: Any = None
    invocation_id: str = field(default_factory=lambda: os.urandom(16).hex())
    deadline: int | None = None
    attempt: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self, limits: Limits | None = None) -> str:
        """The message body; raises :class:`PayloadError` when the payload or metadata is
        not JSON or (with ``limits``) is too large or too deep."""
        body = {
            "invocation_id": self.invocation_id,
            "function_id": self.function_id,
            "payload": self.payload,
            "deadline": self.deadline,
            "attempt": self.attempt,
            "metadata": self.metadata,
        }
        try:
            text = json.dumps(body, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError):
            dumps(self.payload, what=f"payload for {self.function_id!r}", limits=limits)
            dumps(self.metadata, what=f"metadata for {self.function_id!r}", limits=limits)
            raise
        if limits is not None:
            # The body's own object and the metadata's give it two brackets of its own.
            limits.check(text, f"payload for {self.function_id!r}",
                         values=(self.payload, self.metadata), frame=2)
        return text

    @classmethod
    def from_body(cls, body: bytes | str, content_type: str | None,
                  limits: Limits | None = None) -> Invocation:
        """Parse a message body; raises :class:`PayloadError` on anything but our JSON, and
        (with ``limits``) on a body too large or a payload or metadata too deep."""
        if content_type != CONTENT_TYPE:
            raise PayloadError(f"content type {content_type!r} refused: only {CONTENT_TYPE}")
        if limits is not None:
            limits.check(body, "the message body")
        try:
            data = json.loads(body)
        except RecursionError:
            limit = limits.max_depth if limits else MAX_PAYLOAD_DEPTH
            raise too_deep("the message body", limit) from None
        except MemoryError:
            raise PayloadLimitExceeded(f"body is too large to be decoded ({len(body)} bytes)") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PayloadError("body is not a JSON object")
        fid, iid = data.get("function_id"), data.get("invocation_id")
        if not isinstance(fid, str) or not isinstance(iid, str):
            raise PayloadError("body lacks function_id or invocation_id")
        deadline, attempt = data.get("deadline"), data.get("attempt", 1)
        if deadline is not None and not isinstance(deadline, int):
            raise PayloadError("deadline must be an integer (Unix ms) or null")
        if not isinstance(attempt, int) or attempt < 1:
            raise PayloadError("attempt must be a positive integer")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise PayloadError("metadata must be an object")
        payload = data.get("payload")
        if limits is not None:  # only the body's own object is sure to be there
            limits.check(body, f"payload for {fid!r}", values=(payload, metadata), frame=1)
        return cls(fid, payload, iid, deadline, attempt, metadata)


def reply_body(invocation_id: str, *, result: Any = None, error: IIIError | None = None) -> str:
    """The JSON reply for a finished invocation."""
    if error is not None:
        return dumps({"invocation_id": invocation_id, "error": error.to_dict()}, what="error")
    return dumps({"invocation_id": invocation_id, "result": result}, what="result")


def parse_reply(body: bytes | str) -> tuple[str, Any, IIIError | None]:
    """``(invocation_id, result, error)`` from a reply body."""
    data = json.loads(body)
    error = data.get("error")
    return data["invocation_id"], data.get("result"), (
        IIIError.from_dict(error) if error is not None else None
    )
