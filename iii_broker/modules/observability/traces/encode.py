"""OTLP request bodies written straight in protobuf's wire format (no SDK objects).

A run's span is noted as a :data:`RunNote` tuple on the handler's thread; a log record is
the logs part's dict. The export thread turns a batch of either into the bytes of one
``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest`` (opentelemetry-proto's
messages, field numbers as in its ``.proto`` files; tests/observability/test_otlp_encode.py
decodes what this writes with opentelemetry-proto). Written by hand because making
protobuf message objects from Python costs ~20 µs a span even with upb, and most of a run's
attributes repeat from span to span: their encoded bytes are cached.
"""

from __future__ import annotations

import json
import struct
import traceback
from typing import Any, NamedTuple

SCOPE = "iii_broker"
SERVER, CONSUMER = 2, 5  # Span.SpanKind
STATUS_ERROR = 2
SPAN_FLAGS = 0x100 | 0x200
"""The parent's ``is_remote`` is known (0x100) and true (0x200): a run's parent span is the
caller's, in another process (or none: a root)."""
ROOT_FLAGS = 0x100
MAX_ATTRIBUTES = 128
"""A log record's attributes past this many are dropped (the SDK's default limit)."""
CACHE_MAX = 4096
"""Encoded attributes kept for reuse (cleared when full)."""
PRIMITIVE = (str, bool, int, float)
STRING = "\0string"
"""The cache's key for a plain string field (no attribute has this key)."""
INT64 = (-(1 << 63), (1 << 63) - 1)

_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
_fixed32 = struct.Struct("<I").pack
_BYTE = [bytes((i,)) for i in range(128)]


