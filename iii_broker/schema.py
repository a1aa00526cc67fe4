"""Checked settings and configs: a :class:`Field` per key, and :func:`check_fields`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import TriggerConfigError


@dataclass(frozen=True)
class Field:
    """One key of a config: its JSON type, whether it is required, and extra checks."""

    kind: type | tuple[type, ...]
    required: bool = False
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None
    """Returns a problem description, or None when the value is fine."""
    default: Any = None
    normalize: Callable[[Any], Any] | None = None
    """Applied to a value of the right type before it is checked and stored."""


def check_fields(where: str, data: Any, schema: dict[str, Field], *,
                 error: type[Exception] = TriggerConfigError) -> dict[str, Any]:
    """Validate ``data`` against ``schema``; returns it with defaults filled in."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{where} must be an object, not {type(data).__name__}")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise error(
            f"{where} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(schema) or 'none'}"
        )
    out = dict(data)
    for key, spec in schema.items():
        if key not in data or data[key] is None:
            if spec.required:
                raise error(f"{where} is missing required key {key!r}")
            if spec.default is not None:
                out[key] = spec.default
            continue
        value = data[key]
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise error(f"{where}: {key!r} must be {names}, not {type(value).__name__}")
        if spec.normalize is not None:
            value = out[key] = spec.normalize(value)
        if spec.choices is not None and value not in spec.choices:
            raise error(f"{where}: {key!r} is {value!r}; choose one of {', '.join(map(str, spec.choices))}")
        if spec.check is not None and (problem := spec.check(value)):
            raise error(f"{where}: {key!r} {problem}")
    return out
