"""The invocation and reply envelopes: JSON bodies, W3C trace context in headers.

An invocation body is ``{invocation_id, function_id, payload, deadline, attempt,
metadata}``; ``deadline`` is a Unix time in milliseconds (``None`` for fire and
forget). A reply body is ``{invocation_id, result}`` or ``{invocation_id, error}``.
Nothing here ever unpickles: a body that is not JSON is refused.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import IIIError, PayloadError

CONTENT_TYPE = "application/json"


def dumps(value: Any, *, what: str = "payload") -> str:
    """Serialize ``value`` as strict JSON; raises :class:`PayloadError` naming ``what``."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(f"{what} is not JSON-serializable: {_explain(value, exc)}") from None


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

    def to_json(self) -> str:
        body = {
            "invocation_id": self.invocation_id,
            "function_id": self.function_id,
            "payload": self.payload,
            "deadline": self.deadline,
            "attempt": self.attempt,
            "metadata": self.metadata,
        }
        try:
            return json.dumps(body, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError):
            dumps(self.payload, what=f"payload for {self.function_id!r}")
            dumps(self.metadata, what=f"metadata for {self.function_id!r}")
            raise

    @classmethod
    def from_body(cls, body: bytes | str, content_type: str | None) -> Invocation:
        """Parse a message body; raises :class:`PayloadError` on anything but our JSON."""
        if content_type != CONTENT_TYPE:
            raise PayloadError(f"content type {content_type!r} refused: only {CONTENT_TYPE}")
        try:
            data = json.loads(body)
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
        return cls(fid, data.get("payload"), iid, deadline, attempt, metadata)


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
