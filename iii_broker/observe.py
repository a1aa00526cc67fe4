"""What a running invocation tells the observability module, and the process's counters.

Every invocation a worker runs (a call, a Void call, one attempt of a queued job) is a
:class:`Run`. Before its handler starts, each :class:`Observer` the modules provide sees
:meth:`Observer.start` (a tracing observer may give the run a span of its own there), and
after it ends :meth:`Observer.finish`, with ``status``, ``duration_s`` and ``result`` or
``error`` set. Observers are called on the handler's own thread: they must only take
note (a deque append, a counter) and leave any I/O to a thread of their own.

Where a call came from travels in its message headers beside W3C ``traceparent``:

``iii-trigger``   the trigger type that made the call (``http``, ``cron``, ``state``...);
                  absent for a plain ``trigger()`` call
``iii-quiet``     ``1``: logs of this run (and of the calls it makes) fire no ``log``
                  triggers, so a log handler never triggers itself, even through a chain
``iii-rerun-of``  the invocation id this call runs again (``iii-broker invocations rerun``)

:data:`METRICS` holds this process's counters; modules add to it (``METRICS.inc``) and the
observability module adds them to the cluster's figures in Redis about once a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .tracing import SpanContext

log = logging.getLogger("iii.observe")

TRIGGER_HEADER = "iii-trigger"
QUIET_HEADER = "iii-quiet"
RERUN_HEADER = "iii-rerun-of"

CALL = "call"
"""The trigger type of a run nobody's trigger made: a ``trigger()`` call."""

_trigger_type: ContextVar[str | None] = ContextVar("iii_trigger_type", default=None)


@contextmanager
def triggered_by(trigger_type: str) -> Iterator[None]:
    """Calls made inside carry ``trigger_type`` as the trigger that made them."""
    token = _trigger_type.set(trigger_type)
    try:
        yield
    finally:
        _trigger_type.reset(token)


def current_trigger_type() -> str | None:
    return _trigger_type.get()


_rerun_of: ContextVar[str | None] = ContextVar("iii_rerun_of", default=None)


@contextmanager
def rerunning(invocation_id: str) -> Iterator[None]:
    """Calls made inside run ``invocation_id`` again: they carry ``iii-rerun-of``."""
    token = _rerun_of.set(invocation_id)
    try:
        yield
    finally:
        _rerun_of.reset(token)


@dataclass(slots=True, eq=False)
class Run:
    """One invocation as a worker runs it (one attempt of a queued job)."""

    function_id: str
    invocation_id: str
    attempt: int
    span: SpanContext
    """The run's own span; its ``trace_id`` is the trace the whole chain shares."""
    parent_span_id: str | None = None
    trigger_type: str = CALL
    kind: str = "sync"
    """``sync`` (a caller waits), ``void`` (fire and forget) or ``job`` (a queued job)."""
    queue: str | None = None
    payload: Any = None
    quiet: bool = False
    rerun_of: str | None = None
    worker_id: str = ""
    enqueued_ms: int | None = None
    """Queued jobs: when the job was enqueued (its queued-to-started time)."""
    started_ms: int = 0
    started: float = 0.0
    """``time.perf_counter()`` at the start."""
    duration_s: float = 0.0
    status: str = "running"
    """``running``, then ``succeeded`` or ``failed``."""
    result: Any = None
    error: BaseException | None = None
    final: bool = True
    """False for a failed attempt of a queued job that will be retried."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Observers' own per-run state (a span to end, a context token to detach)."""

    @classmethod
    def of(cls, function_id: str, invocation_id: str, attempt: int, headers: Any, *,
           kind: str, worker_id: str, payload: Any = None, trigger_type: str | None = None,
           queue: str | None = None) -> Run:
        """The run of an invocation whose message carried ``headers``."""
        h = headers if isinstance(headers, dict) else {}
        traceparent = h.get("traceparent")
        parent = SpanContext.parse(traceparent) if isinstance(traceparent, str) else None
        span = parent.child() if parent else SpanContext.new_root()
        ttype = trigger_type or h.get(TRIGGER_HEADER) or CALL
        rerun = h.get(RERUN_HEADER)
        return cls(function_id, invocation_id, attempt, span,
                   parent.span_id if parent else None, str(ttype), kind, queue, payload,
                   quiet=h.get(QUIET_HEADER) == "1" or ttype == "log",
                   rerun_of=rerun if isinstance(rerun, str) else None, worker_id=worker_id)


