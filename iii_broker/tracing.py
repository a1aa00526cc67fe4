"""W3C trace context (``traceparent``) carried in every invocation's headers.

A call made inside a handler continues the handler's trace; a call made outside
any handler starts a new one.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

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
        return SpanContext(self.trace_id, secrets.token_hex(8), self.flags)

    @classmethod
    def new_root(cls) -> SpanContext:
        ids = secrets.token_hex(24)  # one read of the system's randomness for both ids
        return cls(ids[:32], ids[32:])

    @classmethod
    def parse(cls, traceparent: str | None) -> SpanContext | None:
        """The span context in a ``traceparent`` header, or None when absent or malformed."""
        if not traceparent:
            return None
        m = _TRACEPARENT.match(traceparent.strip().lower())
        if not m or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
            return None
        return cls(m.group(1), m.group(2), m.group(3))


_ambient: Callable[[], SpanContext | None] | None = None


def set_ambient(source: Callable[[], SpanContext | None] | None) -> None:
    """Where calls made outside any run find their parent span: the observability module
    points it at OpenTelemetry's current span (a web request's, a cron fire's)."""
    global _ambient
    _ambient = source


def ambient_span() -> SpanContext | None:
    """The current span of the process's tracer, if one is set and active."""
    source = _ambient
    if source is None:
        return None
    try:
        return source()
    except Exception:  # noqa: BLE001 - tracing never fails a call
        return None
