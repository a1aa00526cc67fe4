"""What the parts of a process's telemetry see of it (:class:`~.telemetry.Telemetry`,
which makes the parts, is typed here rather than imported by them)."""

from __future__ import annotations

from typing import Any, Protocol

from ...settings import Settings
from ...store import Keys
from .options import ObservabilityOptions


class TelemetryHost(Protocol):
    """One process's telemetry, as its parts (traces, logs, history, metrics) use it."""

    kind: str
    """``worker``, ``engine``, ``web``, ``beat`` or ``stream``."""
    settings: Settings
    options: ObservabilityOptions
    """The cluster's settings, as last read from Redis."""
    keys: Keys
    store: Any
    """A Redis client of the process's own (decode_responses)."""
    process_id: str
    tracing: Any
    writer: Any
    """The worker's :class:`~.writer.ProcessWriter`, or None (the parts write themselves)."""
    """The traces part (its ``emit_log`` takes log records while it exports)."""
