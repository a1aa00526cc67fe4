"""The OpenTelemetry side of the tracer: provider, exporter, a run's span, log records.

OpenTelemetry is imported here only when :class:`Otel` is made, so a process that exports
nothing never pays for importing the SDK (or the exporter's ``requests``).

With OTLP, runs' spans and handlers' log records skip the SDK's per-item objects: see
:mod:`.runs` (the hot path only takes note; our own export threads encode and send). The
SDK's provider stays, for the spans the user's code makes, the web process's request spans
and beat's cron fires; with the console exporter runs' spans go through it too.

Nothing here blocks a call: every queue is bounded (``OTEL_BSP_MAX_QUEUE_SIZE``,
``OTEL_BLRP_MAX_QUEUE_SIZE``; 2048 by default) and drops what does not fit; the export
threads do the network I/O.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ....observe import Run
from ....tracing import SpanContext
from .runs import ExportedRuns

log = logging.getLogger("iii.observability")

METRICS_PATH = "/_iii/metrics"
NOTE = "otel"
"""The key of a run's ``notes`` holding its span and the context token to detach."""
PRIMITIVE = (str, bool, int, float)
EXIT_WAIT_S = 2.0
"""How long a process exiting waits for the exporter to send what it holds."""


def _ours(sc: Any) -> SpanContext | None:
    """An OpenTelemetry span context as ours (None when invalid)."""
    if not sc.is_valid:
        return None
    return SpanContext(format(sc.trace_id, "032x"), format(sc.span_id, "016x"),
                       format(int(sc.trace_flags), "02x"))


