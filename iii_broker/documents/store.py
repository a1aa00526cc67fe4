"""JSON documents in Redis hashes, written atomically with their change records.

State (scope -> key -> value) and streams (stream -> group -> item -> value) are both
*collections*: a Redis hash of packed values (:mod:`.codec`). Every write runs the one
script of :mod:`.lua`, which also appends a change record (for state and stream triggers)
and, for streams, publishes the live message stream processes fan out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

from ..errors import BrokerUnavailable, InvalidArgument
from . import codec
from .lua import WRITE

OPS = ("set", "merge", "increment", "decrement", "append", "remove")
VALUE_OPS = ("set", "merge", "append")


@dataclass(frozen=True)
class Limits:
    """What one write may hold; every limit refused with an error that names it."""

    max_value_bytes: int = 1024 * 1024
    max_path_depth: int = 32
    max_key_length: int = 256
    max_scope_length: int = 256
    changes_maxlen: int = 100_000
    """Change records kept (approximately): a trigger whose worker is away longer than it
    takes to write this many changes misses the oldest (logged)."""

    @classmethod
    def of(cls, config: dict[str, Any]) -> Limits:
        """The limits a module's settings table sets (the rest default)."""
        names = ("max_value_bytes", "max_path_depth", "max_key_length", "max_scope_length",
                 "changes_maxlen")
        return cls(**{name: config[name] for name in names if name in config})

    def check_name(self, what: str, value: Any, *, scope: bool = False) -> str:
        """``value`` as a key or scope name; raises :class:`InvalidArgument`."""
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"{what} must be a non-empty string, not {_shown(value)}")
        limit = self.max_scope_length if scope else self.max_key_length
        if len(value) > limit:
            raise InvalidArgument(f"{what} is {len(value)} characters long; the limit is {limit}")
        return value


@dataclass(frozen=True)
class Collection:
    """One Redis hash of documents, and where its changes go."""

    key: str
    index: str
    member: str
    changes: str = ""
    live: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Write:
    """What a write did: the values before and after, failed ops, and the event recorded
    (``created``, ``updated``, ``deleted``; empty when nothing changed)."""

    old_value: Any
    new_value: Any
    errors: list[dict[str, Any]]
    event: str

    def result(self) -> dict[str, Any]:
        """What the set and update built-ins answer: ``{old_value, new_value}``, and
        ``errors`` when an op failed."""
        result: dict[str, Any] = {"old_value": self.old_value, "new_value": self.new_value}
        if self.errors:
            result["errors"] = self.errors
        return result


