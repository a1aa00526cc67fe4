"""Spans: one per invocation, the web process's requests, beat's cron fires (STUB)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from ...observe import Observer
    from ..hosts import WebHost
    from .telemetry import Telemetry


class Tracing:
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


__all__ = ["Any", "Tracing", "web_setup"]
