"""Cron triggers (driven by the beat process): ``cron`` with an expression."""

from __future__ import annotations

from typing import Any, ClassVar

from ..base import CONDITION, Field, Module, TriggerType
from .expression import problem


def _expression(value: str) -> str | None:
    found = problem(value)
    return None if found is None else f"is invalid: {found}"


def _timezone(value: Any) -> str | None:
    found = problem("@daily", value)  # any valid expression: only the zone is in question
    return None if found is None else f"is invalid: {found}"


class CronModule(Module):
    name = "cron"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType("cron", {
            "expression": Field(str, required=True, check=_expression),
            "timezone": Field(str, check=_timezone),
            "condition_function_id": CONDITION,
        }, "fires on a schedule"),
    )
    options: ClassVar[dict[str, Field]] = {"enabled": Field(bool, default=True)}