class DocumentStore:
    """Reads and atomic writes of collections; Redis errors become
    :class:`BrokerUnavailable`."""

    def __init__(self, client: redis.Redis, limits: Limits | None = None) -> None:
        self.r = client
        self.limits = limits or Limits()
        self._write = client.register_script(WRITE)

    # -- reads ----------------------------------------------------------------------

    def get(self, coll: Collection, key: str) -> Any:
        raw = self._redis(self.r.hget, coll.key, key)
        return None if raw is None else codec.unpack(raw)

    def items(self, coll: Collection) -> list[tuple[str, Any]]:
        """Every (key, value) of the collection, by key."""
        raw = self._redis(self.r.hgetall, coll.key)
        return [(k, codec.unpack(raw[k])) for k in sorted(raw)]

    def names(self, index: str) -> list[str]:
        """The names of the collections in ``index`` that have items."""
        return sorted(self._redis(self.r.smembers, index))

    # -- writes ---------------------------------------------------------------------

    def set(self, coll: Collection, key: str, value: Any) -> Write:
        text = codec.pack(value)
        size = len(text.encode("utf-8"))
        if size > self.limits.max_value_bytes:
            raise InvalidArgument(self._too_large(size))
        return self._run(coll, "set", key, text)

    def delete(self, coll: Collection, key: str) -> Write:
        return self._run(coll, "delete", key, "")

    def update(self, coll: Collection, key: str, ops: Any) -> Write:
        """Apply ``ops`` in order, atomically. An op that fails (here, when checked, or in
        Redis, when applied) adds ``{op_index, code, message}`` to ``errors``; the others
        still apply. Raises :class:`InvalidArgument` when ``ops`` is not a list or the result
        is too large (nothing is written then)."""
        if not isinstance(ops, list):
            raise InvalidArgument(f"ops must be a list of operations, not {_shown(ops)}")
        checked: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for i, op in enumerate(ops):
            try:
                checked.append(self._check_op(i, op))
            except _OpError as exc:
                errors.append({"op_index": i, "code": exc.code, "message": exc.message})
        if not checked:
            current = self.get(coll, key)
            return Write(current, current, errors, "")
        text = json.dumps(checked, ensure_ascii=False, separators=(",", ":"))
        write = self._run(coll, "update", key, text)
        if write.errors or errors:
            merged = sorted(errors + write.errors, key=lambda e: e["op_index"])
            write = Write(write.old_value, write.new_value, merged, write.event)
        if not write.event:  # nothing applied: the value is what it was
            write = Write(write.old_value, write.old_value, write.errors, "")
        return write

    def _check_op(self, i: int, op: Any) -> dict[str, Any]:
        if not isinstance(op, dict):
            raise _OpError("op.invalid", f"op {i} must be an object like "
                           '{"type": "set", "path": "a.b", "value": 1}, not ' + _shown(op))
        kind = op.get("type")
        if kind not in OPS:
            raise _OpError("op.unknown", f"op {i} has type {kind!r}; use one of {', '.join(OPS)}")
        checked: dict[str, Any] = {"type": kind, "index": i,
                                   "path": self._path(kind, op.get("path"))}
        if kind in VALUE_OPS:
            if "value" not in op:
                raise _OpError(f"{kind}.missing_value", f"op {i} ({kind}) needs 'value'")
            checked["value"] = self._tree(kind, op["value"])
        if kind in ("increment", "decrement") and op.get("by") is not None:
            by = op["by"]
            if isinstance(by, bool) or not isinstance(by, (int, float)):
                raise _OpError(f"{kind}.invalid_by", f"op {i} ({kind}): 'by' must be a number, "
                               f"not {_shown(by)}")
            checked["by"] = self._tree(kind, by)
        return checked

    def _path(self, kind: str, path: Any) -> list[str | int]:
        if path is None or path == "":
            segments: list[Any] = []
        elif isinstance(path, str):
            segments = path.split(".")
        elif isinstance(path, list):
            segments = path
        else:
            raise _OpError(f"{kind}.invalid_path", "path must be a string like 'a.b.c' or a "
                           f"list of segments, not {_shown(path)}")
        for seg in segments:
            if isinstance(seg, bool) or not isinstance(seg, (str, int)) \
                    or (isinstance(seg, int) and seg < 0) or seg == "":
                raise _OpError(f"{kind}.invalid_path", "path segments must be non-empty "
                               f"strings or array indexes >= 0, not {_shown(seg)}")
        if len(segments) > self.limits.max_path_depth:
            raise _OpError(f"{kind}.path_too_deep", f"the path has {len(segments)} segments; "
                           f"the limit is {self.limits.max_path_depth}")
        return codec.packed_path(segments)

    def _tree(self, kind: str, value: Any) -> Any:
        try:
            packed = codec.tree(value)
            json.dumps(packed, ensure_ascii=False).encode("utf-8")
        except InvalidArgument as exc:
            raise _OpError(f"{kind}.invalid_value", exc.message) from None
        except (UnicodeEncodeError, ValueError) as exc:
            raise _OpError(f"{kind}.invalid_value", f"the value is not valid JSON: {exc}") from None
        return packed

    def _run(self, coll: Collection, cmd: str, key: str, arg: str) -> Write:
        maxlen = self.limits.changes_maxlen if coll.changes else 0
        keys = [coll.key, coll.index, coll.changes or coll.key, coll.live or coll.key]
        args = [cmd, key, arg, self.limits.max_value_bytes, maxlen,
                json.dumps(coll.meta, separators=(",", ":")), coll.member, 1 if coll.live else 0]
        result = self._redis(self._write, keys=keys, args=args)
        if result[0] == "too_large":
            raise InvalidArgument(self._too_large(int(result[1])))
        old, new, errors, event = result
        return Write(None if old is None else codec.unpack(old),
                     None if new is None else codec.unpack(new),
                     json.loads(errors) if errors != "[]" else [], event)

    def _too_large(self, size: int) -> str:
        return (f"the value would be {size} bytes; the limit is {self.limits.max_value_bytes} "
                "(max_value_bytes)")

    def _redis(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.ResponseError as exc:  # a script error: input Lua could not read
            raise InvalidArgument(f"Redis refused the write: {exc}") from exc
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"Redis is unavailable: {exc}") from exc


class _OpError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
