"""iii's worker protocol frames as the gateway reads and writes them
(``../shared/iii-protocol.md``): one JSON object per text frame, ``type`` its kind,
absent fields left out.

:func:`parse` checks what the gateway relies on and raises :class:`FrameError` naming
the problem; a frame of a type it does not know comes back as it is (iii ignores those).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import IIIError

TELEMETRY_PREFIXES = (b"OTLP", b"LOGS", b"MTRC")
"""The 4-byte prefixes of the SDKs' telemetry frames (binary: the prefix, then OTLP JSON)."""

# What each frame the gateway acts on must carry: field -> its JSON type(s).
_STR = (str,)
REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    "registerfunction": {"id": _STR},
    "unregisterfunction": {"id": _STR},
    "registertrigger": {"id": _STR, "trigger_type": _STR, "function_id": _STR},
    "unregistertrigger": {"id": _STR},
    "registertriggertype": {"id": _STR},
    "unregistertriggertype": {"id": _STR},
    "triggerregistrationresult": {"id": _STR},
    "invokefunction": {"function_id": _STR},
    "invocationresult": {"invocation_id": _STR},
    "reattach": {"previous_worker_id": _STR},
}
# Optional fields with a type to respect when present.
OPTIONAL: dict[str, dict[str, tuple[type, ...]]] = {
    "registerfunction": {"description": _STR, "metadata": (dict,)},
    "registertrigger": {"config": (dict,), "metadata": (dict,)},
    "registertriggertype": {"description": _STR},
    "invokefunction": {"invocation_id": _STR, "action": (dict,), "metadata": (dict,),
                       "traceparent": _STR},
    "reattach": {"reattach_token": _STR},
}


class FrameError(IIIError):
    """A frame the gateway cannot act on: not JSON, not an object, or missing a field."""

    code = "invalid_message"

    def __init__(self, message: str, frame: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.frame = frame
        """The decoded frame, when it was a JSON object (to answer its call, if any)."""


def parse(text: str | bytes) -> dict[str, Any]:
    """The frame as a dict; raises :class:`FrameError` naming what is wrong with it."""
    try:
        frame = json.loads(text)
    except RecursionError:
        raise FrameError("the frame is nested too deeply to be decoded") from None
    except ValueError as exc:
        raise FrameError(f"the frame is not JSON ({exc})") from None
    if not isinstance(frame, dict):
        raise FrameError(f"a frame must be a JSON object, not {type(frame).__name__}")
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise FrameError("the frame has no 'type' (a string naming the message)", frame)
    for name, types in REQUIRED.get(kind, {}).items():
        value = frame.get(name)
        if not isinstance(value, types) or (types is _STR and not value):
            raise FrameError(f"{kind} needs {name!r} (a non-empty {_what(types)})", frame)
    for name, types in OPTIONAL.get(kind, {}).items():
        value = frame.get(name)
        if value is not None and not isinstance(value, types):
            raise FrameError(f"{kind}: {name!r} must be a {_what(types)}, not "
                             f"{type(value).__name__}", frame)
    return frame


def _what(types: tuple[type, ...]) -> str:
    return "string" if types is _STR else "JSON object"


def encode(frame: dict[str, Any]) -> str:
    """A frame as the SDKs send them: compact, UTF-8 (not ASCII-escaped)."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def error_frame(code: str, message: str) -> str:
    """iii's error frame (the SDKs ignore it; it says why in the wire log)."""
    return encode({"type": "error", "error": {"code": code, "message": message}})


def result_frame(invocation_id: str, function_id: str, *, result: Any = None,
                 error: IIIError | None = None) -> str:
    """An ``invocationresult``: ``result``, or ``error`` as ``{code, message, stacktrace?}``."""
    frame: dict[str, Any] = {"type": "invocationresult", "invocation_id": invocation_id,
                             "function_id": function_id}
    if error is not None:
        body = {"code": error.code, "message": error.message}
        if error.stacktrace:
            body["stacktrace"] = error.stacktrace
        frame["error"] = body
    else:
        frame["result"] = result
    return encode(frame)
