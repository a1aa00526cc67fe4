"""Cron triggers (driven by the beat process): ``cron`` with an expression."""

from __future__ import annotations

from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..base import CONDITION, Field, Module, TriggerType


def _expression(value: str) -> str | None:
    n = len(value.split())
    if n not in (5, 6, 7):
        return (f"has {n} fields; use 6 (sec min hour dom month dow), 7 (with year) "
                "or classic 5-field crontab")
    return None


def _timezone(value: Any) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"is not an IANA time zone name: {value!r}"
    return None


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
