"""State: ``state`` triggers fire on changes to scope/key values."""

from __future__ import annotations

from typing import ClassVar

from .base import CONDITION, Field, Module, TriggerType


class StateModule(Module):
    name = "state"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType("state", {
            "scope": Field(str),
            "key": Field(str),
            "condition_function_id": CONDITION,
        }, "fires when a state value is created, updated or deleted"),
    )
    options: ClassVar[dict[str, Field]] = {"enabled": Field(bool, default=True)}
