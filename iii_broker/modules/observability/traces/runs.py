"""Runs' spans and handlers' log records exported over OTLP without the SDK's per-item cost.

On the handler's thread a run's span only takes note: its ids are the ones ``Run.of``
already made (``run.span`` is a fresh child of the caller's span, or a new root), the start
time is noted and a current OpenTelemetry context holding a ``NonRecordingSpan`` of it is
attached (so the user's own OpenTelemetry spans, and calls made outside iii's Context, nest
under the run); at the end the context is detached and a :class:`~.encode.RunNote` tuple
is queued. A log record is queued as it is. The export threads (:mod:`.otlp`) build the
protobuf messages (:mod:`.encode`) and send them.

Sampling: with the default sampler (``parentbased_always_on``) a run is recorded when its
caller's span was sampled (``traceparent`` flags), as the SDK would; any other
``OTEL_TRACES_SAMPLER`` is asked through the SDK's sampler (a few µs more per run).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ....observe import Run
from ....tracing import SpanContext, _span_id
from .encode import Encoder, RunNote, error_note
from .otlp import Endpoint, Exporter, env_int

WRITER_DELAY_MS = 200
"""How often spans go to the writer process (it batches them for the network itself)."""
NOTE = "otel"
"""The key of a run's ``notes`` holding what ``finish_run`` needs."""
DEFAULT_SAMPLERS = ("", "parentbased_always_on")


class ExportedRuns:
    """``start_run`` / ``finish_run`` / ``emit_log`` for OTLP export (see the module)."""

    def __init__(self, resource: Any, sampler: Any = None, *, logs: bool = True,
                 writer: Any = None) -> None:
        """``writer``: a worker's telemetry writer process (:mod:`..writer`), which then
        encodes and sends the spans (and, with ``logs``, the logs part's records, which it
        gets from that part): the spans go to it in frames, none of the log records."""
        from opentelemetry import context, trace
        from opentelemetry.trace import NonRecordingSpan, SpanKind, TraceFlags

        self._attach, self._detach = context.attach, context.detach
        self._set_span, self._empty = trace.set_span_in_context, context.Context()
        self._NonRecordingSpan, self._OtelSpanContext = NonRecordingSpan, trace.SpanContext
        self._flags = {True: TraceFlags(1), False: TraceFlags(0)}
        self._kinds = (SpanKind.SERVER, SpanKind.CONSUMER)
        named = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
        self.sampler = None if named in DEFAULT_SAMPLERS else sampler
        self.encoder = Encoder(resource.attributes)
        if writer is not None:
            writer.otlp = {"resource": dict(resource.attributes), "logs": logs}
            self.spans = Exporter(
                ToWriter(writer), spans_frame,  # type: ignore[arg-type]
                max_queue=env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048), batch=512,
                schedule_delay_ms=WRITER_DELAY_MS)
            self.logs = None
            self.destination = Endpoint("traces").url
            return
        self.spans = Exporter(
            Endpoint("traces"), self._encode_spans,
            max_queue=env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048),
            batch=env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512),
            schedule_delay_ms=env_int("OTEL_BSP_SCHEDULE_DELAY", 5000))
        self.logs = Exporter(
            Endpoint("logs"), self._encode_logs,
            max_queue=env_int("OTEL_BLRP_MAX_QUEUE_SIZE", 2048),
            batch=env_int("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512),
            schedule_delay_ms=env_int("OTEL_BLRP_SCHEDULE_DELAY", 1000)) if logs else None
        self.destination = self.spans.endpoint.url

    # -- the handler's thread ------------------------------------------------------------

    def start_run(self, run: Run) -> None:
        """Note the run's start and make its span current (``run.span`` stays the span
        ``Run.of`` made: a fresh child of the caller's, or a new root)."""
        span = run.span
        sampled = (self._sample(run) if self.sampler is not None
                   else span.flags[-1] in "13579bdf")  # the sampled bit of the flags
        if sampled != (span.flags[-1] in "13579bdf") or span.span_id == run.parent_span_id:
            # (a run made with its caller's span as its own gets an id of its own)
            span_id = _span_id() if span.span_id == run.parent_span_id else span.span_id
            span = run.span = SpanContext(span.trace_id, span_id, "01" if sampled else "00")
        sc = self._OtelSpanContext(trace_id=int(span.trace_id, 16), span_id=int(span.span_id, 16),
                                   is_remote=False, trace_flags=self._flags[sampled])
        token = self._attach(self._set_span(self._NonRecordingSpan(sc), self._empty))
        run.notes[NOTE] = (token, time.time_ns(), span, sampled)

    def finish_run(self, run: Run) -> None:
        """Detach the run's context and queue its span (when sampled)."""
        noted = run.notes.pop(NOTE, None)
        if noted is None:
            return
        token, start_ns, span, sampled = noted
        self._detach(token)
        if sampled:
            self.spans.put(RunNote(
                span.trace_id, span.span_id, run.parent_span_id, run.function_id, start_ns,
                time.time_ns(), run.invocation_id, run.attempt, run.trigger_type, run.kind,
                run.worker_id, run.rerun_of, run.queue, run.error, run.final))

    def _sample(self, run: Run) -> bool:
        """The configured sampler's decision (not the default: see the module)."""
        span, sampler = run.span, self.sampler
        if sampler is None:
            return True
        parent = None
        if run.parent_span_id:
            remote = self._OtelSpanContext(
                trace_id=int(span.trace_id, 16), span_id=int(run.parent_span_id, 16),
                is_remote=True, trace_flags=self._flags[span.flags[-1] in "13579bdf"])
            parent = self._set_span(self._NonRecordingSpan(remote), self._empty)
        try:
            decision = sampler.should_sample(
                parent, int(span.trace_id, 16), run.function_id,
                self._kinds[run.kind == "job"], None)
            return bool(decision.decision.is_sampled())
        except Exception:  # noqa: BLE001 - a broken sampler records (tracing never fails)
            return True

    def emit_log(self, record: dict[str, Any]) -> None:
        """Queue one log record (the logs part's dict, not copied: it is not changed
        after); never raises."""
        if self.logs is not None:
            self.logs.put(record)

    # -- the export threads ----------------------------------------------------------------

    def _encode_spans(self, notes: list[RunNote]) -> bytes:
        return self.encoder.spans_request(notes)

    def _encode_logs(self, records: list[dict[str, Any]]) -> bytes:
        body, malformed = self.encoder.logs_request(records)
        if malformed:
            assert self.logs is not None
            self.logs.dropped += malformed
        return body

    # -- life ----------------------------------------------------------------------------

    def exporters(self) -> list[Exporter]:
        return [e for e in (self.spans, self.logs) if e is not None]


class ToWriter:
    """The span exporter's endpoint when a writer process sends the spans."""

    signal = "traces"
    url = "the telemetry writer process"

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def post(self, body: bytes) -> None:
        self.writer.spans(body)

    def close(self) -> None:
        pass

    def forget(self) -> None:
        pass


def spans_frame(notes: list[RunNote]) -> bytes:
    """The writer's ``s`` frame of finished runs' spans (an error as its ErrorNote)."""
    rows = []
    for n in notes:
        row: list[Any] = list(n)
        if n.error is not None:
            row[-2] = list(error_note(n.error))
        rows.append(row)
    return (json.dumps(["s", rows], separators=(",", ":"), default=str) + "\n").encode()