class Observer:
    """Sees every run of one process. The methods must not block and must not raise."""

    def start(self, run: Run) -> None:
        """Before the handler, on its thread; may replace ``run.span``."""

    def finish(self, run: Run) -> None:
        """After the handler, on its thread, with the outcome set."""

    def flush(self, timeout_s: float) -> None:
        """Push out what is buffered (a worker draining); wait at most ``timeout_s``."""

    def close(self) -> None:
        """The process is exiting."""


class Observers:
    """The observers of one process, called in order; a failing observer is logged once
    and never fails a run."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = list(observers)
        # Only those that look at runs are called for each (a flush-only one is not).
        self._starting = [o for o in self.observers if type(o).start is not Observer.start]
        self._finishing = [o for o in reversed(self.observers)
                           if type(o).finish is not Observer.finish]
        self._warned: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.observers)

    def start(self, run: Run) -> None:
        run.started_ms = int(time.time() * 1000)
        run.started = time.perf_counter()
        for o in self._starting:
            try:
                o.start(run)
            except Exception as exc:  # noqa: BLE001 - telemetry never fails a call
                self._warn(o, exc)

    def finish(self, run: Run, result: Any = None, error: BaseException | None = None) -> None:
        run.duration_s = time.perf_counter() - run.started
        run.result, run.error = result, error
        run.status = "failed" if error is not None else "succeeded"
        for o in self._finishing:
            try:
                o.finish(run)
            except Exception as exc:  # noqa: BLE001
                self._warn(o, exc)

    def flush(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for o in self.observers:
            try:
                o.flush(max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001
                self._warn(o, exc)

    def close(self) -> None:
        for o in self.observers:
            try:
                o.close()
            except Exception as exc:  # noqa: BLE001
                self._warn(o, exc)

    def _warn(self, observer: Observer, exc: Exception) -> None:
        if id(observer) not in self._warned:
            self._warned.add(id(observer))
            log.warning("%s failed (%s: %s); the call goes on", type(observer).__name__,
                        type(exc).__name__, exc, exc_info=exc)


# -- metrics --------------------------------------------------------------------------

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the duration histograms; ``+Inf`` is implied."""

Labels = tuple[tuple[str, str], ...]


class Metrics:
    """This process's counters and histograms since the last :meth:`take`.

    ``inc`` and ``observe`` cost a dict update under a lock; :meth:`take` hands the
    increments to whoever adds them to the cluster's figures (and starts again from zero).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, Labels], float] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    def gauge_source(self, name: str, read: Callable[[], float]) -> None:
        """A gauge of this process (``iii_stream_connections``): ``read()`` is asked for its
        value each time the figures are stored; the cluster's value is the sum over the
        processes that stored one lately."""
        self._gauges[name] = read

    def gauges(self) -> dict[str, float]:
        """Every gauge of this process, read now (a failing source is left out)."""
        out: dict[str, float] = {}
        for name, read in list(self._gauges.items()):
            try:
                out[name] = float(read())
            except Exception:  # noqa: BLE001 - a gauge never fails the flush
                continue
        return out

    def inc(self, name: str, labels: dict[str, str] | None = None, value: float = 1.0) -> None:
        key = (name, tuple(sorted(labels.items())) if labels else ())
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + value

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None,
                buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        """One value of the histogram ``name``: its ``_bucket`` (per ``le``), ``_sum`` and
        ``_count`` series."""
        base = tuple(sorted(labels.items())) if labels else ()
        le = next((b for b in buckets if value <= b), None)
        bound = "+Inf" if le is None else repr(float(le))
        with self._lock:
            counts = self._counts
            key = (f"{name}_bucket", base + (("le", bound),))
            counts[key] = counts.get(key, 0.0) + 1
            key = (f"{name}_sum", base)
            counts[key] = counts.get(key, 0.0) + value
            key = (f"{name}_count", base)
            counts[key] = counts.get(key, 0.0) + 1

    def add(self, counts: dict[tuple[str, Labels], float]) -> None:
        """Add many series' increments at once (one lock), keyed as :meth:`take` gives them."""
        with self._lock:
            own = self._counts
            for key, value in counts.items():
                own[key] = own.get(key, 0.0) + value

    def take(self) -> dict[tuple[str, Labels], float]:
        """The increments since the last call (non-cumulative buckets: one per value)."""
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def give_back(self, counts: dict[tuple[str, Labels], float]) -> None:
        """Return increments that could not be stored (Redis away), to go with the next."""
        with self._lock:
            for key, value in counts.items():
                self._counts[key] = self._counts.get(key, 0.0) + value


METRICS = Metrics()
"""The process's own counters (see :class:`Metrics`)."""
