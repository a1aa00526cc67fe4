"""Trigger bindings: ``{type, function_id, config, metadata}`` with a stable id."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from .errors import PayloadError, TriggerConfigError
from .function import check_function_id
from .message import dumps


@dataclass(frozen=True)
class TriggerDef:
    """A binding of a trigger type to a function. The id is derived from the binding,
    so re-registering the same trigger after a restart finds the same entry."""

    type: str
    function_id: str
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    owner: str = "worker"
    """``worker``: declared by app code, alive with the workers declaring it; ``engine``:
    added with ``engine::register_trigger``, removed only by ``engine::unregister_trigger``."""

    @cached_property
    def id(self) -> str:
        binding: list[Any] = [self.type, self.function_id, self.config]
        if self.owner != "worker":  # never the id of a declared trigger with the same binding
            binding.insert(0, self.owner)
        canonical = json.dumps(binding, sort_keys=True)
        return hashlib.sha1(canonical.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "function_id": self.function_id,
                "config": self.config, "metadata": self.metadata}

    @classmethod
    def from_dict(cls, data: Any) -> TriggerDef:
        """Parse a registration; raises :class:`TriggerConfigError` on a malformed one."""
        if not isinstance(data, dict):
            raise TriggerConfigError("a trigger must be an object")
        type_, fid = data.get("type"), data.get("function_id")
        if not isinstance(type_, str) or not type_:
            raise TriggerConfigError(f"trigger type must be a non-empty string, not {type_!r}")
        check_function_id(fid, builtin=True)
        config = {} if data.get("config") is None else data["config"]
        metadata = {} if data.get("metadata") is None else data["metadata"]
        if not isinstance(config, dict) or not isinstance(metadata, dict):
            raise TriggerConfigError(
                f"{type_} trigger for {fid!r}: config and metadata must be objects",
                function_id=fid)
        try:
            dumps(config, what=f"config of the {type_} trigger for {fid!r}")
        except PayloadError as exc:
            raise TriggerConfigError(exc.message, function_id=fid) from None
        return cls(type_, fid, config, metadata)  # type: ignore[arg-type]


class TriggerTypeHandler(Protocol):
    """What provides a custom trigger type: told of each trigger of its type that becomes
    active (``register_trigger``) and of each that goes or turns inactive
    (``unregister_trigger``); it fires by calling the trigger's function. Either method may
    be ``async def``; raising refuses the trigger (its error is shown with it)."""

    def register_trigger(self, trigger: TriggerDef) -> Any: ...

    def unregister_trigger(self, trigger: TriggerDef) -> Any: ...


@dataclass(frozen=True)
class TriggerTypeDef:
    """A trigger type a worker provides (iii's ``register_trigger_type``)."""

    id: str
    handler: TriggerTypeHandler = field(compare=False)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "description": self.description}


def check_trigger_type_id(type_id: Any) -> str:
    """A custom trigger type's id; raises :class:`TriggerConfigError` naming the problem.
    Ids are like iii's (``webhook``, ``github:push``): letters, digits, ``_ - . :``."""
    if not isinstance(type_id, str) or not _TYPE_ID.fullmatch(type_id):
        raise TriggerConfigError(
            f"trigger type id {type_id!r} is malformed: use letters, digits, '_', '-', '.' "
            "and ':' (e.g. 'webhook' or 'github:push'), at most 100 characters")
    return type_id


_TYPE_ID = re.compile(r"[A-Za-z0-9_\-.:]{1,100}")
