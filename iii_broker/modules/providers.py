"""Custom trigger types (iii's ``register_trigger_type``): a worker provides a type, and
the triggers of that type — whoever declared them — are handed to it to fire.

- A worker's registration lists the types its app provides (``trigger_types``); the engine
  records them (``NS:trigger-types``, ``NS:trigger-type:<T>:providers``). A trigger of a
  type no module declares is accepted as a custom one (a near miss of a built-in type is
  refused as a typo) and waits, inactive and ``pending``, until a worker provides its type.
- The elected ``custom-triggers`` duty (:func:`reconcile`) compares, for each type, its
  active triggers with what it last handed to the type's provider (the live provider that
  registered first; ``NS:trigger-type:<T>:told``) and pushes the difference as
  ``register``/``unregister`` operations onto that worker's list
  (``NS:worker:<id>:trigger-ops``). A new provider (the old one died or stopped providing)
  is handed every active trigger afresh; a trigger that turns inactive (its function or its
  declaring workers gone) is taken back.
- In the provider, :class:`TypeProvider` (a worker service) pops the operations and calls
  its handler's ``register_trigger``/``unregister_trigger``; a refusal is kept
  (``NS:trigger-errors``) and shown with the trigger by ``engine::triggers::list``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
from typing import Any

from ..outage import store_outage
from ..registry import Registry
from ..store import Keys, RedisError
from ..trigger import TriggerDef
from .hosts import EngineHost, WorkerHost

log = logging.getLogger("iii.triggers")

RECONCILE_S = 0.5
OPS_TTL_S = 300
"""Operations not taken within this long are dropped with their list (their provider is
gone; the next provider is handed everything afresh)."""


def reconcile(engine: EngineHost) -> None:
    """Elected: hand each custom type's provider the difference between the type's active
    triggers and what it was handed before."""
    registry = engine.registry
    types = registry.custom_types()
    if not types:
        return
    triggers = [t for t in registry.triggers() if t["type"] in types]
    r, keys = registry.r, registry.keys
    for type_id, info in types.items():
        providers = info["providers"]
        told_key = keys.trigger_type_told(type_id)
        raw = r.get(told_key)
        told = json.loads(raw) if raw else {"provider": None, "triggers": {}}
        provider = providers[0] if providers else None
        if provider is None:
            if raw:
                r.delete(told_key)
            continue
        wanted = {t["id"]: _handed(t) for t in triggers if t["type"] == type_id
                  and (t["active"] or ("error" in t and "pending" not in t))}
        handed: dict[str, Any] = told["triggers"] if told["provider"] == provider else {}
        if told["provider"] not in (None, provider) and told["provider"] in providers:
            _push(r, keys, told["provider"], [{"op": "unregister", "trigger": t}
                                               for t in told["triggers"].values()])
        ops = [{"op": "register", "trigger": t} for tid, t in wanted.items()
               if tid not in handed]
        ops += [{"op": "unregister", "trigger": t} for tid, t in handed.items()
                if tid not in wanted]
        if ops:
            _push(r, keys, provider, ops)
            log.info("trigger type %r: %s handed %d trigger(s), %d taken back", type_id,
                     provider, sum(o["op"] == "register" for o in ops),
                     sum(o["op"] == "unregister" for o in ops))
        if ops or told["provider"] != provider:
            r.set(told_key, json.dumps({"provider": provider, "triggers": wanted}))


def _handed(t: dict[str, Any]) -> dict[str, Any]:
    return {k: t.get(k) for k in ("id", "type", "function_id", "config", "metadata", "owner")}


def _push(r: Any, keys: Keys, worker_id: str, ops: list[dict[str, Any]]) -> None:
    if not ops:
        return
    pipe = r.pipeline(transaction=True)
    pipe.rpush(keys.trigger_ops(worker_id), *[json.dumps(op) for op in ops])
    pipe.expire(keys.trigger_ops(worker_id), OPS_TTL_S)
    pipe.execute()


class TypeProvider:
    """A worker's service: hands the triggers of the types its app provides to their
    handlers. Idle (no Redis) while the app provides none."""

    def __init__(self, worker: WorkerHost) -> None:
        self.worker = worker
        self.registry = Registry(worker.store, worker.settings.namespace)
        self._key = self.registry.keys.trigger_ops(worker.worker_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="iii-trigger-types",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def drain(self, hard: threading.Event) -> int:
        if self._thread is not None:
            self._thread.join(2)
        return 0

    def _loop(self) -> None:
        outage = store_outage(self.worker.settings)
        while not self._stop.is_set():
            if not self.worker.trigger_types:
                self._stop.wait(RECONCILE_S)
                continue
            try:
                item = self.registry.r.blpop([self._key], timeout=1)
            except RedisError as exc:
                outage.failed(exc)
                self._stop.wait(1)
                continue
            if item is not None:
                self.apply(json.loads(item[1]))

    def apply(self, op: dict[str, Any]) -> None:
        """One operation: its handler's ``register_trigger``/``unregister_trigger``."""
        t = op["trigger"]
        trigger = TriggerDef(t["type"], t["function_id"], t.get("config") or {},
                             t.get("metadata") or {}, owner=t.get("owner") or "worker")
        provided = self.worker.trigger_types.get(trigger.type)
        registering = op["op"] == "register"
        if provided is None:
            if registering:
                self._note(trigger.id, f"worker {self.worker.worker_id} no longer provides "
                           f"trigger type {trigger.type!r}")
            return
        method = provided.handler.register_trigger if registering \
            else provided.handler.unregister_trigger
        try:
            outcome = method(trigger)
            if inspect.isawaitable(outcome):
                asyncio.run(_awaited(outcome))
        except Exception as exc:  # noqa: BLE001 - the provider's refusal, kept and shown
            log.warning("trigger type %r refused %s trigger %s of %r: %s", trigger.type,
                        op["op"], trigger.id, trigger.function_id, exc)
            if registering:
                self._note(trigger.id, f"{type(exc).__name__}: {exc}")
            return
        if registering:
            self._note(trigger.id, None)

    def _note(self, trigger_id: str, message: str | None) -> None:
        try:
            self.registry.note_trigger_error(trigger_id, message)
        except RedisError as exc:
            store_outage(self.worker.settings).failed(exc)


async def _awaited(outcome: Any) -> Any:
    return await outcome
