"""W3C trace context (``traceparent``) carried in every invocation's headers.

A call made inside a handler continues the handler's trace; a call made outside
any handler starts a new one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from random import getrandbits
from typing import Any

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True)
class SpanContext:
    trace_id: str
    span_id: str
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> SpanContext:
        """A new span in the same trace."""
        return SpanContext(self.trace_id, _span_id(), self.flags)

    @classmethod
    def new_root(cls) -> SpanContext:
        return cls(f"{getrandbits(128) or 1:032x}", _span_id())

    @classmethod
    def parse(cls, traceparent: str | None) -> SpanContext | None:
        """The span context in a ``traceparent`` header, or None when absent or malformed."""
        if not traceparent:
            return None
        m = _TRACEPARENT.match(traceparent.strip().lower())
        if not m or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
            return None
        return cls(m.group(1), m.group(2), m.group(3))


def _span_id() -> str:
    # Ids need to be unique, not secret: Python's generator (reseeded in a forked child), as
    # OpenTelemetry's SDK does, costs a tenth of a read of the system's randomness.
    return f"{getrandbits(64) or 1:016x}"


_ambient: Callable[[], SpanContext | None] | None = None


def set_ambient(source: Callable[[], SpanContext | None] | None) -> None:
    """Where calls made outside any run find their parent span: the observability module
    points it at OpenTelemetry's current span (a web request's, a cron fire's)."""
    global _ambient
    _ambient = source


def ambient_span() -> SpanContext | None:
    """The span that calls made outside any run continue: one made current by
    :func:`continuing`, else the current span of the process's tracer, if one is set."""
    resumed = _continued.get()
    if resumed is not None:
        return resumed
    source = _ambient
    if source is None:
        return None
    try:
        return source()
    except Exception:  # noqa: BLE001 - tracing never fails a call
        return None


_producer: Callable[[str, dict[str, Any]], AbstractContextManager[SpanContext | None]] | None = None
_continued: ContextVar[SpanContext | None] = ContextVar("iii_continued_span", default=None)


def set_producer(source: Callable[[str, dict[str, Any]],
                                  AbstractContextManager[SpanContext | None]] | None) -> None:
    """How :func:`producer_span` makes a span: the observability module's tracer."""
    global _producer
    _producer = source


@contextmanager
def producer_span(name: str, attributes: dict[str, Any]) -> Iterator[SpanContext | None]:
    """A span of the process's tracer around sending work nobody's run asked for (a cron
    fire), current inside so the calls made there continue it. Yields its span context,
    or None when no tracer is set (or it failed: tracing never fails the work)."""
    source = _producer
    manager = None
    span = None
    if source is not None:
        try:
            manager = source(name, attributes)
            span = manager.__enter__()
        except Exception:  # noqa: BLE001 - tracing never fails the work
            manager = None
    try:
        yield span
    finally:
        if manager is not None:
            try:
                manager.__exit__(None, None, None)
            except Exception:  # noqa: BLE001
                pass


@contextmanager
def continuing(span: SpanContext | None) -> Iterator[None]:
    """Calls made inside (outside any run) continue ``span``: for work a span started that
    goes on on another thread (a cron fire's call made when its condition answers)."""
    if span is None:
        yield
        return
    token = _continued.set(span)
    try:
        yield
    finally:
        _continued.reset(token)
