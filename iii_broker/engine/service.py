"""The engine process: the registry's built-in functions and the elected sweeper.

The engine is a worker of the ``engine::*`` functions, so calling it is like calling
any function, and several engines share the load as competing consumers. Duties
that must happen once (sweeping dead workers, answering their in-flight calls
with ``invocation_stopped``, reaping abandoned reply queues) run only in the engine
that holds the sweeper lock in Redis.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..app import App
from ..config import EngineConfig
from ..errors import InvocationStopped, TriggerConfigError
from ..message import now_ms, reply_body
from ..modules import BUILTIN_MODULES
from ..settings import Settings
from ..trigger import TriggerDef
from ..worker.runtime import Worker
from .queues import QueueDuties
from .registry import Registry

log = logging.getLogger("iii.engine")


def _route_shape(api_path: str) -> tuple[str, ...]:
    """``/users/:id`` and ``users/:name/`` are the same route: ``("users", ":")``."""
    return tuple(":" if s.startswith(":") and len(s) > 1 else s
                 for s in api_path.strip("/").split("/"))


class Engine:
    """Serves ``engine::*`` and keeps the registry clean."""

    def __init__(self, settings: Settings, config: EngineConfig | None = None,
                 concurrency: int = 8) -> None:
        self.settings = settings
        self.config = config or EngineConfig.load(settings.config_path)
        self.app = App("engine", settings=settings)
        self.app._builtin = True
        self._define_builtins()
        self.worker = Worker(self.app, settings, concurrency=concurrency,
                             registrar=self._register_self, modules=self.config.modules,
                             kind="engine")
        self.registry: Registry = self.worker.registry
        self.engine_id = self.worker.worker_id
        self.queues = QueueDuties(self)
        self.queues.define_builtins()
        self._stop = threading.Event()
        self._leading = False
        self._lapsed: dict[str, float] = {}  # worker id -> when this engine first saw it lapsed

    def run(self) -> int:
        self.queues.publish_settings()
        sweeper = threading.Thread(target=self._sweep_loop, name="iii-sweeper", daemon=True)
        sweeper.start()
        threading.Thread(target=self._promote_loop, name="iii-retries", daemon=True).start()
        try:
            return self.worker.run()
        finally:
            self._stop.set()
            self.registry.release(self.registry.keys.sweeper_lock, self.engine_id)

    # -- built-in functions ---------------------------------------------------------

    def _define_builtins(self) -> None:
        app = self.app
        app.register_function("engine::functions::list", lambda _p: {
            "functions": self.registry.functions()},
            description="Live functions and the workers serving them")
        app.register_function("engine::workers::list", lambda _p: {
            "workers": self.registry.workers()},
            description="Registered workers with heartbeat and in-flight counts")
        app.register_function("engine::triggers::list", lambda _p: {
            "triggers": self.registry.triggers()},
            description="Triggers, active while their function has a live worker")
        app.register_function("engine::workers::register", self.register_worker,
                              description="Called by a starting worker (internal)")

    def register_worker(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Validate a worker's triggers against the enabled modules and record it."""
        worker = payload["worker"]
        types = self.config.trigger_types
        triggers = []
        for raw in payload.get("triggers", []):
            tdef = TriggerDef.from_dict(raw)
            if tdef.type not in types:
                raise TriggerConfigError(
                    f"trigger type {tdef.type!r} (for {tdef.function_id!r}) "
                    f"{self._why_missing(tdef.type)}; enabled types: {', '.join(sorted(types))}",
                    function_id=tdef.function_id,
                )
            checked = types[tdef.type].validate(tdef.config)
            triggers.append(TriggerDef(tdef.type, tdef.function_id, checked, tdef.metadata).to_dict())
        ttl_ms = int(self.settings.heartbeat_ttl_s * 1000)
        # Check-then-write must not interleave with another engine's registration, or two
        # workers could both take one route: registrations with http triggers take turns.
        with self._routes_lock(any(t["type"] == "http" for t in triggers)):
            self._refuse_route_conflicts(triggers)
            self.queues.register_subscribers(triggers)
            live = self.registry.register_worker(worker, payload.get("functions", []), triggers,
                                                 ttl_ms)
        log.info("registered %s %s (%s) with %d function(s), %d trigger(s)",
                 worker.get("kind", "worker"), worker["id"], worker.get("name"),
                 len(payload.get("functions", [])), len(triggers))
        return {"worker_id": worker["id"], "triggers": [t["id"] for t in triggers],
                "functions_now_live": live}

    @contextmanager
    def _routes_lock(self, needed: bool) -> Iterator[None]:
        """Hold ``NS:lock:routes`` (a few seconds at most) while ``needed``."""
        if not needed:
            yield
            return
        key, owner = f"{self.settings.namespace}:lock:routes", uuid.uuid4().hex
        deadline = time.monotonic() + 5
        while not self.registry.acquire(key, owner, 5_000):
            if time.monotonic() > deadline:
                raise TriggerConfigError("another registration holds the route lock; try again")
            time.sleep(0.01)  # another engine is registering routes right now
        try:
            yield
        finally:
            self.registry.release(key, owner)

    def _refuse_route_conflicts(self, triggers: list[dict[str, Any]]) -> None:
        """Raise :class:`TriggerConfigError` when an ``http`` trigger takes a route (method and
        path, parameter names aside) that another function's trigger already has. Only
        triggers of live functions count, so a renamed function can take its old routes.
        """
        new = [t for t in triggers if t["type"] == "http"]
        if not new:
            return
        taken: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        for t in [t for t in self.registry.triggers() if t["type"] == "http" and t["active"]] + new:
            config = t["config"]
            key = (config["http_method"], _route_shape(config["api_path"]))
            other = taken.setdefault(key, t)
            if other["function_id"] != t["function_id"]:
                raise TriggerConfigError(
                    f"http trigger {config['http_method']} {config['api_path']} of "
                    f"{t['function_id']!r} conflicts with {other['config']['http_method']} "
                    f"{other['config']['api_path']} of {other['function_id']!r}: routes that "
                    "differ only in parameter names are the same route",
                    function_id=t["function_id"])

    def _why_missing(self, trigger_type: str) -> str:
        """Why a trigger type is not available: its module is disabled (and where), or unknown."""
        for name, module_cls in BUILTIN_MODULES.items():
            if any(t.name == trigger_type for t in module_cls.trigger_types):
                where = self.config.path or "the engine settings"
                return f"is not enabled: module {name!r} is disabled in {where}"
        return "is unknown: no module provides it"

    def _register_self(self, worker: Worker) -> None:
        ttl_ms = int(self.settings.heartbeat_ttl_s * 1000)
        self.registry.register_worker(
            worker.info(), [f.info() for f in self.app.functions.values()], [], ttl_ms)

    # -- sweeping -------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        interval = self.settings.heartbeat_interval_s
        lock_ttl_ms = int(self.settings.heartbeat_ttl_s * 1000)
        leading = False
        while not self._stop.wait(interval / 2):
            try:
                now_leading = self.registry.acquire(self.registry.keys.sweeper_lock,
                                                    self.engine_id, lock_ttl_ms)
                if now_leading != leading:
                    log.info("engine %s %s the sweeper duty", self.engine_id,
                             "took" if now_leading else "lost")
                    leading = now_leading
                self._leading = leading
                if leading:
                    self.sweep()
            except Exception as exc:  # noqa: BLE001 - the next round retries
                log.warning("sweep failed: %s", exc)

    def sweep(self) -> None:
        """Remove workers whose heartbeat lapsed and stop their in-flight calls.

        A worker must stay lapsed for one more heartbeat interval, as this engine sees it:
        a stall (a slow Redis, a paused VM) lapses every lease at once, and the live
        workers beat again within an interval of it ending."""
        now = time.monotonic()
        lapsed = self.registry.expired_workers()
        self._lapsed = {w: self._lapsed.get(w, now) for w in lapsed}
        for worker_id in lapsed:
            if now - self._lapsed[worker_id] < self.settings.heartbeat_interval_s:
                continue
            inflight, removed = self.registry.remove_worker(worker_id)
            log.warning("worker %s missed its heartbeats: removed; %d call(s) stopped; "
                        "functions now without workers: %s", worker_id, len(inflight),
                        ", ".join(removed) or "none")
            for route in inflight:
                error = InvocationStopped(
                    f"worker {worker_id} died while running {route['function_id']!r}",
                    function_id=route["function_id"], invocation_id=route["invocation_id"])
                try:
                    self.worker.publisher.publish(
                        reply_body(route["invocation_id"], error=error),
                        routing_key=route["reply_to"], correlation_id=route["correlation_id"])
                except Exception as exc:  # noqa: BLE001
                    log.warning("could not tell %s its call stopped: %s", route["reply_to"], exc)
        self._reap_reply_queues()
        self.queues.return_orphans()

    def _promote_loop(self) -> None:
        """While this engine holds the sweeper duty, move retries onto their queues when due."""
        while not self._stop.is_set():
            wait = 0.5
            if self._leading:
                try:
                    wait = self.queues.promote_due()
                except Exception as exc:  # noqa: BLE001 - the next round retries
                    log.warning("moving due retries failed: %s", exc)
            self._stop.wait(wait)

    def _reap_reply_queues(self) -> None:
        keys = self.registry.keys
        r = self.registry.r
        stale = r.zrangebyscore(keys.clients, "-inf", now_ms())
        if not stale:
            return
        if self.settings.broker_url.startswith(("redis", "rediss")):
            r.delete(*stale)  # a dead caller's reply list (late replies nobody reads)
        r.zrem(keys.clients, *stale)
