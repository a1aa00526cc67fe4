"""Cluster metrics: counts added to Redis about once a second, served as Prometheus text
at ``/_iii/metrics`` (STUB)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from ...observe import Observer
    from ..base import Duty
    from ..hosts import EngineHost, WebHost
    from .options import ObservabilityOptions
    from .telemetry import Telemetry


class MetricsReporter:
    def __init__(self, t: Telemetry) -> None:
        self.t = t

    def start(self) -> None:
        pass

    def observer(self) -> Observer | None:
        return None

    def flush(self, timeout_s: float) -> None:
        pass

    def close(self) -> None:
        pass


def web_setup(app: Flask, web: WebHost, t: Telemetry) -> None:
    pass


def duties(engine: EngineHost, options: ObservabilityOptions) -> list[Duty]:
    return []
