"""The engine settings file: one TOML file for all engine configuration.

``III_CONFIG_PATH`` names it; without it, ``iii.toml`` in the working directory is
read when present, and every module runs with its defaults otherwise::

    [modules.http]
    port = 8080

    [modules.cron]
    enabled = false

Each ``[modules.NAME]`` table accepts ``enabled`` and that module's own options;
an unknown table or key is an error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .base import Module, TriggerType
from .catalog import BUILTIN_MODULES, trigger_types
from .settings_file import module_table, read_settings_file

_TOP_LEVEL = ("modules",)


@dataclass
class EngineConfig:
    """The parsed settings file: the enabled modules and their options."""

    modules: list[Module] = field(default_factory=list)
    path: str | None = None

    @property
    def trigger_types(self) -> dict[str, TriggerType]:
        return trigger_types(self.modules)

    def module(self, name: str) -> Module | None:
        return next((m for m in self.modules if m.name == name), None)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | None = None) -> EngineConfig:
        where = path or "engine settings"
        unknown = sorted(set(data) - set(_TOP_LEVEL))
        if unknown:
            raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}; "
                              f"known: {', '.join(_TOP_LEVEL)}")
        tables = data.get("modules", {})
        if not isinstance(tables, dict):
            raise ConfigError(f"{where}: 'modules' must be a table")
        bad = sorted(set(tables) - set(BUILTIN_MODULES))
        if bad:
            raise ConfigError(f"{where}: unknown module(s) {', '.join(bad)}; "
                              f"known: {', '.join(BUILTIN_MODULES)}")
        modules = []
        for name, module_cls in BUILTIN_MODULES.items():
            table = module_table(data, name, where)
            try:
                module = module_cls.from_config(table)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc.message}") from None
            if not module.config.get("enabled", True):
                if name == "engine":
                    raise ConfigError(f"{where}: [modules.engine] cannot be disabled: "
                                      "the engine module is always on")
                continue
            modules.append(module)
        return cls(modules, path)

    @classmethod
    def load(cls, path: str | None = None) -> EngineConfig:
        """Read the settings file (or the defaults); raises :class:`ConfigError`."""
        data, found = read_settings_file(path)
        return cls.from_dict(data, found)