class RunNote(NamedTuple):
    """A finished run's span, as the handler's thread notes it (cheap to make)."""
    trace_id: str
    span_id: str
    parent_span_id: str | None
    function_id: str
    start_ns: int
    end_ns: int
    invocation_id: str
    attempt: int
    trigger_type: str
    kind: str
    worker_id: str
    rerun_of: str | None
    queue: str | None
    error: BaseException | ErrorNote | None
    final: bool


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` already encodes the number and wire type 2)."""
    return tag + _varint(len(payload)) + payload


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "replace")


def any_value(v: Any) -> bytes:
    """An attribute value or a body as an AnyValue: scalars as they are, the rest (and
    integers past int64) as JSON text."""
    if isinstance(v, str):
        return _field(b"\x0a", _utf8(v))
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int) and INT64[0] <= v <= INT64[1]:
        return b"\x18" + _varint(v & 0xFFFFFFFFFFFFFFFF)
    if isinstance(v, float):
        return b"\x21" + _double(v)
    try:
        text = json.dumps(v, default=str)
    except (TypeError, ValueError):
        text = str(v)
    return _field(b"\x0a", _utf8(text))


def key_value(key: str, value: Any) -> bytes:
    """A KeyValue message's bytes."""
    return _field(b"\x0a", _utf8(key)) + _field(b"\x12", any_value(value))


def _text(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # noqa: BLE001
        return repr(type(error))


class ErrorNote(NamedTuple):
    """A run's exception as its span shows it (text only: it travels to the telemetry
    writer process)."""
    type: str
    """The exception's class, qualified with its module (``builtins`` aside)."""
    message: str
    stacktrace: str
    status: str
    """The span's status description: ``<class name>: <message>``."""


def error_note(error: BaseException | ErrorNote) -> ErrorNote:
    """What the span of a run that raised ``error`` shows of it."""
    if isinstance(error, ErrorNote):
        return error
    cls = type(error)
    name = cls.__qualname__
    if cls.__module__ and cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    try:
        stack = "".join(traceback.format_exception(cls, error, error.__traceback__))
    except Exception:  # noqa: BLE001 - a broken __str__ never stops the batch
        stack = ""
    message = _text(error)
    return ErrorNote(name, message, stack, f"{cls.__name__}: {message}")


def exception_event(error: BaseException | ErrorNote, time_ns: int) -> bytes:
    """The ``exception`` event OpenTelemetry's ``record_exception`` makes (an Event's bytes)."""
    note = error_note(error)
    parts = [b"\x09", _fixed64(time_ns), _field(b"\x12", b"exception")]
    for k, v in (("exception.type", note.type), ("exception.message", note.message),
                 ("exception.stacktrace", note.stacktrace), ("exception.escaped", "False")):
        parts.append(_field(b"\x1a", key_value(k, v)))
    return b"".join(parts)


def _request(resource: bytes, items: list[bytes]) -> bytes:
    """ExportTraceServiceRequest / ExportLogsServiceRequest around one scope's items (both
    nest resource (1) + scope list (2), and scope (1) + items (2), the same way)."""
    scoped = _field(b"\x0a", _field(b"\x0a", SCOPE.encode())) + b"".join(items)
    return _field(b"\x0a", _field(b"\x0a", resource) + _field(b"\x12", scoped))


class Encoder:
    """Writes request bodies for one process's resource (see the module)."""

    def __init__(self, resource_attributes: Any) -> None:
        self.resource = b"".join(_field(b"\x0a", key_value(k, v))
                                 for k, v in resource_attributes.items())
        self._cache: dict[tuple[bytes, str, Any], bytes] = {}
        """Encoded attribute fields by (tag, key, value); each key's values are of one type
        (``1 == True`` would otherwise mix them up)."""

    def _attr(self, key: str, value: Any, tag: bytes = b"\x4a") -> bytes:
        """An attribute field (a span's: 9; a log record's: 6, ``tag`` b"\\x32"), cached:
        most repeat from run to run."""
        cached = self._cache.get((tag, key, value))
        if cached is None:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            cached = self._cache[(tag, key, value)] = _field(tag, key_value(key, value))
        return cached

    def _string(self, tag: bytes, text: str) -> bytes:
        """A string field (a span's name, a record's severity text), cached."""
        cached = self._cache.get((tag, STRING, text))
        if cached is None:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            cached = self._cache[(tag, STRING, text)] = _field(tag, _utf8(text))
        return cached

    def spans_request(self, notes: list[RunNote]) -> bytes:
        """One OTLP/HTTP body holding ``notes`` as spans."""
        return _request(self.resource, [_field(b"\x12", self.span(n)) for n in notes])

    def span(self, n: RunNote) -> bytes:
        """A Span message's bytes."""
        attr = self._attr
        job = n.kind == "job"
        parts = [b"\x0a\x10", bytes.fromhex(n.trace_id), b"\x12\x08", bytes.fromhex(n.span_id)]
        if n.parent_span_id:
            parts += (b"\x22\x08", bytes.fromhex(n.parent_span_id))
        parts += (self._string(b"\x2a", n.function_id),  # the name
                  b"\x30\x05" if job else b"\x30\x02",
                  b"\x39", _fixed64(n.start_ns), b"\x41", _fixed64(n.end_ns),
                  attr("iii.function_id", n.function_id),
                  _field(b"\x4a", key_value("iii.invocation_id", n.invocation_id)),
                  attr("iii.attempt", n.attempt), attr("iii.trigger_type", n.trigger_type),
                  attr("iii.kind", n.kind))
        if n.worker_id:
            parts.append(attr("iii.worker_id", n.worker_id))
        if n.rerun_of:
            parts.append(attr("iii.rerun_of", n.rerun_of))
        if n.queue:
            parts.append(attr("iii.queue", n.queue))
        if job:
            parts += (attr("messaging.system", "iii"),
                      attr("messaging.operation.type", "process"),
                      attr("messaging.destination.name", n.queue or ""),
                      _field(b"\x4a", key_value("messaging.message.id", n.invocation_id)))
        error = n.error
        if error is not None:
            if not n.final:
                parts.append(attr("iii.retried", True))
            note = error_note(error)
            parts.append(_field(b"\x5a", exception_event(note, n.end_ns)))
            status = _field(b"\x12", _utf8(note.status))
            parts.append(_field(b"\x7a", status + b"\x18\x02"))
        parts += (b"\x85\x01", _fixed32(SPAN_FLAGS if n.parent_span_id else ROOT_FLAGS))
        return b"".join(parts)

    def logs_request(self, records: list[dict[str, Any]]) -> tuple[bytes, int]:
        """One OTLP/HTTP body holding ``records`` (the logs part's shape) as log records, and
        how many were dropped as malformed (a severity outside OTel's 0..24, say)."""
        items = []
        malformed = 0
        for record in records:
            try:
                items.append(_field(b"\x12", self.log_record(record)))
            except Exception:  # noqa: BLE001 - one bad record is dropped, not the batch
                malformed += 1
        return _request(self.resource, items), malformed

    def log_record(self, record: dict[str, Any]) -> bytes:
        """A LogRecord message's bytes."""
        severity = record.get("severity_number") or 0
        if not isinstance(severity, int) or not 0 <= severity <= 24:
            raise ValueError(f"severity_number {severity!r} is not OpenTelemetry's (0..24)")
        when = record.get("timestamp_unix_nano") or 0
        parts = [b"\x09", _fixed64(when), b"\x59", _fixed64(when)]
        if severity:
            parts += (b"\x10", _BYTE[severity])
        if record.get("severity_text"):
            parts.append(self._string(b"\x1a", str(record["severity_text"])))
        body = record.get("body")
        if body is not None:
            parts.append(_field(b"\x2a", any_value(
                body if isinstance(body, PRIMITIVE) else str(body))))
        count = 0
        for k, v in (record.get("attributes") or {}).items():
            if v is not None and count < MAX_ATTRIBUTES:
                parts.append(_field(b"\x32", key_value(str(k), v)))
                count += 1
        if record.get("function_id"):
            parts.append(self._attr("iii.function_id", str(record["function_id"]), b"\x32"))
        if record.get("invocation_id"):
            parts.append(_field(b"\x32", key_value("iii.invocation_id",
                                                    str(record["invocation_id"]))))
        trace_id, span_id = record.get("trace_id"), record.get("span_id")
        if trace_id and span_id:
            parts += (b"\x45", _fixed32(1), _field(b"\x4a", bytes.fromhex(trace_id)),
                      _field(b"\x52", bytes.fromhex(span_id)))
        return b"".join(parts)
