"""A worker's place in the registry: it joins through ``engine::workers::register``
(waiting for an engine to answer), keeps its lease with a heartbeat thread through store
outages of any length (joining again when the registry lost it), and leaves on stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..app import App
from ..errors import (
    BrokerUnavailable,
    FunctionNotFound,
    IIIError,
    InvocationStopped,
    InvocationTimeout,
    TriggerConfigError,
)
from ..function import FunctionDef
from ..message import reply_body
from ..outage import is_outage, outage_for, store_outage
from ..registry import Registry
from ..settings import Settings
from ..store import RedisError
from ..transport import Publisher
from ..trigger import TriggerDef
from .orphans import answer_orphaned_calls

log = logging.getLogger("iii.worker")


class Registrant(Protocol):
    """What registering needs of a worker."""

    app: App
    settings: Settings

    @property
    def stopping(self) -> bool: ...

    def info(self) -> dict[str, Any]: ...


class Member(Registrant, Protocol):
    """What keeping and leaving a place in the registry needs of a worker."""

    worker_id: str
    kind: str
    registry: Registry
    publisher: Publisher


def register_with_engine(worker: Registrant, triggers: list[TriggerDef] | None = None,
                         functions: list[FunctionDef] | None = None) -> None:
    """Register through ``engine::workers::register``, waiting for an engine to answer;
    with ``triggers`` (``functions``), those instead of the app's. Raises
    :class:`TriggerConfigError` with the engine's refusal."""
    infos = [f.info() for f in (worker.app.functions.values() if functions is None
                                else functions)]
    payload: dict[str, Any] = {
        "worker": worker.info(),
        "functions": infos,
        "triggers": [t.to_dict() for t in (worker.app.triggers if triggers is None
                                           else triggers)],
    }
    if worker.app.trigger_types:
        payload["trigger_types"] = [t.to_dict() for t in worker.app.trigger_types.values()]
    waited = 0.0
    delay = 0.1
    while True:
        try:
            worker.app.trigger("engine::workers::register", payload, timeout_ms=5_000)
            for f in infos:
                worker.app.caller.forget_function(f["function_id"])
            return
        except (FunctionNotFound, InvocationTimeout):
            if worker.stopping:
                return  # stopped before any engine answered: nothing to serve
            if waited == 0 or int(waited) // 5 != int(waited + delay) // 5:
                log.info("waiting for an engine (namespace %r) to register with...",
                         worker.settings.namespace)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)
        except BrokerUnavailable:
            raise
        except IIIError as exc:  # the engine's answer: the app cannot be registered as it is
            raise TriggerConfigError(
                f"the engine refused to register app {worker.app.name!r}: "
                f"{exc.code}: {exc.message}") from None


def keep_registered(worker: Member, register: Callable[[Any], None],
                    stopped: threading.Event) -> None:
    """The heartbeat thread: renew the lease every interval until ``stopped``, through store
    outages of any length; ``register`` again when the registry lost this worker (swept
    after a pause, or Redis restarted empty)."""
    interval = worker.settings.heartbeat_interval_s
    ttl_ms = int(worker.settings.heartbeat_ttl_s * 1000)
    outage = store_outage(worker.settings)
    while not stopped.wait(interval):
        try:
            alive = worker.registry.heartbeat(worker.worker_id, ttl_ms)
        except RedisError as exc:
            outage.failed(exc)
            continue
        outage.recovered()
        if alive or worker.stopping:
            continue
        log.warning("%s %s is no longer in the registry (swept after missed heartbeats, "
                    "or Redis lost its data); registering again", worker.kind, worker.worker_id)
        try:
            register(worker)
        except IIIError as exc:
            if is_outage(exc):
                outage_for(worker.settings, exc).failed(exc)
            else:
                log.error("could not register again: %s", exc)
        except RedisError as exc:
            outage.failed(exc)


def remove_dead_worker(settings: Settings, registry: Registry, publisher: Publisher,
                       worker_id: str, why: str) -> tuple[int, list[str]]:
    """Take a worker that is gone (its lease lapsed, or its SDK reconnected as another) out
    of the registry: its in-flight calls' callers are answered ``invocation_stopped`` (and
    remembered, so a redelivered copy is not run), and calls still queued for functions it
    was the last to serve ``function_not_found``. Returns the number of calls stopped and
    the functions left without a worker."""
    inflight, removed = registry.remove_worker(worker_id)
    for route in inflight:
        error = InvocationStopped(
            f"worker {worker_id} {why} while running {route['function_id']!r}",
            function_id=route["function_id"], invocation_id=route["invocation_id"])
        try:
            publisher.publish(reply_body(route["invocation_id"], error=error),
                              routing_key=route["reply_to"],
                              correlation_id=route["correlation_id"])
        except Exception as exc:  # noqa: BLE001
            log.warning("could not tell %s its call stopped: %s", route["reply_to"], exc)
    registry.note_stopped([route["invocation_id"] for route in inflight])
    if removed:
        answer_orphaned_calls(settings, registry, publisher, removed, lost_by=worker_id)
    return len(inflight), removed


def leave_registry(worker: Member) -> None:
    """Leave the registry; calls still queued for a function this worker was the last to
    serve are answered ``function_not_found`` at once instead of timing out."""
    try:
        _inflight, died = worker.registry.remove_worker(worker.worker_id)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not unregister %s: %s", worker.worker_id, exc)
        return
    if died:
        answer_orphaned_calls(worker.settings, worker.registry, worker.publisher, died,
                              lost_by=worker.worker_id)
