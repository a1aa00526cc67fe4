"""The engine's own module, always enabled: discovery triggers."""

from __future__ import annotations

from typing import ClassVar

from .base import Field, Module, TriggerType


class CoreModule(Module):
    name = "engine"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType("engine::functions-available", {},
                    "fires when the set of live functions changes"),
    )
    options: ClassVar[dict[str, Field]] = {"enabled": Field(bool, default=True)}
