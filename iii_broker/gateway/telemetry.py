"""SDK workers' telemetry frames (``OTLP``, ``LOGS``, ``MTRC`` + OTLP JSON, on ``/otel`` or
the worker socket) into the observability module: log records into the log store, with
their trace and span ids (so ``iii-broker logs --trace`` finds them beside the broker's
own), spans on to the OTLP endpoint the cluster's spans go to (they continue the
``traceparent`` the gateway gave the call, so they join the same traces). Metrics are
dropped: the SDKs report nothing the broker's own metrics do not count.

Best effort, as the SDKs treat it: a bounded queue, written by one thread in batches; a
record that cannot be stored while Redis is away is dropped (and counted in one line).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..modules.observability.logs.record import SEVERITY_TEXT
from ..modules.observability.logs.store import LogStore, line
from ..modules.observability.telemetry import current
from ..modules.observability.traces import OTLP, exporter_choice
from ..modules.observability.traces.otlp import Endpoint
from ..settings import Settings
from ..store import Keys, RedisError, connect_store

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger("iii.gateway")

QUEUE_LIMIT = 10_000
BATCH = 200
CALLS_REMEMBERED = 10_000
"""Traces whose calls forwarded to SDK workers are remembered, to put log records under."""
WINDOWS_PER_TRACE = 64


class Window:
    """When a call forwarded to an SDK worker ran (Unix ns, the gateway's clock)."""

    __slots__ = ("end_ns", "function_id", "invocation_id", "start_ns")

    def __init__(self, function_id: str, invocation_id: str, start_ns: int) -> None:
        self.function_id = function_id
        self.invocation_id = invocation_id
        self.start_ns = start_ns
        self.end_ns: int | None = None

    def contains(self, other: Window) -> bool:
        return self.start_ns <= other.start_ns and (
            self.end_ns is None or (other.end_ns is not None and other.end_ns <= self.end_ns))


class TelemetrySink:
    """Takes telemetry frames from any socket thread; stores and sends them from its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = LogStore(connect_store(settings), Keys(settings.namespace))
        self._queue: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._spans: Endpoint | None = None
        self._calls: OrderedDict[str, list[Window]] = OrderedDict()
        self.dropped = 0

    def note_call(self, trace_id: str, function_id: str,
                  invocation_id: str) -> Callable[[], None]:
        """A call is forwarded to an SDK worker in this trace (any thread); returns what
        to call when it ended."""
        call = Window(function_id, invocation_id, time.time_ns())
        calls = self._calls
        windows = calls.get(trace_id)
        if windows is None:
            windows = calls[trace_id] = []
            if len(calls) > CALLS_REMEMBERED:
                try:
                    calls.popitem(last=False)
                except KeyError:
                    pass
        windows.append(call)
        del windows[:-WINDOWS_PER_TRACE]

        def ended() -> None:
            call.end_ns = time.time_ns()
        return ended

    def attribute(self, record: dict[str, Any]) -> None:
        """Put an SDK log record that names no function under the forwarded call of its
        trace that was running when it was made: the only one, or the innermost of calls
        nested in one another (one SDK handler calling another). Left without one when
        calls of its trace ran side by side."""
        windows = self._calls.get(record["trace_id"])
        if not windows:
            return
        at = record["timestamp_unix_nano"]
        running = [w for w in list(windows) if w.start_ns <= at and
                   (w.end_ns is None or at <= w.end_ns)]
        if not running:
            return
        inner = max(running, key=lambda w: w.start_ns)
        if all(w is inner or w.contains(inner) for w in running):
            record["function_id"], record["invocation_id"] = inner.function_id, \
                inner.invocation_id

    def take(self, message: bytes, conn: Connection | None) -> None:
        """One binary frame: a 4-byte prefix, then OTLP JSON."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, daemon=True,
                                                    name="iii-gateway-telemetry")
                    self._thread.start()
        try:
            self._queue.put_nowait((message[:4], message[4:]))
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            while len(items) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._handle(items)
                    return
                items.append(more)
            self._handle(items)

    def _handle(self, items: list[tuple[bytes, bytes]]) -> None:
        t = current()
        options = t.options if t is not None else None
        lines: list[str] = []
        for prefix, body in items:
            try:
                if prefix == b"LOGS":
                    if options is None or (options.enabled and options.logs):
                        records = log_records(json.loads(body))
                        for r in records:
                            if not r["function_id"]:
                                self.attribute(r)
                        lines += [x for r in records if (x := line(r)) is not None]
                elif prefix == b"OTLP":
                    self._send_spans(body, options)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("an SDK worker sent a %s frame that is not OTLP JSON: %s",
                            prefix.decode(), exc)
        if not lines:
            return
        max_count = options.logs_max_count if options else 100_000
        max_age_s = options.logs_max_age_s if options else 7 * 86400
        try:
            self.store.write_lines(max_count, max_age_s, lines)
        except RedisError as exc:
            log.warning("dropped %d SDK log record(s): Redis failed (%s)", len(lines), exc)

    def _send_spans(self, body: bytes, options: Any) -> None:
        if options is None or exporter_choice(options.exporter) != OTLP:
            return
        if self._spans is None:
            self._spans = Endpoint("traces")
            self._spans.headers["Content-Type"] = "application/json"
        try:
            self._spans.post(body)
        except Exception as exc:  # noqa: BLE001 - best effort, as the SDK's own export
            log.warning("could not send SDK spans to %s: %s", self._spans.url, exc)


def log_records(data: dict[str, Any]) -> list[dict[str, Any]]:
    """OTLP JSON ``resourceLogs`` as the log store's records (iii's log record shape)."""
    out = []
    for resource_logs in data.get("resourceLogs") or []:
        resource = attributes((resource_logs.get("resource") or {}).get("attributes"))
        service = str(resource.get("service.name") or "iii-sdk")
        for scope_logs in resource_logs.get("scopeLogs") or []:
            for r in scope_logs.get("logRecords") or []:
                attrs = attributes(r.get("attributes"))
                severity = int(r.get("severityNumber") or 9)
                at_ns = int(r.get("timeUnixNano") or r.get("observedTimeUnixNano") or 0)
                out.append({
                    "timestamp_unix_nano": at_ns,
                    "severity_number": severity,
                    "severity_text": str(r.get("severityText") or
                                         SEVERITY_TEXT.get(severity - (severity - 1) % 4, "INFO")),
                    "body": _plain(r.get("body")),
                    "attributes": attrs,
                    "trace_id": str(r.get("traceId") or "").lower(),
                    "span_id": str(r.get("spanId") or "").lower(),
                    "service_name": str(attrs.get("service.name") or service),
                    "function_id": str(attrs.get("function_id") or ""),
                    "invocation_id": str(attrs.get("invocation_id") or ""),
                    "quiet": False,
                })
    return out


def attributes(items: Any) -> dict[str, Any]:
    """An OTLP JSON attribute list as a plain dict."""
    return {a["key"]: _plain(a.get("value")) for a in items or [] if isinstance(a, dict)
            and isinstance(a.get("key"), str)}


def _plain(value: Any) -> Any:
    """An OTLP JSON ``AnyValue`` as a plain JSON value (a string body stays a string)."""
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_plain(v) for v in (value["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in value:
        return attributes((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None
