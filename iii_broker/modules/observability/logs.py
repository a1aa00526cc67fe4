"""Handlers' log records: captured, stored in Redis, listed, and fed to log triggers (STUB)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from ...settings import Settings
    from ..base import Builtin, Duty
    from ..hosts import EngineHost
    from .options import ObservabilityOptions
    from .telemetry import Telemetry


class Logs:
    def __init__(self, t: Telemetry) -> None:
        self.t = t

    def start(self) -> None:
        pass

    def flush(self, timeout_s: float) -> None:
        pass

    def close(self) -> None:
        pass


def builtins(engine: EngineHost, options: ObservabilityOptions) -> list[Builtin]:
    return []


def duties(engine: EngineHost, options: ObservabilityOptions) -> list[Duty]:
    return []


def cli_commands(sub: argparse._SubParsersAction[Any]
                 ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
    return {}
