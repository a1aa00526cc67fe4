"""One process's telemetry: its options, its Redis client and the four parts.

Every process type has exactly one :class:`Telemetry` (:func:`telemetry`), made by the
first hook that needs it (``process_started``, or a worker's ``observer``): the tracer
(:mod:`.traces`), the log capture (:mod:`.logs`), the invocation history recorder
(:mod:`.history`, workers and engines only) and the metrics reporter (:mod:`.metrics`).
Each part starts its own thread where it writes, so a handler's thread only takes note.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

from ...observe import Observer
from ...settings import Settings
from ...store import Keys, connect_store
from .history import History
from .logs import Logs
from .metrics import MetricsReporter
from .options import MODULE, ObservabilityOptions
from .traces import Tracing
from .writer import ProcessWriter

log = logging.getLogger("iii.observability")

RUNS_INVOCATIONS = ("worker", "engine", "gateway")
"""The process types whose observers see invocations (and so record history)."""
WRITES_ELSEWHERE = ("worker", "gateway")
"""The process types whose telemetry I/O goes to a writer process (:mod:`.writer`)."""
REFRESH_S = 5.0
"""How often a process reads the cluster's observability settings again."""

_current: Telemetry | None = None
_current_lock = threading.Lock()


class Telemetry:
    """The telemetry of this process (see the module docstring)."""

    def __init__(self, kind: str, settings: Settings, options: ObservabilityOptions) -> None:
        self.kind = kind
        self.settings = settings
        self.options = options
        self.keys = Keys(settings.namespace)
        self.store: Any = connect_store(settings)
        self.process_id = f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.tracing: Any = None
        self.writer: Any = None
        self.logs: Any = None
        self.history: Any = None
        self.metrics: Any = None
        self._stop = threading.Event()

    # -- life -----------------------------------------------------------------------

    def start(self) -> None:
        self.refresh()
        if not self.options.enabled:
            log.info("observability is off for this cluster ([modules.observability] "
                     "enabled = false)")
            return
        if self.kind in WRITES_ELSEWHERE and self.options.writer == "process":
            self.writer = ProcessWriter(self.settings)
        self.tracing = Tracing(self)
        self.logs = Logs(self)
        self.history = History(self) if self.kind in RUNS_INVOCATIONS else None
        self.metrics = MetricsReporter(self)
        for part in self.parts():
            part.start()
        threading.Thread(target=self._refresh_every, name="iii-observability-settings",
                         daemon=True).start()

    def parts(self) -> list[Any]:
        return [p for p in (self.tracing, self.logs, self.history, self.metrics) if p is not None]

    def observers(self) -> list[Observer]:
        """The observers of this process's runs: the tracer's first (it may give the run
        its span), then the history's and the metrics'."""
        if not self.options.enabled:
            return []  # the engine's settings file turned the module off for the cluster
        found = [p.observer() for p in self.parts() if hasattr(p, "observer")]
        if self.writer is not None:  # last: what the parts flushed into it goes out
            found.append(WriterFlusher(self.writer))
        return [o for o in found if o is not None]

    def flush(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for part in self.parts():
            part.flush(timeout_s)
        if self.writer is not None:
            self.writer.flush(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        for part in self.parts():
            part.close()
        if self.writer is not None:
            self.writer.close()

    # -- settings ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Take the cluster's settings (written by the engine) when Redis has them."""
        try:
            shared, enabled = self.store.mget(self.keys.observability, self.keys.modules)
        except Exception:  # noqa: BLE001 - Redis away: keep what we have
            return
        options = self.options.with_shared(shared)
        try:
            if enabled is not None and MODULE not in json.loads(enabled):
                # the engine's file turned it off: parts that started before the engine said
                # so (a worker up first) see every switch off from now on
                options = replace(options, enabled=False, logs=False, history=False,
                                  metrics=False)
        except (ValueError, TypeError):
            pass
        self.options = options

    def _refresh_every(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self.refresh()


class WriterFlusher(Observer):
    """Sees no run; on a drain, after the parts' own flushes, waits for the writer process
    to store what they handed it (the process's writer outlives one worker: no close)."""

    def __init__(self, writer: ProcessWriter) -> None:
        self.writer = writer

    def flush(self, timeout_s: float) -> None:
        self.writer.flush(timeout_s)


def telemetry(kind: str, settings: Settings, options: ObservabilityOptions) -> Telemetry:
    """This process's telemetry, made and started on first use (the first caller's
    ``kind`` names the process). A process that moves to another cluster (another
    namespace or Redis: ``iii_broker.testing.run`` one test after another) gets a new
    one, and the old one is closed: its records would otherwise go on to the old
    namespace."""
    global _current
    current = _current
    if current is not None and _same_cluster(current.settings, settings):
        return current
    with _current_lock:
        if _current is not None and not _same_cluster(_current.settings, settings):
            old, _current = _current, None
            log.info("observability: this process now serves namespace %r (its telemetry "
                     "for %r is closed)", settings.namespace, old.settings.namespace)
            old.close()
        if _current is None:
            t = Telemetry(kind, settings, options)
            t.start()
            atexit.register(t.close)  # what is buffered goes out as the process exits
            _current = t
        return _current


def _same_cluster(a: Settings, b: Settings) -> bool:
    return a.namespace == b.namespace and a.redis_url == b.redis_url


def current() -> Telemetry | None:
    """This process's telemetry, if it was started."""
    return _current
