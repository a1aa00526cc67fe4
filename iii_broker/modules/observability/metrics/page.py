"""The cluster's figures as Prometheus text at ``/_iii/metrics`` (the web process), and the
engine duty that forgets the gauges of processes that are gone.

Each scrape reads Redis: the counts every process added (``Keys.metrics``, summed, the
histograms' buckets made cumulative), the gauges of the processes that stored theirs
lately (``Keys.metric_gauges``, summed), and what is computed there and then: queue depth
and dead letters per queue (as ``iii-broker queues`` reads them), live workers and their
handler slots (the registry).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ....httpapi.responses import error_response
from ....outage import is_outage
from ....queues.amqp import AmqpJobs
from ....queues.store import JobStore
from ....registry import Registry
from .reporter import BUSY_SLOTS
from .series import Series, families, gauge_series, series_of

if TYPE_CHECKING:
    from flask import Flask
    from prometheus_client.metrics_core import Metric

    from ...hosts import WebHost
    from ..host import TelemetryHost

log = logging.getLogger("iii.observability")

FRESH_S = 10.0
"""A process's gauges count while it stored them this recently (it does every second)."""
WORKER = "worker"
"""The registry kind (and process kind) of worker processes."""


def read_gauges(raw: dict[str, str], now_ms: int) -> tuple[dict[Series, float], float]:
    """The fresh gauges of every process, summed per series, apart from the workers' busy
    slots, which are returned on their own (the page computes idle slots from them)."""
    busy_slots = gauge_series(BUSY_SLOTS)
    summed: dict[Series, float] = {}
    busy = 0.0
    for text in raw.values():
        try:
            entry = json.loads(text)
            if now_ms - int(entry["at"]) > FRESH_S * 1000:
                continue
            gauges = dict(entry["gauges"])
        except (ValueError, TypeError, KeyError):
            continue
        for name, value in gauges.items():
            series = gauge_series(name)
            if series is None or not isinstance(value, int | float):
                continue
            if series == busy_slots:
                if entry.get("kind") == WORKER:
                    busy += value
                continue
            summed[series] = summed.get(series, 0.0) + value
    return summed, busy


class ClusterCollector:
    """The whole cluster's figures, read from Redis at each scrape (see the module docstring)."""

    def __init__(self, t: TelemetryHost) -> None:
        self.t = t
        settings = t.settings
        self.jobs = JobStore(t.store, settings.namespace,
                             AmqpJobs(settings) if settings.uses_amqp else None)
        self.registry = Registry(t.store, settings.namespace)

    def collect(self) -> list[Metric]:
        r, keys = self.t.store, self.t.keys
        pipe = r.pipeline(transaction=False)
        pipe.hgetall(keys.metrics)
        pipe.hgetall(keys.metric_gauges)
        raw_counts, raw_gauges = pipe.execute()
        counts: dict[Series, float] = {}
        for field, value in raw_counts.items():
            series = series_of(field)
            if series is not None:
                counts[series] = float(value)
        gauges, busy = read_gauges(raw_gauges, int(time.time() * 1000))
        gauges.setdefault(("iii_stream_connections", ()), 0.0)
        gauges.update(self.workers(busy))
        gauges.update(self.queues())
        return families(counts, gauges)

    def workers(self, busy: float) -> dict[Series, float]:
        live = [w for w in self.registry.workers() if w.get("alive") and w.get("kind") == WORKER]
        slots = sum(int(w.get("concurrency") or 0) for w in live)
        busy = min(busy, slots)
        return {("iii_workers_live", ()): float(len(live)),
                ("iii_worker_slots", (("state", "busy"),)): busy,
                ("iii_worker_slots", (("state", "idle"),)): float(slots - busy)}

    def queues(self) -> dict[Series, float]:
        out: dict[Series, float] = {}
        for queue in sorted(self.jobs.configs(fresh=True)):
            stats = self.jobs.stats(queue)
            labels = (("queue", queue),)
            out[("iii_queue_depth", labels)] = float(stats["depth"])
            out[("iii_queue_dead_letters", labels)] = float(stats["dead"])
        return out


def web_setup(app: Flask, web: WebHost, t: TelemetryHost) -> None:
    """Serve ``/_iii/metrics`` (behind the management API's access check)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(t))

    def metrics_page() -> Response:
        if not t.options.metrics:
            return error_response(404, "METRICS_OFF", "metrics are off: set metrics = true in "
                                  "[modules.observability] of the engine settings file")
        try:
            body = generate_latest(registry)
        except Exception as exc:
            if is_outage(exc):
                return error_response(503, "STORE_UNAVAILABLE", "the metrics are in Redis, "
                                      f"which does not answer ({type(exc).__name__})")
            raise
        return Response(body, status=200, content_type=CONTENT_TYPE_LATEST)

    web.management_route("/metrics", "metrics", metrics_page, methods=("GET",))
