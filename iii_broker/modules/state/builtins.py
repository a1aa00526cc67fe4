"""The ``state::*`` built-ins, served by every engine."""

from __future__ import annotations

from typing import Any

from ...documents import Collection, DocumentStore
from ...errors import InvalidArgument
from ...store import Keys
from ..base import Builtin
from ..changes import traced


class StateBuiltins:
    def __init__(self, store: DocumentStore, keys: Keys) -> None:
        self.store = store
        self.keys = keys

    def builtins(self) -> list[Builtin]:
        return [
            Builtin("state::set", self.set,
                    "Store a value: {scope, key, value} -> {old_value, new_value}"),
            Builtin("state::get", self.get, "A value: {scope, key} -> value or null"),
            Builtin("state::delete", self.delete,
                    "Delete a value: {scope, key} -> the deleted value or null"),
            Builtin("state::list", self.list, "The values of a scope: {scope} -> [values]"),
            Builtin("state::list_groups", self.list_groups, "Scopes that hold values -> {groups}"),
            Builtin("state::update", self.update,
                    "Apply ops atomically: {scope, key, ops} -> {old_value, new_value, errors?}"),
        ]

    def collection(self, payload: Any, *, with_key: bool = True) -> tuple[Collection, str]:
        if not isinstance(payload, dict):
            raise InvalidArgument("the payload must be an object with 'scope'"
                                  + (" and 'key'" if with_key else ""))
        limits = self.store.limits
        scope = limits.check_name("scope", payload.get("scope"), scope=True)
        key = limits.check_name("key", payload.get("key")) if with_key else ""
        coll = Collection(key=self.keys.state_scope(scope), index=self.keys.state_scopes,
                          member=scope, changes=self.keys.state_changes, meta=traced({"scope": scope}))
        return coll, key

    def set(self, payload: Any) -> dict[str, Any]:
        coll, key = self.collection(payload)
        if "value" not in payload:
            raise InvalidArgument("state::set needs 'value' (use state::delete to remove a key)")
        return self.store.set(coll, key, payload["value"]).result()

    def get(self, payload: Any) -> Any:
        coll, key = self.collection(payload)
        return self.store.get(coll, key)

    def delete(self, payload: Any) -> Any:
        coll, key = self.collection(payload)
        return self.store.delete(coll, key).old_value

    def list(self, payload: Any) -> list[Any]:
        coll, _ = self.collection(payload, with_key=False)
        return [value for _key, value in self.store.items(coll)]

    def list_groups(self, _payload: Any) -> dict[str, Any]:
        return {"groups": self.store.names(self.keys.state_scopes)}

    def update(self, payload: Any) -> dict[str, Any]:
        coll, key = self.collection(payload)
        if "ops" not in payload:
            raise InvalidArgument("state::update needs 'ops', a list like "
                                  '[{"type": "increment", "path": "count", "by": 1}]')
        return self.store.update(coll, key, payload["ops"]).result()
