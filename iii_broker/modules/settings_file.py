"""Reading the engine settings file (TOML), below the module catalog so that a module's own
process (the cron module's beat) can read its table without importing every module."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ..errors import ConfigError

DEFAULT_PATH = "iii.toml"


def read_settings_file(path: str | None = None) -> tuple[dict[str, Any], str | None]:
    """The file's contents and its path: ``path``, else ``iii.toml`` in the working directory
    when it exists, else nothing (``{}``, None). Raises :class:`ConfigError`."""
    if path is None:
        if not Path(DEFAULT_PATH).exists():
            return {}, None
        path = DEFAULT_PATH
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh), path
    except FileNotFoundError:
        raise ConfigError(f"engine settings file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"engine settings file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"engine settings file {path} cannot be read: {exc}") from None


def module_table(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    """The ``[modules.NAME]`` table of a settings file's contents ({} when absent)."""
    tables = data.get("modules", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: 'modules' must be a table")
    table = tables.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [modules.{name}] must be a table")
    return table
