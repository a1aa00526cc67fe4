"""Each process's part of the cluster's figures: the runs' observer, and the reporter thread
that adds this process's counts to Redis about once a second.

The observer (on the handler's thread) only updates :data:`~iii_broker.observe.METRICS`, a
dict under a lock. The reporter's own thread takes what was counted since its last round
and adds it to the hash ``Keys.metrics`` with ``HINCRBYFLOAT`` in one MULTI/EXEC; this
process's gauges go, whole, to its field of ``Keys.metric_gauges``. While Redis is away the
increments wait in memory (one number per series, so the buffer never grows with time) and
go with the first round that succeeds; a crash loses at most the last second's counts.

With a port (``metrics_port``, ``III_METRICS_PORT``) the process also serves its own
cumulative figures as Prometheus text (prometheus-client's HTTP server).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Any

from ....errors import IIIError, InvocationFailed
from ....observe import DURATION_BUCKETS, METRICS, Labels, Observer, Run
from ....outage import is_outage, store_outage
from ..options import observed
from .series import Series, families, field_of, gauge_series

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..host import TelemetryHost

log = logging.getLogger("iii.observability")

_BOUNDS = [repr(float(b)) for b in DURATION_BUCKETS] + ["+Inf"]
"""The ``le`` label of each bucket (as ``METRICS.observe`` writes it), +Inf last."""
MAX_UNCOUNTED = 200_000
"""Runs ended and not counted yet (a second's worth, many times over); older ones are
dropped past it rather than grow without bound."""
REPORT_EVERY_S = 1.0
"""How often a process adds its counts to the cluster's."""
GAUGES_TTL_S = 60
"""The gauges hash expires this long after its last write (every process gone)."""
BUSY_SLOTS = 'iii_worker_slots{state="busy"}'
"""The gauge of this process's running handlers (workers' and engines')."""


def error_code(error: BaseException) -> str:
    """The error code a failed run counts under: an :class:`IIIError`'s own, else
    ``invocation_failed``."""
    return error.code if isinstance(error, IIIError) else InvocationFailed.code


def _tally(groups: dict[Any, list[float]], key: Any, value: float) -> None:
    """Count one value under ``key``: ``groups[key]`` is [how many, their sum]."""
    g = groups.get(key)
    if g is None:
        groups[key] = [1.0, value]
    else:
        g[0] += 1.0
        g[1] += value


class MetricsObserver(Observer):
    """Notes each run as it finishes (one per process, shared by its workers): a deque
    append on the handler's thread; the reporter's thread counts them (:meth:`count`)."""

    def __init__(self, reporter: MetricsReporter) -> None:
        self.reporter = reporter
        self.running: set[Run] = set()
        self.ended: deque[Run] = deque(maxlen=MAX_UNCOUNTED)

    def start(self, run: Run) -> None:
        self.running.add(run)

    def finish(self, run: Run) -> None:
        self.running.discard(run)
        self.ended.append(run)

    def count(self) -> None:
        """Reporter's thread: add the runs that ended since the last call to ``METRICS``.
        Runs are first grouped by what their series share (function, status, error code,
        duration bucket), so each run costs one small tuple and one dict update; the
        series are made per group."""
        ended, on = self.ended, self.reporter.t.options.metrics
        runs: dict[tuple[str, str, str | None, int], list[float]] = {}
        queued: dict[tuple[str, int], list[float]] = {}
        while ended:
            try:
                run = ended.popleft()
            except IndexError:
                break
            if not on or not observed(run.function_id):
                continue
            if run.kind == "job" and run.attempt == 1 and run.queue and run.enqueued_ms:
                wait = max(0.0, (run.started_ms - run.enqueued_ms) / 1000.0)
                _tally(queued, (run.queue, bisect_left(DURATION_BUCKETS, wait)), wait)
            d = run.duration_s
            _tally(runs, (run.function_id, run.status,
                          None if run.error is None else error_code(run.error),
                          bisect_left(DURATION_BUCKETS, d)), d)
        if not runs and not queued:
            return
        counts: dict[Series, float] = {}

        def add(series: Series, value: float) -> None:
            counts[series] = counts.get(series, 0.0) + value

        def observe(name: str, base: Labels, at: int, n: float, total: float) -> None:
            add((f"{name}_bucket", (*base, ("le", _BOUNDS[at]))), n)
            add((f"{name}_sum", base), total)
            add((f"{name}_count", base), n)

        for (function, status, code, at), (n, total) in runs.items():
            add(("iii_invocations_total", (("function", function), ("status", status))), n)
            observe("iii_invocation_duration_seconds", (("function", function),), at, n, total)
            if code is not None:
                add(("iii_invocation_errors_total", (("code", code), ("function", function))),
                    n)
        for (queue, at), (n, total) in queued.items():
            observe("iii_queued_to_started_seconds", (("queue", queue),), at, n, total)
        METRICS.add(counts)

    def flush(self, timeout_s: float) -> None:
        self.reporter.flush(timeout_s)

    def close(self) -> None:
        """Nothing: the reporter serves the whole process (other workers may still run)."""


class MetricsReporter:
    """The metrics part of one process's telemetry (see the module docstring)."""

    def __init__(self, t: TelemetryHost) -> None:
        self.t = t
        self._observer = MetricsObserver(self)
        self._pending: dict[Series, float] = {}
        """Counted here, not yet added to Redis (Redis away)."""
        self.totals: dict[Series, float] = {}
        """Everything this process counted since it started (its own port's figures)."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._rounds = 0
        self._round_done = threading.Condition()
        self._thread: threading.Thread | None = None
        self._outage = store_outage(t.settings)
        self._warned = False
        self.server: Any = None

    # -- life --------------------------------------------------------------------------

    def start(self) -> None:
        if self.t.kind in ("worker", "engine"):
            METRICS.gauge_source(BUSY_SLOTS, lambda: len(self._observer.running))
        self._thread = threading.Thread(target=self._loop, name="iii-metrics", daemon=True)
        self._thread.start()
        if self.t.options.metrics_port:
            self.serve(self.t.options.metrics_port)

    def observer(self) -> Observer | None:
        return self._observer

    def flush(self, timeout_s: float) -> None:
        """Add what was counted so far to Redis now; wait at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._round_done:
            wanted = self._rounds + 2  # a round that began after this call
            self._wake.set()
            while self._rounds < wanted and self._thread is not None and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._round_done.wait(left)
                self._wake.set()

    def close(self) -> None:
        """At process exit: a last round, then this process's gauges are taken away."""
        if self._stop.is_set():
            return
        self.flush(1.0)
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)  # a round under way would write the gauges again
        try:
            self.t.store.hdel(self.t.keys.metric_gauges, self.t.process_id)
        except Exception:  # noqa: BLE001 - Redis away: the engine's duty drops it later
            pass
        if self.server is not None:
            self.server.shutdown()

    # -- the rounds ----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(REPORT_EVERY_S)
            self._wake.clear()
            try:
                self.report()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any surprise
                log.warning("metrics: a round failed (%s: %s)", type(exc).__name__, exc)
            with self._round_done:
                self._rounds += 1
                self._round_done.notify_all()

    def report(self) -> bool:
        """One round: this process's increments and gauges to Redis; True when stored."""
        self._observer.count()
        taken = METRICS.take()
        if not self.t.options.metrics:
            return True  # counted while metrics are off: dropped
        with self._lock:
            for series, value in taken.items():
                self.totals[series] = self.totals.get(series, 0.0) + value
                self._pending[series] = self._pending.get(series, 0.0) + value
            pending = dict(self._pending)
        gauges = METRICS.gauges()
        if not pending and not gauges:
            return True
        keys = self.t.keys
        try:
            pipe = self.t.store.pipeline(transaction=True)
            for series, value in pending.items():
                pipe.hincrbyfloat(keys.metrics, field_of(series), value)
            if gauges:
                pipe.hset(keys.metric_gauges, self.t.process_id, json.dumps(
                    {"at": int(time.time() * 1000), "kind": self.t.kind, "gauges": gauges}))
                pipe.expire(keys.metric_gauges, GAUGES_TTL_S)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - kept for the next round
            if is_outage(exc):
                self._outage.failed(exc)
            elif not self._warned:
                self._warned = True
                log.warning("metrics: adding this process's counts to Redis failed (%s: %s); "
                            "kept for the next round", type(exc).__name__, exc)
            return False
        with self._lock:
            for series, value in pending.items():
                left = self._pending.get(series, 0.0) - value
                if left:
                    self._pending[series] = left
                else:
                    self._pending.pop(series, None)
        self._outage.recovered()
        return True

    # -- this process's own port -----------------------------------------------------------

    def serve(self, port: int) -> None:
        """Serve this process's own figures on ``port`` (the web process's interface,
        ``III_HTTP_HOST``); a port in use is a warning, never a crash."""
        from prometheus_client import CollectorRegistry, start_http_server  # when asked for

        registry = CollectorRegistry(auto_describe=False)
        registry.register(ProcessCollector(self))
        try:
            self.server, _ = start_http_server(port, addr=self.t.settings.http_host,
                                               registry=registry)
        except OSError as exc:
            log.warning("metrics: cannot serve this process's figures on %s:%d (%s); going on "
                        "without (the web process's /_iii/metrics has the cluster's)",
                        self.t.settings.http_host, port, exc.strerror or exc)
            return
        log.info("metrics: this process's figures on http://%s:%d/metrics",
                 self.t.settings.http_host, port)


class ProcessCollector:
    """This process's cumulative figures and its gauges, read at each scrape."""

    def __init__(self, reporter: MetricsReporter) -> None:
        self.reporter = reporter

    def collect(self) -> list[Metric]:
        with self.reporter._lock:
            totals = dict(self.reporter.totals)
        gauges: dict[Series, float] = {}
        for name, value in METRICS.gauges().items():
            series = gauge_series(name)
            if series is not None:
                gauges[series] = value
        return families(totals, gauges)
