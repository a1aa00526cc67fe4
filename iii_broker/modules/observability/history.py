"""Invocation history: every run recorded in Redis, listed, shown, run again (STUB)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from ...observe import Observer
    from ...settings import Settings
    from ..base import Builtin, Duty
    from ..hosts import EngineHost
    from .options import ObservabilityOptions
    from .telemetry import Telemetry


class History:
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


def builtins(engine: EngineHost, options: ObservabilityOptions) -> list[Builtin]:
    return []


def duties(engine: EngineHost, options: ObservabilityOptions) -> list[Duty]:
    return []


def cli_commands(sub: argparse._SubParsersAction[Any]
                 ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
    return {}
