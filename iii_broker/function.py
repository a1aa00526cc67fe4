"""Function ids and the handlers registered under them."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

from .errors import InvalidFunctionId

RESERVED_PREFIXES = ("engine::", "iii::", "state::", "stream::")
RESERVED_IDS = frozenset({"publish"})
_SEGMENT = r"[A-Za-z0-9_\-.]+"
_FUNCTION_ID = re.compile(rf"{_SEGMENT}(::{_SEGMENT})*")
MAX_ID_LENGTH = 200


def check_function_id(function_id: object, *, builtin: bool = False) -> str:
    """Return ``function_id`` if valid; raises :class:`InvalidFunctionId` naming it.

    An id is ``service::name`` (segments of letters, digits, ``_``, ``-`` and ``.`` joined
    by ``::``). The built-in prefixes and ids (:data:`RESERVED_PREFIXES`,
    :data:`RESERVED_IDS`) are allowed only with ``builtin`` (the engine's own functions, and
    callers, who may call them); in another case (``Engine::x``, ``Publish``) they are
    refused everywhere, since they would read as built-ins and are none.
    """
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
    if is_reserved(function_id):
        if builtin:
            return function_id
        raise InvalidFunctionId(
            f"function id {function_id!r} is reserved for built-ins "
            f"({', '.join(p + '*' for p in RESERVED_PREFIXES)}, "
            f"{', '.join(sorted(RESERVED_IDS))})",
            function_id=function_id,
        )
    folded = function_id.lower()
    lookalike = next((p for p in RESERVED_PREFIXES if folded.startswith(p)), None)
    if lookalike is not None or folded in RESERVED_IDS:
        used = function_id[:len(lookalike)] if lookalike else function_id
        raise InvalidFunctionId(
            f"function id {function_id!r} uses the reserved "
            f"{'prefix' if lookalike else 'id'} {lookalike or folded!r} in another case "
            f"({used!r}): built-in names are reserved in any case; choose another service name",
            function_id=function_id,
        )
    if "::" not in function_id:
        raise InvalidFunctionId(
            f"function id {function_id!r} has no '::': ids are 'service::name', "
            f"e.g. 'orders::{function_id}'",
            function_id=function_id,
        )
    return function_id


def is_reserved(function_id: str) -> bool:
    """Built-ins (``engine::*``, ``iii::*``, ``state::*``, ``stream::*``, ``publish``)."""
    return function_id.startswith(RESERVED_PREFIXES) or function_id in RESERVED_IDS


@dataclass
class FunctionDef:
    """A registered function: its id, its handler and what it tells the registry."""

    function_id: str
    handler: Callable[..., Any]
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    request_schema: dict[str, Any] | None = None
    response_schema: dict[str, Any] | None = None
    unregister_from: Callable[[str], bool] | None = field(default=None, repr=False, compare=False)
    """Set by the App that registered it (see :meth:`unregister`)."""

    def unregister(self) -> bool:
        """Take this function and its triggers out of its app and the running worker."""
        if self.unregister_from is None:
            raise InvalidFunctionId(f"function {self.function_id!r} belongs to no app",
                                    function_id=self.function_id)
        return self.unregister_from(self.function_id)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.handler)
        self.wants_context = _positional_arity(self.handler) >= 2
        if self.request_schema is None:
            self.request_schema = hinted_schema(self.handler)
        elif (problem := schema_problem(self.request_schema)) is not None:
            # The web process validates request bodies against it: refuse it now, by name,
            # rather than let every request fail.
            raise ValueError(f"request_schema of {self.function_id!r} {problem}")

    def info(self) -> dict[str, Any]:
        """What the registry stores about this function (the schemas only when known)."""
        info: dict[str, Any] = {
            "function_id": self.function_id,
            "description": self.description,
            "metadata": self.metadata,
        }
        if self.request_schema is not None:
            info["request_schema"] = self.request_schema
        if self.response_schema is not None:
            info["response_schema"] = self.response_schema
        return info


# -- schemas --------------------------------------------------------------------------

def schema_problem(schema: Any) -> str | None:
    """What makes ``schema`` no valid JSON Schema (by the ``$schema`` draft it names, else
    2020-12), or None when it is one."""
    # jsonschema costs ~40 ms to import: only processes that meet a schema pay for it.
    from jsonschema import exceptions, validators

    if not isinstance(schema, dict):
        return f"must be a JSON Schema object, not {type(schema).__name__}"
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        return f"is not a valid JSON Schema: at {exc.json_path}, {exc.message}"
    return None


# -- schemas from type hints --------------------------------------------------------

_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                               type(None): "null"}


def hinted_schema(handler: Callable[..., Any]) -> dict[str, Any] | None:
    """The JSON Schema of the first parameter's annotation: a pydantic model
    (``model_json_schema()``, when pydantic is installed) or a TypedDict; else None."""
    try:
        hints = typing.get_type_hints(handler)
        params = [p for p in inspect.signature(handler).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except Exception:  # unresolvable forward references, builtins without signatures
        return None
    return _model_schema(hints.get(params[0].name)) if params else None


def _model_schema(hint: Any) -> dict[str, Any] | None:
    schema = getattr(hint, "model_json_schema", None)
    if isinstance(hint, type) and callable(schema):  # a pydantic model class
        try:
            result = schema()
        except Exception:
            return None
        return result if isinstance(result, dict) else None
    if typing.is_typeddict(hint):
        return _typed_dict_schema(hint)
    return None


def _typed_dict_schema(td: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(td, include_extras=True)
    # Wrappers first: under ``from __future__ import annotations`` (Python < 3.14)
    # ``__required_keys__`` does not see them.
    default = getattr(td, "__required_keys__", hints)
    required = sorted(k for k, v in hints.items() if typing.get_origin(v) is typing.Required
                      or (k in default and typing.get_origin(v) is not typing.NotRequired))
    schema: dict[str, Any] = {"type": "object", "title": td.__name__,
                              "properties": {k: _type_schema(v) for k, v in hints.items()}}
    if required:
        schema["required"] = required
    return schema


def _type_schema(hint: Any) -> dict[str, Any]:
    """A small mapping of Python types to JSON Schema; anything unknown allows any value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    if origin in (typing.Required, typing.NotRequired, typing.Annotated) and args:
        return _type_schema(args[0])
    if origin in (Union, types.UnionType):
        return {"anyOf": [_type_schema(a) for a in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if hint in (list, tuple, set) or origin in (list, tuple, set, frozenset):
        return {"type": "array", **({"items": _type_schema(args[0])} if args else {})}
    if hint is dict or origin is dict:
        return {"type": "object"}
    if typing.is_typeddict(hint):
        return _typed_dict_schema(hint)
    return {}


def _positional_arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
