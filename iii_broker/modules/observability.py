"""Traces, logs and metrics: ``log`` triggers receive OpenTelemetry log records."""

from __future__ import annotations

from typing import ClassVar

from .base import CONDITION, Field, Module, TriggerType

LOG_LEVELS = ("trace", "debug", "info", "warn", "error")


class ObservabilityModule(Module):
    name = "observability"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType("log", {
            "level": Field(str, choices=LOG_LEVELS),
            "condition_function_id": CONDITION,
        }, "fires for each log record at or above a level"),
    )
    options: ClassVar[dict[str, Field]] = {"enabled": Field(bool, default=True)}
