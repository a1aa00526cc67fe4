"""The building blocks of a module: trigger types with checked config schemas."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError, TriggerConfigError

if TYPE_CHECKING:
    from ..context import Context


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


def nonempty(value: Any) -> str | None:
    return "must not be empty" if isinstance(value, str) and not value.strip() else None


def port(value: Any) -> str | None:
    return None if 1 <= value <= 65535 else f"is {value}; use a TCP port from 1 to 65535"


def function_ids(value: Any) -> str | None:
    if not all(isinstance(v, str) for v in value):
        return "must be a list of function ids"
    return next((problem for v in value if (problem := function_id(v))), None)


def function_id(value: Any) -> str | None:
    from ..errors import InvalidFunctionId
    from ..function import check_function_id
    try:
        check_function_id(value, builtin=True)
    except InvalidFunctionId as exc:
        return f"is not a function id: {exc.message}"
    return None


CONDITION = Field(str, check=function_id)


@dataclass(frozen=True)
class TriggerType:
    """A trigger type (``http``, ``cron``, ...) and the schema of its config."""

    name: str
    schema: dict[str, Field]
    description: str = ""

    def validate(self, config: Any) -> dict[str, Any]:
        """The checked config; raises :class:`TriggerConfigError` naming the problem."""
        return check_fields(f"{self.name} trigger config", config, self.schema)


@dataclass
class Module:
    """A capability. Subclasses set ``name``, ``trigger_types`` and ``options``."""

    name: ClassVar[str] = ""
    trigger_types: ClassVar[tuple[TriggerType, ...]] = ()
    options: ClassVar[dict[str, Field]] = {}
    """Settings this module accepts in its ``[modules.NAME]`` table."""
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, table: dict[str, Any]) -> Module:
        """Build from its settings-file table; raises :class:`ConfigError`."""
        values = check_fields(f"[modules.{cls.name}]", table, cls.options, error=ConfigError)
        return cls(config=values)

    def context_extras(self, ctx: Context) -> dict[str, Any]:
        """What this module adds to a running function's Context (nothing by default)."""
        return {}
