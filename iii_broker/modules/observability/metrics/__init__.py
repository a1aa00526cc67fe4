"""Cluster metrics: counts each process adds to Redis about once a second (:mod:`.reporter`),
served as Prometheus text for the whole cluster at ``/_iii/metrics`` (:mod:`.page`); the
series and how they are stored: :mod:`.series`. User docs: docs/observability.md."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .duties import duties
from .reporter import MetricsObserver, MetricsReporter

if TYPE_CHECKING:
    from flask import Flask

    from ...hosts import WebHost
    from ..host import TelemetryHost


def web_setup(app: Flask, web: WebHost, t: TelemetryHost) -> None:
    """Serve ``/_iii/metrics`` (behind the management API's access check)."""
    # Flask and prometheus-client load in web processes only (see modules/http).
    importlib.import_module(f"{__name__}.page").web_setup(app, web, t)


__all__ = ["MetricsObserver", "MetricsReporter", "duties", "web_setup"]
