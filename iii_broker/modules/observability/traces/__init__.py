"""Spans: one per invocation, the web process's requests, beat's cron fires.

Where spans go is chosen once, as the process starts (:func:`exporter_choice`): OTLP over
HTTP, the console, or nowhere (the default). With nowhere, nothing of OpenTelemetry's SDK
is imported and the worker gets no tracing observer: it costs nothing. With an exporter,
:class:`~.otel.Otel` holds the process's tracer (and logger, for the logs part's records)
and :class:`RunSpans` gives every run a span that continues its caller's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ....observe import Observer, Run
from ....tracing import SpanContext, set_ambient, set_producer
from .otel import METRICS_PATH, Otel

if TYPE_CHECKING:
    from flask import Flask

    from ...hosts import WebHost
    from ..host import TelemetryHost

log = logging.getLogger("iii.observability")

OTLP = "otlp"
CONSOLE = "console"
SKIPPED_PREFIX = "engine::"
"""Runs of the engine's built-ins get no span: its own polling (registration, lists) would
fill the exporter with one-span traces. What they call continues their caller's span."""


def exporter_choice(exporter: str, env: Mapping[str, str] | None = None) -> str | None:
    """Where spans go: ``otlp``, ``console`` or None (nowhere), from the module's
    ``exporter`` setting and, for ``auto``, the standard OTEL_* variables."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or exporter == "none":
        return None
    if exporter in (OTLP, CONSOLE):
        return exporter
    named = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if OTLP in named:
        return OTLP
    if CONSOLE in named:
        return CONSOLE
    if "none" in named:
        return None
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return OTLP
    return None


class Tracing:
    """This process's tracer, when spans go anywhere (``self.otel``), else nothing."""

    def __init__(self, t: TelemetryHost) -> None:
        self.t = t
        self.otel: Otel | None = None
        self._observer: RunSpans | None = None
        self.emit_log: Callable[[dict[str, Any]], None] | None = None
        """Set when exporting: hands one log record (the logs part's shape) to the
        exporter as an OTel log record; never raises. None otherwise, so the logs part
        keeps no export buffer for nothing."""

    @property
    def exporting(self) -> bool:
        return self.otel is not None

    def start(self) -> None:
        choice = exporter_choice(self.t.options.exporter)
        if choice is None:
            return
        try:
            self.otel = Otel(choice, service_name=self.t.options.service_name, kind=self.t.kind,
                             process_id=self.t.process_id, writer=self.t.writer)
        except Exception as exc:  # noqa: BLE001 - a broken exporter never stops a process
            log.warning("tracing is off: cannot set up the %s exporter (%s: %s)", choice,
                        type(exc).__name__, exc)
            return
        set_ambient(self.otel.current_span)
        set_producer(self.otel.producer_span)
        self._observer = RunSpans(self.otel)
        self.emit_log = None if self.otel.logs_elsewhere else self.otel.emit_log
        log.info("tracing: spans (and log records) exported to %s", self.otel.destination)

    def observer(self) -> Observer | None:
        return self._observer

    def flush(self, timeout_s: float) -> None:
        if self.otel is not None:
            self.otel.flush(timeout_s)

    def close(self) -> None:
        """The process is exiting: export what is left, stop the export threads."""
        otel, self.otel = self.otel, None
        self.emit_log = None
        if otel is not None:
            set_ambient(None)
            set_producer(None)
            otel.shutdown()


class RunSpans(Observer):
    """A span per run, child of the span in the run's ``traceparent`` (see :meth:`start`)."""

    def __init__(self, otel: Otel) -> None:
        self.otel = otel

    def start(self, run: Run) -> None:
        """Start the run's span and make it current: ``run.span`` becomes it, so nested
        calls (and the user's own OpenTelemetry spans) are its children."""
        if run.function_id.startswith(SKIPPED_PREFIX):
            if run.parent_span_id:  # no span of its own: what it calls continues its caller's
                run.span = SpanContext(run.span.trace_id, run.parent_span_id, run.span.flags)
            return
        self.otel.start_run(run)

    def finish(self, run: Run) -> None:
        self.otel.finish_run(run)

    def flush(self, timeout_s: float) -> None:
        self.otel.flush(timeout_s)

    def close(self) -> None:
        """Nothing: the tracer is the process's (several workers may share it); it shuts
        down as the process exits."""


def web_setup(app: Flask, web: WebHost, t: TelemetryHost) -> None:
    """A span per request (opentelemetry-instrumentation-flask), continuing the request's
    ``traceparent``; the route's calls continue it (``ambient_span``). Not ``/_iii/metrics``."""
    otel = getattr(t.tracing, "otel", None)
    if otel is None:
        return
    try:
        otel.instrument_flask(app, excluded=[METRICS_PATH])
    except Exception as exc:  # noqa: BLE001
        log.warning("no request spans: cannot instrument the web app (%s: %s)",
                    type(exc).__name__, exc)


__all__ = ["Tracing", "exporter_choice", "web_setup"]
