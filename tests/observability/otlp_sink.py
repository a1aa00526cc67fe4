"""A real OTLP/HTTP receiver for tests and benches: what a collector would get.

:class:`OtlpSink` serves ``POST /v1/traces`` and ``POST /v1/logs`` (protobuf, plain or
gzip) on 127.0.0.1 from a thread of its own, decodes them with opentelemetry-proto and keeps
the spans (:class:`Span`) and log records; with ``drop=True`` it only counts them (a bench's
endpoint that accepts and drops). ``stall=True`` makes it an endpoint that accepts
connections and never answers (the worst an exporter can meet).

    with OtlpSink() as sink:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
        ...
        spans = sink.wait_for(lambda spans: len(spans) >= 3)
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer",
              5: "consumer"}


def _value(v: Any) -> Any:
    """An OTLP AnyValue as Python."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    events: list[str] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0


@dataclass
class LogRecord:
    trace_id: str | None
    span_id: str | None
    severity_number: int
    severity_text: str
    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]


class OtlpSink:
    """An OTLP/HTTP endpoint on 127.0.0.1 (a free port unless ``port``); see the module."""

    def __init__(self, *, drop: bool = False, stall: bool = False, port: int = 0) -> None:
        self.drop = drop
        self.stall = stall
        self.spans: list[Span] = []
        self.logs: list[LogRecord] = []
        self.span_count = 0
        self.log_count = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="otlp-sink",
                                        daemon=True)

    def __enter__(self) -> OtlpSink:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    # -- reading ----------------------------------------------------------------------

    def wait_for(self, condition: Callable[[list[Span]], Any], timeout: float = 15.0,
                 what: str = "spans") -> Any:
        """Wait until ``condition(spans)`` is truthy (returns it); raises AssertionError
        listing the spans received when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                got = condition(list(self.spans))
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [(s.name, s.trace_id[:8], s.span_id[:8]) for s in self.spans]
                    raise AssertionError(f"timed out waiting for {what}; received {names}")
                self._changed.wait(left)

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    # -- receiving --------------------------------------------------------------------

    def _take_traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        spans = []
        for rs in request.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(Span(
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex() or None, name=s.name,
                        kind=SPAN_KINDS.get(s.kind, str(s.kind)),
                        attributes=_attributes(s.attributes), resource=resource,
                        status_code=s.status.code, events=[e.name for e in s.events],
                        start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano))
        with self._changed:
            self.span_count += len(spans)
            if not self.drop:
                self.spans.extend(spans)
            self._changed.notify_all()

    def _take_logs(self, body: bytes) -> None:
        request = ExportLogsServiceRequest.FromString(body)
        records = []
        for rl in request.resource_logs:
            resource = _attributes(rl.resource.attributes)
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    records.append(LogRecord(
                        trace_id=r.trace_id.hex() or None, span_id=r.span_id.hex() or None,
                        severity_number=r.severity_number, severity_text=r.severity_text,
                        body=_value(r.body), attributes=_attributes(r.attributes),
                        resource=resource))
        with self._changed:
            self.log_count += len(records)
            if not self.drop:
                self.logs.extend(records)
            self._changed.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with sink._lock:
                    sink.requests += 1
                if sink.stall:
                    sink._release.wait()
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                try:
                    if self.path == "/v1/traces":
                        sink._take_traces(body)
                        answer = ExportTraceServiceResponse().SerializeToString()
                    elif self.path == "/v1/logs":
                        sink._take_logs(body)
                        answer = ExportLogsServiceResponse().SerializeToString()
                    else:
                        self._send(404, b"")
                        return
                except Exception:  # noqa: BLE001 - a malformed body: the exporter sees 400
                    self._send(400, b"")
                    return
                self._send(200, answer)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
