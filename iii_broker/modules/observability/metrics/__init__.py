"""Cluster metrics: counts each process adds to Redis about once a second (:mod:`.reporter`),
served as Prometheus text for the whole cluster at ``/_iii/metrics`` (:mod:`.page`); the
series and how they are stored: :mod:`.series`. User docs: docs/obs-metrics.md."""

from __future__ import annotations

from .page import ClusterCollector, duties, web_setup
from .reporter import MetricsObserver, MetricsReporter

__all__ = ["ClusterCollector", "MetricsObserver", "MetricsReporter", "duties", "web_setup"]
