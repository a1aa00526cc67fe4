"""The engine process: the registry's front door and the home of the modules' engine parts.

The engine is a worker of the built-in functions, so calling it is like calling any
function, and several engines share the load as competing consumers. It records workers
and their triggers (``engine::workers::register``), checking every trigger against the
enabled modules, serves the modules' built-ins, and runs their duties. Duties that must
happen once (sweeping dead workers, answering their in-flight calls with
``invocation_stopped``, reaping abandoned reply queues, the modules' elected duties) run
only in the engine that holds the sweeper lock in Redis.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from ..app import App
from ..client import Caller
from ..errors import PayloadError, TriggerConfigError
from ..function import check_function_id
from ..message import now_ms
from ..modules import Duty, EngineConfig, Module, all_trigger_types, check_custom_type, module_of
from ..outage import Backoff, is_outage, outage_for, store_outage
from ..registry import Registry
from ..runtime import Worker
from ..runtime.orphans import answer_orphaned_calls
from ..runtime.registration import remove_dead_worker
from ..settings import Settings
from ..trigger import TriggerDef, check_trigger_type_id

log = logging.getLogger("iii.engine")


class Engine:
    """Serves the built-ins, records registrations and keeps the registry clean."""

    def __init__(self, settings: Settings, config: EngineConfig | None = None,
                 concurrency: int = 8) -> None:
        self.settings = settings
        self.config = config or EngineConfig.load(settings.config_path)
        self.app = App("engine", settings=settings)
        self.app._builtin = True
        self.worker = Worker(self.app, settings, concurrency=concurrency,
                             registrar=self._register_self, modules=self.config.modules,
                             kind="engine")
        self.registry: Registry = self.worker.registry
        self.engine_id = self.worker.worker_id
        self.publisher = self.worker.publisher
        self._stop = threading.Event()
        self._leading = False
        self._lapsed: dict[str, float] = {}  # worker id -> when this engine first saw it lapsed
        self._sweep_after = 0.0  # monotonic: no worker is removed before (after an outage)
        self.app.register_function("engine::workers::register", self.register_worker,
                                   description="Called by a starting worker (internal)")
        for module in self.modules:
            for builtin in module.builtins(self):
                self.app.register_function(builtin.function_id, builtin.handler,
                                           description=builtin.description)
        self._duties: list[Duty] = [d for m in self.modules for d in m.duties(self)]

    # -- what modules see (modules.hosts.EngineHost) --------------------------------

    @property
    def caller(self) -> Caller:
        return self.app.caller

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def modules(self) -> Sequence[Module]:
        return self.config.modules

    def module(self, name: str) -> Module | None:
        return self.config.module(name)

    def add_triggers(self, triggers: list[dict[str, Any]]) -> list[str]:
        """Check and record engine-owned triggers; returns their ids."""
        checked = self._check_triggers(triggers, owner="engine")
        with self._registering(checked):
            for t in checked:
                self.registry.add_engine_trigger(t)
        self._registered(checked)
        return [t["id"] for t in checked]

    # -- running --------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`stop`); returns the exit code. Without
        ``install_signals`` (another thread than the main one) only :meth:`stop` ends it.
        Raises :class:`BrokerUnavailable` when Redis or the broker cannot be reached at start;
        once running, the engine rides out outages of any length."""
        self.worker.check_servers()
        self.seed()
        for module in self.modules:
            module.engine_started(self)
        threads = [threading.Thread(target=self._sweep_loop, name="iii-sweeper", daemon=True)]
        threads += [threading.Thread(target=self._duty_loop, args=(duty,), name=f"iii-{duty.name}",
                                     daemon=True) for duty in self._duties]
        for thread in threads:
            thread.start()
        try:
            return self.worker.run(install_signals=install_signals, checked=True)
        finally:
            self._stop.set()
            for thread in threads:  # a round under way finishes before the lock is given back
                thread.join(5)
            try:
                self.registry.release(self.registry.keys.sweeper_lock, self.engine_id)
            except Exception as exc:  # noqa: BLE001 - Redis is down: the lock's lease runs out
                log.info("could not give the sweeper lock back (%s): it expires on its own", exc)

    def stop(self) -> None:
        """Stop serving (as SIGTERM does); :meth:`run` returns."""
        self.worker.stop()

    def seed(self) -> None:
        """Have every module write what the cluster reads from Redis (``Module.seed``), then
        mark it done (``NS:seeded``): an engine that finds the mark gone (Redis restarted
        empty) seeds again. Raises ``RedisError``."""
        for module in self.modules:
            module.seed(self)
        # Which modules the settings file enables, for processes that do not read it (workers)
        self.registry.r.set(self.registry.keys.modules,
                            json.dumps(sorted(m.name for m in self.modules)))
        self.registry.r.set(self.registry.keys.seeded, self.engine_id)

    def _duty_loop(self, duty: Duty) -> None:
        """Run ``duty`` every interval; through an outage, back off (capped) and leave the
        logging to the outage's one line; log any other failure once until it changes."""
        backoff = Backoff()
        last_error = ""
        while not self._stop.is_set():
            wait = duty.interval_s
            if self._leading or not duty.elected:
                try:
                    asked = duty.run()
                    if asked is not None:
                        wait = asked
                    backoff.reset()
                    last_error = ""
                except Exception as exc:  # noqa: BLE001 - the next round retries
                    if is_outage(exc):
                        outage_for(self.settings, exc).failed(exc)
                        wait = max(wait, backoff.next())
                    elif str(exc) != last_error:
                        last_error = str(exc)
                        log.warning("%s failed: %s", duty.name, exc)
            self._stop.wait(wait)

    # -- registration ---------------------------------------------------------------

    def register_worker(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Check a worker's triggers against the enabled modules and record it (again, after
        a change: what it no longer has is let go)."""
        worker, functions = _checked_registration(payload)
        triggers = self._check_triggers(payload.get("triggers", []), owner="worker")
        provided = _checked_types(payload.get("trigger_types", []))
        before = self.registry.worker_field(worker["id"], "trigger_types") or []
        worker = dict(worker, trigger_types=[t["id"] for t in provided])
        ttl_ms = int(self.settings.heartbeat_ttl_s * 1000)
        with self._registering(triggers):
            live = self.registry.register_worker(worker, functions, triggers, ttl_ms)
        if provided or before:
            self.registry.provide_types(worker["id"], provided,
                                        dropped=sorted(set(before) - {t["id"] for t in provided}))
        self._registered(triggers)
        log.info("registered %s %s (%s) with %d function(s), %d trigger(s)",
                 worker.get("kind", "worker"), worker["id"], worker.get("name"),
                 len(functions), len(triggers))
        return {"worker_id": worker["id"], "triggers": [t["id"] for t in triggers],
                "functions_now_live": live}

    def _check_triggers(self, raw: list[Any], *, owner: str) -> list[dict[str, Any]]:
        types = self.config.trigger_types
        triggers = []
        for item in raw:
            tdef = TriggerDef.from_dict(item)
            if tdef.type in types:
                checked = types[tdef.type].validate(tdef.config, tdef.function_id)
            elif module_of(tdef.type) is not None:
                raise TriggerConfigError(
                    f"trigger type {tdef.type!r} (for {tdef.function_id!r}) "
                    f"{self._why_missing(tdef.type)}; enabled types: {', '.join(sorted(types))}",
                    function_id=tdef.function_id)
            else:  # a custom type: a worker provides it (or will; till then it waits)
                check_custom_type(tdef.type, all_trigger_types(), tdef.function_id)
                self.registry.note_custom_type(tdef.type)
                checked = tdef.config
            tdef = TriggerDef(tdef.type, tdef.function_id, checked, tdef.metadata, owner=owner)
            triggers.append(tdef.to_dict())
        return triggers

    def _registering(self, triggers: list[dict[str, Any]]) -> ExitStack:
        """Every module's checks (and locks) around recording ``triggers``."""
        stack = ExitStack()
        try:
            for module in self.modules:
                stack.enter_context(module.registering(self, triggers))
        except BaseException:
            stack.close()
            raise
        return stack

    def _registered(self, triggers: list[dict[str, Any]]) -> None:
        for module in self.modules:
            module.triggers_registered(self, triggers)

    def _why_missing(self, trigger_type: str) -> str:
        """Why a trigger type is not available: its module is disabled (and where), or unknown."""
        module_cls = module_of(trigger_type)
        if module_cls is not None:
            where = self.config.path or "the engine settings"
            return f"is not enabled: module {module_cls.name!r} is disabled in {where}"
        return "is unknown: no module provides it"

    def _register_self(self, worker: Worker) -> None:
        ttl_ms = int(self.settings.heartbeat_ttl_s * 1000)
        self.registry.register_worker(
            worker.info(), [f.info() for f in self.app.functions.values()], [], ttl_ms)

    # -- sweeping -------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        """Every half interval: seed again if Redis lost the seed, take or renew the sweeper
        lock, and sweep while holding it. Through a store outage of any length it keeps
        trying (the outage is logged once) and, once back, gives every worker a lease's
        length to beat again before any is removed."""
        interval = self.settings.heartbeat_interval_s
        lock_ttl_ms = int(self.settings.heartbeat_ttl_s * 1000)
        outage = store_outage(self.settings)
        last_error = ""
        while not self._stop.wait(interval / 2):
            try:
                if not self.registry.r.exists(self.registry.keys.seeded):
                    log.warning("Redis lost what the engine seeds (restarted empty?): "
                                "writing it again")
                    self.seed()
                outage.recovered()
                leading = self.registry.acquire(self.registry.keys.sweeper_lock,
                                                self.engine_id, lock_ttl_ms)
                if leading != self._leading:
                    log.info("engine %s %s the sweeper duty", self.engine_id,
                             "took" if leading else "lost")
                    self._leading = leading
                if leading:
                    self.sweep()
                last_error = ""
            except Exception as exc:  # noqa: BLE001 - the next round retries
                if is_outage(exc):
                    outage_for(self.settings, exc).failed(exc)
                    self._lapsed.clear()  # leases lapse during an outage: count afresh after
                    self._sweep_after = time.monotonic() + self.settings.heartbeat_ttl_s
                elif str(exc) != last_error:
                    last_error = str(exc)
                    log.warning("sweep failed: %s", exc)

    def sweep(self) -> None:
        """Remove workers whose heartbeat lapsed and stop their in-flight calls; answer calls
        still queued for functions that lost their last worker.

        A worker must stay lapsed for one more heartbeat interval, as this engine sees it:
        a stall (a slow Redis, a paused VM) lapses every lease at once, and the live
        workers beat again within an interval of it ending. After an outage of the store
        (seen by this engine) no worker is removed for a whole lease."""
        now = time.monotonic()
        lapsed = self.registry.expired_workers()
        self._lapsed = {w: self._lapsed.get(w, now) for w in lapsed}
        for worker_id in lapsed:
            if now < self._sweep_after:
                break
            if now - self._lapsed[worker_id] < self.settings.heartbeat_interval_s:
                continue
            stopped, removed = remove_dead_worker(self.settings, self.registry, self.publisher,
                                                  worker_id, "died")
            log.warning("worker %s missed its heartbeats: removed; %d call(s) stopped; "
                        "functions now without workers: %s", worker_id, stopped,
                        ", ".join(removed) or "none")
        late = [fid for fid in self.registry.orphaned() if not self.registry.function_live(fid)]
        if late:
            answer_orphaned_calls(self.settings, self.registry, self.publisher, late,
                                  lost_by="gone", note=False)
        self._reap_reply_queues()

    def _reap_reply_queues(self) -> None:
        keys = self.registry.keys
        r = self.registry.r
        stale = r.zrangebyscore(keys.clients, "-inf", now_ms())
        if not stale:
            return
        if not self.settings.uses_amqp:
            r.delete(*stale)  # a dead caller's reply list (late replies nobody reads)
        r.zrem(keys.clients, *stale)


def _checked_types(raw: Any) -> list[dict[str, Any]]:
    """The custom trigger types a registration provides; raises :class:`TriggerConfigError`
    for a malformed one or a built-in type's id."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise PayloadError("a registration's trigger_types must be a list of objects")
    builtin = all_trigger_types()
    for t in raw:
        check_trigger_type_id(t.get("id"))
        if t["id"] in builtin:
            raise TriggerConfigError(f"trigger type {t['id']!r} is built in: a module "
                                     "provides it; a worker cannot")
    return [{"id": t["id"], "description": str(t.get("description") or "")} for t in raw]


def _checked_registration(payload: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The worker and its functions from an ``engine::workers::register`` payload; raises
    :class:`PayloadError` for a malformed one and :class:`InvalidFunctionId` for an id no
    app may register (apps check their ids, a hand-built registration may not have)."""
    worker = payload.get("worker") if isinstance(payload, dict) else None
    if not isinstance(worker, dict) or not isinstance(worker.get("id"), str) or not worker["id"]:
        raise PayloadError("a registration needs {\"worker\": {\"id\": ...}, \"functions\": [...]}")
    functions = payload.get("functions", [])
    if not isinstance(functions, list) or not all(isinstance(f, dict) for f in functions):
        raise PayloadError("a registration's functions must be a list of objects")
    for function in functions:
        check_function_id(function.get("function_id"))
    return worker, functions