def _bounded(what: str, fn: Callable[[], Any], timeout_s: float) -> bool:
    """Run ``fn`` on a thread of its own, waiting at most ``timeout_s`` (the SDK's
    force_flush and shutdown ignore their timeouts while an export hangs:
    opentelemetry-python #4568). False when it did not finish in time."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            log.debug("%s failed: %s", what, exc)
        finally:
            done.set()
    threading.Thread(target=run, name=f"iii-otel-{what}", daemon=True).start()
    if done.wait(timeout_s):
        return True
    log.warning("tracing: %s did not finish within %.1fs (is the OTLP endpoint answering?); "
                "what is left is dropped", what, timeout_s)
    return False


def _value(v: Any) -> Any:
    """An attribute value OpenTelemetry takes: a primitive, else its JSON text."""
    if isinstance(v, PRIMITIVE):
        return v
    try:
        return json.dumps(v, default=str)
    except (TypeError, ValueError):
        return str(v)


class Otel:
    """This process's tracer provider (and logger provider) exporting to ``exporter``
    (``otlp``: OTLP over HTTP with protobuf, configured by the OTEL_EXPORTER_OTLP_*
    variables; ``console``: stdout)."""

    def __init__(self, exporter: str, *, service_name: str, kind: str, process_id: str,
                 writer: Any = None) -> None:
        from opentelemetry import context, trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode, TraceFlags

        self._context, self._trace = context, trace
        self._NonRecordingSpan, self._TraceFlags = NonRecordingSpan, TraceFlags
        self._OtelSpanContext = trace.SpanContext
        self._Status, self._ERROR = Status, StatusCode.ERROR
        self._SERVER, self._CONSUMER, self._PRODUCER = (SpanKind.SERVER, SpanKind.CONSUMER,
                                                        SpanKind.PRODUCER)
        self._Context = context.Context
        self.exporter = exporter

        resource = Resource.create({"iii.process": kind, "service.instance.id": process_id})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            # neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names the service
            resource = resource.merge(Resource({"service.name": service_name}))
        self.resource = resource
        span_exporter = self._span_exporter(exporter)
        self.destination = getattr(span_exporter, "_endpoint", None) or exporter
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(span_exporter))
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(self.provider)  # the user's own spans nest in ours
        self.tracer = self.provider.get_tracer("iii_broker")
        self.logger_provider: Any = None
        self.logger: Any = None
        self.runs: ExportedRuns | None = None
        self.logs_elsewhere = False
        """The writer process exports the logs part's records (it gets them from it)."""
        if exporter == "otlp":
            # runs' spans and log records: noted on the calling thread, sent by our threads
            logs = os.environ.get("OTEL_LOGS_EXPORTER", "").strip().lower()
            self.runs = ExportedRuns(resource, self.provider.sampler, logs=logs in ("", "otlp"),
                                     writer=writer)
            self.start_run = self.runs.start_run  # type: ignore[method-assign]
            self.finish_run = self.runs.finish_run  # type: ignore[method-assign]
            self.destination = self.runs.destination
            if logs in ("", "otlp"):
                self.emit_log = self.runs.emit_log  # type: ignore[method-assign]
                self.logs_elsewhere = writer is not None
        if (self.runs is None or self.runs.logs is None) and not self.logs_elsewhere:
            try:
                self._start_logs(exporter, resource)
            except Exception as exc:  # noqa: BLE001 - spans go on without log records
                log.warning("no OpenTelemetry log records: %s: %s", type(exc).__name__, exc)
        self._closed = False
        atexit.register(self.shutdown)

    @staticmethod
    def _span_exporter(exporter: str) -> Any:
        if exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter
            return ConsoleSpanExporter()
        protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        if protocol != "http/protobuf":
            log.warning("OTLP protocol %r is not supported: spans go over http/protobuf "
                        "(port 4318 on a collector)", protocol)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter()

    def _start_logs(self, exporter: str, resource: Any) -> None:
        """Log records through the SDK (the console exporter, or ``OTEL_LOGS_EXPORTER``
        naming neither ``otlp`` nor ``none``)."""
        named = os.environ.get("OTEL_LOGS_EXPORTER", "").strip().lower()
        if named == "none":
            return
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        if exporter == "console" or named == "console":
            from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter
            log_exporter: Any = ConsoleLogRecordExporter()
        else:  # OTEL_LOGS_EXPORTER names one we do not write ourselves: the SDK's
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            log_exporter = OTLPLogExporter()
        self._LogRecord, self._Severity = LogRecord, SeverityNumber
        self.logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
        self.logger = self.logger_provider.get_logger("iii_broker")

    # -- spans ----------------------------------------------------------------------------

    def _remote(self, trace_id: str, span_id: str, flags: str = "01") -> Any:
        """A context whose current span is the remote one (``trace_id``, ``span_id``)."""
        sc = self._OtelSpanContext(trace_id=int(trace_id, 16), span_id=int(span_id, 16),
                                   is_remote=True, trace_flags=self._TraceFlags(int(flags, 16)))
        return self._trace.set_span_in_context(self._NonRecordingSpan(sc), self._Context())

    def start_run(self, run: Run) -> None:
        """(The console exporter's; OTLP's is :meth:`.runs.ExportedRuns.start_run`.)
        Start ``run``'s span, child of its caller's span (a new trace when it has none),
        make it current on this thread and make it ``run.span``."""
        if run.parent_span_id:
            parent = self._remote(run.span.trace_id, run.parent_span_id, run.span.flags)
        else:
            parent = self._Context()  # a root, whatever this thread had current
        attributes: dict[str, Any] = {
            "iii.function_id": run.function_id, "iii.invocation_id": run.invocation_id,
            "iii.attempt": run.attempt, "iii.trigger_type": run.trigger_type,
            "iii.kind": run.kind,
        }
        if run.worker_id:
            attributes["iii.worker_id"] = run.worker_id
        if run.rerun_of:
            attributes["iii.rerun_of"] = run.rerun_of
        job = run.kind == "job"
        if run.queue:
            attributes["iii.queue"] = run.queue
        if job:
            attributes.update({"messaging.system": "iii", "messaging.operation.type": "process",
                               "messaging.destination.name": run.queue or "",
                               "messaging.message.id": run.invocation_id})
        span = self.tracer.start_span(run.function_id, context=parent,
                                      kind=self._CONSUMER if job else self._SERVER,
                                      attributes=attributes)
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        run.notes[NOTE] = (span, token)
        ours = _ours(span.get_span_context())
        if ours is not None:
            run.span = ours

    def finish_run(self, run: Run) -> None:
        """End ``run``'s span (an error status and the exception when it failed)."""
        noted = run.notes.pop(NOTE, None)
        if noted is None:
            return
        span, token = noted
        try:
            if run.error is not None:
                span.record_exception(run.error)
                span.set_status(self._Status(self._ERROR,
                                             f"{type(run.error).__name__}: {run.error}"))
                if not run.final:
                    span.set_attribute("iii.retried", True)
            span.end()
        finally:
            self._context.detach(token)

    def current_span(self) -> SpanContext | None:
        """The current OpenTelemetry span of this thread (a web request's), as ours."""
        return _ours(self._trace.get_current_span().get_span_context())

    @contextmanager
    def producer_span(self, name: str, attributes: dict[str, Any]) -> Iterator[SpanContext | None]:
        """A new trace's root span (PRODUCER: it sends work), current inside."""
        root = self._Context()
        span = self.tracer.start_span(name, context=root, kind=self._PRODUCER,
                                      attributes={k: _value(v) for k, v in attributes.items()})
        token = self._context.attach(self._trace.set_span_in_context(span, root))
        try:
            yield _ours(span.get_span_context())
        finally:
            self._context.detach(token)
            span.end()

    # -- log records ----------------------------------------------------------------------

    def emit_log(self, record: dict[str, Any]) -> None:
        """(The console exporter's; OTLP's is :meth:`.runs.ExportedRuns.emit_log`.)
        One record of the logs part (``{timestamp_unix_nano, severity_number,
        severity_text, body, attributes, trace_id, span_id, function_id, ...}``) as an
        OpenTelemetry log record; never raises."""
        if self.logger is None:
            return
        try:
            trace_id, span_id = record.get("trace_id"), record.get("span_id")
            context = self._remote(trace_id, span_id) if trace_id and span_id else None
            attributes = {k: _value(v) for k, v in (record.get("attributes") or {}).items()
                          if v is not None}
            for field in ("function_id", "invocation_id"):
                if record.get(field):
                    attributes[f"iii.{field}"] = record[field]
            severity = record.get("severity_number")
            body = record.get("body")
            self.logger.emit(self._LogRecord(
                timestamp=record.get("timestamp_unix_nano"), context=context,
                severity_number=self._Severity(severity) if severity else None,
                severity_text=record.get("severity_text"),
                body=body if isinstance(body, PRIMITIVE) or body is None else str(body),
                attributes=attributes))
        except Exception as exc:  # noqa: BLE001 - a log record never fails the run
            log.debug("an OpenTelemetry log record was dropped: %s", exc)

    # -- web ------------------------------------------------------------------------------

    def instrument_flask(self, app: Any, excluded: list[str]) -> None:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
        FlaskInstrumentor().instrument_app(app, tracer_provider=self.provider,
                                           excluded_urls=",".join(excluded))

    # -- life -----------------------------------------------------------------------------

    def _providers(self) -> list[Any]:
        return [p for p in (self.provider, self.logger_provider) if p is not None]

    def flush(self, timeout_s: float) -> bool:
        """Export what is buffered, waiting at most ``timeout_s``; False when the exporter
        did not finish in time (it goes on in the background)."""
        deadline = time.monotonic() + timeout_s
        done = True
        for exporter in self.runs.exporters() if self.runs is not None else ():
            if not exporter.flush(max(0.0, deadline - time.monotonic())):
                done = False
                log.warning("tracing: flushing %s did not finish within %.1fs (is the OTLP "
                            "endpoint answering?); what is left is dropped",
                            exporter.endpoint.signal, timeout_s)
        left = max(0.01, deadline - time.monotonic())
        ms = max(1, int(left * 1000))

        def flush_all() -> None:
            for p in self._providers():
                p.force_flush(ms)
        return _bounded("flush", flush_all, left) and done

    def shutdown(self, timeout_s: float = EXIT_WAIT_S) -> None:
        """Export what is left and stop the export threads, waiting at most ``timeout_s``
        (at exit: a hung endpoint never holds a process up)."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        for exporter in self.runs.exporters() if self.runs is not None else ():
            if not exporter.shutdown(max(0.0, deadline - time.monotonic())):
                log.warning("tracing: sending the last %s did not finish within %.1fs; what "
                            "is left is dropped", exporter.endpoint.signal, timeout_s)

        def shutdown_all() -> None:
            for p in self._providers():
                p.shutdown()
        _bounded("shutdown", shutdown_all, max(0.01, deadline - time.monotonic()))
