"""Function ids and the handlers registered under them."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidFunctionId

RESERVED_PREFIXES = ("engine::", "iii::", "state::", "stream::")
RESERVED_IDS = frozenset({"publish"})
_SEGMENT = r"[A-Za-z0-9_\-.]+"
_FUNCTION_ID = re.compile(rf"{_SEGMENT}(::{_SEGMENT})*")
MAX_ID_LENGTH = 200


def check_function_id(function_id: object, *, builtin: bool = False) -> str:
    """Return ``function_id`` if valid; raises :class:`InvalidFunctionId` naming it."""
    if not isinstance(function_id, str):
        raise InvalidFunctionId(f"function id must be a string, not {type(function_id).__name__}")
    if not function_id.strip():
        raise InvalidFunctionId(f"function id {function_id!r} is empty", function_id=function_id)
    if len(function_id) > MAX_ID_LENGTH:
        raise InvalidFunctionId(
            f"function id {function_id[:40]!r}... is over {MAX_ID_LENGTH} characters",
            function_id=function_id)
    if not _FUNCTION_ID.fullmatch(function_id):
        raise InvalidFunctionId(
            f"function id {function_id!r} is malformed: use segments of letters, digits, "
            "'_', '-' and '.' joined by '::', e.g. 'orders::validate'",
            function_id=function_id,
        )
    if not builtin and (function_id.startswith(RESERVED_PREFIXES) or function_id in RESERVED_IDS):
        raise InvalidFunctionId(
            f"function id {function_id!r} is reserved for built-ins "
            f"({', '.join(p + '*' for p in RESERVED_PREFIXES)})",
            function_id=function_id,
        )
    return function_id


@dataclass
class FunctionDef:
    """A registered function: its id, its handler and what it tells the registry."""

    function_id: str
    handler: Callable[..., Any]
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.handler)
        self.wants_context = _positional_arity(self.handler) >= 2

    def info(self) -> dict[str, Any]:
        """What the registry stores about this function."""
        return {
            "function_id": self.function_id,
            "description": self.description,
            "metadata": self.metadata,
        }


def _positional_arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
