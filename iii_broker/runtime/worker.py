"""The worker runtime: a Kombu consumer feeding handlers to a pool.

One consumer thread owns the broker connection (Kombu channels are not
thread-safe): it receives invocations, hands them to a thread pool (``async def``
handlers go to one event loop thread), and acks each message once its handler has
finished and its reply is published. Replies are published from the handler's own
thread, so a reply never waits for the consumer loop. Prefetch equals the
concurrency, raised by one for every handler that is waiting on a nested call, so
nested calls cannot deadlock even at concurrency 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kombu import Consumer

from .. import context as _context
from ..app import App
from ..errors import BrokerUnavailable, IIIError, PayloadError
from ..function import FunctionDef
from ..message import Invocation, Limits, dumps, now_ms
from ..modules import Module, Service, default_modules
from ..observe import Observers, Run
from ..outage import Backoff, broker_outage, is_outage, outage_for, store_outage
from ..redis_transport import RedisFetcher
from ..registry import Registry
from ..settings import BrokerKind, Settings
from ..store import Keys, RedisError, connect_store
from ..transport import (
    Publisher,
    RedisQoS,
    broker_errors,
    check_servers,
    connect,
    consumer_heartbeat_s,
    ensure_connected,
    function_queue,
)
from ..trigger import TriggerDef, TriggerTypeDef
from .deadletters import DeadLetters
from .handlers import Handlers, failed_reply, ok_reply
from .pool import HandlerPool
from .registration import keep_registered, leave_registry, register_with_engine

log = logging.getLogger("iii.worker")

Registrar = Callable[["Worker"], None]

_IDLE_POLL_S = 0.5
_BUSY_POLL_S = 0.02
# A sync call still running this long after delivery gets its in-flight record (which
# lets the engine answer invocation_stopped if this worker dies). Shorter calls never
# touch Redis for it; a worker killed within this window of a call's start leaves that
# caller to its timeout instead.
INFLIGHT_RECORD_DELAY_S = 0.002


class Worker:
    """Serves the functions of one :class:`App` until stopped."""

    def __init__(
        self,
        app: App,
        settings: Settings | None = None,
        *,
        concurrency: int = 8,
        registrar: Registrar | None = None,
        modules: list[Module] | None = None,
        kind: str = "worker",
        worker_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.app = app
        self.settings = settings or app.settings
        self.concurrency = concurrency
        self.kind = kind
        # Modules may add to each call's Context; a worker without the engine's settings
        # file uses every built-in module with its defaults.
        self.modules = list(modules) if modules is not None else default_modules()
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.keys = Keys(self.settings.namespace)
        self.store = connect_store(self.settings)
        self.registry = Registry(self.store, self.settings.namespace)
        self.publisher = Publisher(self.settings)
        self._registrar = registrar or register_with_engine
        self.dead_letters = DeadLetters(self.store, self.keys, self.publisher, self.worker_id)
        self._done: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()  # C: no Python locks
        self._in_flight: dict[str, Any] = {}   # delivery key -> kombu message
        self._blocked = 0
        self._stopping = threading.Event()
        self._hard_stop = threading.Event()
        self._stopped = threading.Event()
        self._pool = HandlerPool(max_workers=concurrency * 2 + 32,
                                 thread_name_prefix="iii-handler")
        self.limits = Limits.of(self.settings)
        self.handlers = Handlers(app, self.modules)  # observers join once it serves (run)
        self._consumer: Consumer | None = None
        self._qos: RedisQoS | None = None  # batches acks and in-flight records (Redis)
        self._fetcher: RedisFetcher | None = None  # pops messages itself (redis:// brokers)
        self.started_at = now_ms()
        self.services: list[Service] = []
        self._consuming: set[str] = set()   # function ids whose queues the consumer reads
        self._dropped: set[str] = set()     # function ids unregistered while running
        self._changed = threading.Event()   # the app's functions or triggers changed
        self._follow_after = 0.0  # monotonic: a registration that failed is tried again then
        self.inflight_record_delay_s = INFLIGHT_RECORD_DELAY_S

    # -- public ---------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What the registry stores about this worker."""
        return {
            "id": self.worker_id, "name": self.app.name, "kind": self.kind,
            "host": socket.gethostname(), "pid": os.getpid(),
            "concurrency": self.concurrency, "started_at": self.started_at,
            "runtime": "python",
        }

    def check_servers(self) -> None:
        """Reach the store and the broker once; raises :class:`BrokerUnavailable` naming the
        (masked) URL. At start a process fails fast (a wrong URL is the usual cause, and a
        supervisor restarts it); once running it rides out any outage."""
        check_servers(self.settings, self.store)

    def run(self, *, install_signals: bool = True, checked: bool = False) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`stop`); returns the exit code. Raises
        :class:`BrokerUnavailable` when the store or the broker cannot be reached at start
        (``checked``: the caller already made sure they could)."""
        if not checked:
            self.check_servers()
        if install_signals:
            self._install_signals()
        for module in self.modules:
            module.process_started(self.kind, self.settings)
        self.handlers.observers = Observers([o for m in self.modules for o in m.observers(self)])
        self.app.caller.on_block = self._on_block
        self.app.on_change(self._on_app_change)
        self._registrar(self)
        beat = threading.Thread(target=keep_registered, args=(self, self._registrar, self._stopped),
                                name="iii-heartbeat", daemon=True)
        beat.start()
        if not self.app._builtin:
            self.services = [s for m in self.modules for s in m.worker_services(self)]
        for service in self.services:
            service.start()
        try:
            self._consume()
        finally:
            for service in self.services:
                service.stop()
            left = sum(service.drain(self._hard_stop) for service in self.services)
            if left:
                log.warning("stopped with %d job(s) running: they go back to their queues", left)
            self.app.on_change(self._on_app_change, remove=True)
            self._stopped.set()
            leave_registry(self)
            self._pool.shutdown(wait=not self._hard_stop.is_set(), cancel_futures=True)
            self.handlers.observers.flush(0.5 if self._hard_stop.is_set() else 5.0)
            self.handlers.observers.close()
            self.handlers.close()
            self.publisher.close()
            self.app.close()
        return 0

    # -- what modules' services see (modules.hosts.WorkerHost) ----------------------

    @property
    def app_name(self) -> str:
        return self.app.name

    @property
    def functions(self) -> dict[str, FunctionDef]:
        return self.app.functions

    @property
    def triggers(self) -> list[TriggerDef]:
        return self.app.triggers

    @property
    def trigger_types(self) -> dict[str, TriggerTypeDef]:
        return self.app.trigger_types

    @property
    def hard_stopping(self) -> bool:
        return self._hard_stop.is_set()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the handler pool."""
        self._pool.submit(fn, *args)

    def call(self, function_id: str, payload: Any) -> Any:
        return self.app.trigger(function_id, payload)

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for (the worker is draining or gone)."""
        return self._stopping.is_set()

    def stop(self, *, hard: bool = False) -> None:
        """Stop taking work; finish what runs (unless ``hard``) and return from :meth:`run`."""
        if hard:
            self._hard_stop.set()
        self._stopping.set()
        fetcher = self._fetcher
        if fetcher is not None:
            fetcher.wake()  # its blocking pop returns now, not at its timeout

    # -- consuming ------------------------------------------------------------------

    def _on_app_change(self) -> None:
        """The app gained or lost a function or trigger (any thread): the consumer loop
        follows it at once, not when its blocking pop times out."""
        self._changed.set()
        fetcher = self._fetcher
        if fetcher is not None:
            fetcher.wake()

    def _queues(self) -> list[Any]:
        self._consuming = set(self.app.functions)
        return [function_queue(self.settings, fid) for fid in self._consuming]

    def _follow_app(self) -> None:
        """Consumer thread: the app gained or lost functions or triggers while running
        (``register_function``, ``unregister()``): consume the queues of the functions it has
        now, and tell the engine what this worker serves and declares."""
        self._changed.clear()
        try:
            self._registrar(self)  # first, so callers stop finding what this worker dropped
        except IIIError as exc:
            if is_outage(exc):  # tried again once the broker or Redis is back
                outage_for(self.settings, exc).failed(exc)
                self._follow_after = time.monotonic() + 1.0
                self._changed.set()
            else:
                log.error("could not update this worker's registration: %s", exc)
        except RedisError as exc:
            store_outage(self.settings).failed(exc)
            self._follow_after = time.monotonic() + 1.0
            self._changed.set()
        consumer = self._consumer
        wanted = set(self.app.functions)
        if consumer is None:
            return
        dropped = sorted(self._consuming - wanted)
        added = sorted(wanted - self._consuming)
        self._dropped = (self._dropped | set(dropped)) - wanted
        for fid in added:
            consumer.add_queue(function_queue(self.settings, fid))  # declares it
        if self._fetcher is not None:
            self._fetcher.set_queues([function_queue(self.settings, fid).name
                                      for fid in sorted(wanted)])
        else:
            for fid in dropped:
                consumer.cancel_by_queue(function_queue(self.settings, fid).name)
            if added:
                consumer.consume()
        self._consuming = wanted

    def _consume(self) -> None:
        """Consume until stopped, reconnecting (capped backoff) through broker outages of any
        length: one log line when the broker goes away, one when it is back."""
        backoff = Backoff()
        outage = broker_outage(self.settings)
        announced = False
        heartbeat_s = consumer_heartbeat_s(self.settings) if self.settings.uses_amqp else 0
        while not self._stopping.is_set():
            conn = connect(self.settings, heartbeat_s=heartbeat_s)
            try:
                ensure_connected(conn, self.settings)
                channel = conn.channel()
                qos = getattr(channel, "qos", None)  # only virtual transports have one
                self._qos = qos if isinstance(qos, RedisQoS) else None
                if hasattr(channel, "on_undecodable"):
                    channel.on_undecodable = self.dead_letters.undecodable
                if self._qos is not None:
                    self._qos.inflight_key = self.keys.inflight(self.worker_id)
                    self._qos.persist_unacked = False  # calls are at most once (iii §2)
                    self._qos.inflight_delay_s = self.inflight_record_delay_s
                self._consumer = Consumer(channel, self._queues(), on_message=self._on_message,
                                          accept=["application/json"], auto_declare=True)
                self._consumer.qos(prefetch_count=self.concurrency, apply_global=True)
                if self._qos is not None and self.settings.broker_kind is BrokerKind.REDIS:
                    # Same queues, messages and QoS; Kombu's poller is skipped.
                    queues: list[Any] = list(self._consumer.queues or ())
                    self._fetcher = RedisFetcher(
                        channel, [q.name for q in queues],
                        self.settings.broker_url, self._on_message,
                        self.dead_letters.undecodable,
                        self.keys.worker_wake(self.worker_id, "calls"))
                else:
                    self._consumer.consume()
                outage.recovered()
                if not announced:
                    log.info("%s %s consuming %d function(s) at concurrency %d",
                             self.kind, self.worker_id, len(self.app.functions), self.concurrency)
                    announced = True
                backoff.reset()
                self._loop_until_stop(conn)
                self._drain(conn)
                return
            except Exception as exc:  # noqa: BLE001 - reconnect on any broker failure
                if self._stopping.is_set():
                    return
                if isinstance(exc, IIIError) and not isinstance(exc, BrokerUnavailable):
                    raise
                if is_outage(exc):
                    outage.failed(exc)
                else:
                    log.warning("consumer failed (%s: %s); reconnecting", type(exc).__name__, exc)
                self._in_flight.clear()  # unacked messages return to their queues
                self._stopping.wait(backoff.next())
            finally:
                if self._fetcher is not None:
                    self._fetcher.close()
                    self._fetcher = None
                try:
                    conn.release()  # Kombu hands back anything prefetched and unacked
                except Exception:  # noqa: BLE001
                    pass

    def _loop_until_stop(self, conn: Any) -> None:
        errors = broker_errors(conn)
        beating = bool(conn.heartbeat)  # AMQP: RabbitMQ hears from this loop or drops it
        while not self._stopping.is_set():
            if beating:
                conn.heartbeat_check()
            if self._changed.is_set() and time.monotonic() >= self._follow_after:
                self._follow_app()
            self._process_done(block=False)
            timeout = _BUSY_POLL_S if self._in_flight else _IDLE_POLL_S
            due = self._qos.next_due_s() if self._qos is not None else None
            if due is not None:
                timeout = min(timeout, due)
            free = self.concurrency + self._blocked - len(self._in_flight)
            if free <= 0:
                # Full: nothing to fetch; wait for a handler to finish (or a record to be due).
                self._process_done(block=True, timeout=_IDLE_POLL_S if due is None else timeout)
                if self._qos is not None:
                    self._process_done(block=False)
                    self._qos.flush(due_only=True)
                continue
            try:
                try:
                    if self._fetcher is not None:
                        self._fetcher.fetch(timeout, free)
                    else:
                        conn.drain_events(timeout=timeout)
                finally:
                    if self._qos is not None:
                        self._process_done(block=False)  # finished calls need no record
                        self._qos.flush(due_only=True)  # in-flight records of calls still running
            except TimeoutError:
                pass
            except errors:
                raise
            except OSError as exc:
                if "timed out" not in str(exc):
                    raise

    def _drain(self, conn: Any) -> None:
        """SIGTERM: stop taking work, finish what runs, hand back what was prefetched."""
        log.info("draining: %d invocation(s) running", len(self._in_flight))
        if self._consumer is not None:
            try:
                self._consumer.cancel()
            except Exception:  # noqa: BLE001
                pass
        while self._in_flight and not self._hard_stop.is_set():
            self._process_done(block=True, timeout=0.2)
            if conn.heartbeat:
                conn.heartbeat_check()  # acks of what is still running need the connection
        self._process_done(block=False)

    def _on_message(self, message: Any) -> None:
        if self._stopping.is_set():
            return  # left unacked: handed back when the connection closes
        try:
            inv = Invocation.from_body(message.body, message.content_type, self.limits)
        except PayloadError as exc:
            self.dead_letters.refuse(message, exc.message, code=exc.code)
            return
        except Exception as exc:  # noqa: BLE001 - RecursionError, MemoryError, ...
            # Whatever a message does to the decoder is the message's fault: raised from
            # here it would reach drain_events and look like a broken connection, and the
            # message would come back after every reconnect.
            self.dead_letters.refuse(message, f"cannot be decoded: {type(exc).__name__}: {exc}")
            return
        fdef = self.app.functions.get(inv.function_id)
        if fdef is None and inv.function_id in self._dropped:
            message.requeue()  # unregistered here while this call was on its way: not ours
            return
        if fdef is None:
            self.dead_letters.refuse(message, f"no handler for {inv.function_id!r} in app {self.app.name!r}")
            return
        if inv.deadline is not None and now_ms() > inv.deadline:
            log.info("dropped expired invocation %s of %s", inv.invocation_id, inv.function_id)
            message.ack()
            return
        props = message.properties
        reply_to, correlation_id = props.get("reply_to"), props.get("correlation_id")
        if reply_to and self._qos is None and self._answered_stopped(message, inv):
            message.ack()
            return
        key = message.delivery_tag
        self._in_flight[key] = message
        run = Run.of(inv.function_id, inv.invocation_id, inv.attempt, message.headers,
                     kind="sync" if reply_to else "void", worker_id=self.worker_id,
                     payload=inv.payload)
        job = (fdef, inv, run, reply_to, correlation_id, key)
        if fdef.is_async:
            asyncio.run_coroutine_threadsafe(self._run_async(*job), self.handlers.loop())
        else:
            self._pool.submit(self._run_sync, *job)
        if len(self._in_flight) == 1:
            time.sleep(0)  # idle worker: let the handler take the GIL before our bookkeeping
        if reply_to and self._qos is None:  # on Redis the QoS writes it with its own record
            route = {"invocation_id": inv.invocation_id, "function_id": inv.function_id,
                     "reply_to": reply_to, "correlation_id": correlation_id}
            try:
                self.store.hset(self.keys.inflight(self.worker_id), key, dumps(route))
            except RedisError as exc:
                # The store is down, the broker (AMQP) is not: the call runs without its
                # record (its caller waits for its timeout if this worker dies). Raised from
                # here it would look like a lost broker, and the call would run twice.
                store_outage(self.settings).failed(exc)

    def _answered_stopped(self, message: Any, inv: Invocation) -> bool:
        """A sync call RabbitMQ redelivers (its worker's connection died: killed, or paused
        past its heartbeats) whose caller the sweeper already answered ``invocation_stopped``:
        running it again would run it twice for one answer. Only redelivered messages pay
        the lookup; with the store down the call runs."""
        if not (message.delivery_info or {}).get("redelivered"):
            return False
        try:
            stopped = self.registry.was_stopped(inv.invocation_id)
        except RedisError as exc:
            store_outage(self.settings).failed(exc)
            return False
        if stopped:
            log.info("dropped redelivered call %s of %s: its caller was answered "
                     "invocation_stopped", inv.invocation_id, inv.function_id)
        return stopped

    def _process_done(self, *, block: bool, timeout: float = 0.0) -> None:
        finished: list[str] = []
        try:
            item = self._done.get(timeout=timeout) if block else self._done.get_nowait()
            while True:
                kind, value = item
                if kind == "qos":
                    self._blocked += value
                    if self._consumer is not None:
                        self._consumer.qos(prefetch_count=self.concurrency + self._blocked,
                                           apply_global=True)
                elif self._in_flight.pop(value, None) is not None:
                    finished.append(value)
                item = self._done.get_nowait()
        except queue.Empty:
            pass
        if not finished:
            return
        if self._qos is not None:
            self._qos.ack_many(finished)
        else:
            for tag in finished:
                self._consumer.channel.basic_ack(tag)  # type: ignore[union-attr]
            try:
                self.store.hdel(self.keys.inflight(self.worker_id), *finished)
            except RedisError as exc:  # the store is down; the broker (AMQP) is not
                store_outage(self.settings).failed(exc)

    # -- running handlers -----------------------------------------------------------

    def invoke(self, fdef: FunctionDef, inv: Invocation, run: Run) -> Any:
        """Run a handler to completion from a pool thread (``async def`` ones on the loop)."""
        return self.handlers.invoke(fdef, inv, run)

    def _run_sync(self, fdef: FunctionDef, inv: Invocation, run: Run,
                  reply_to: str | None, correlation_id: str | None, key: str) -> None:
        try:
            result = self.handlers.invoke(fdef, inv, run)
            body = ok_reply(inv, result, self.limits) if reply_to else None
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a reply
            body = failed_reply(inv, exc, log_it=not reply_to)
        self._finish(body, reply_to, correlation_id, key)

    async def _run_async(self, fdef: FunctionDef, inv: Invocation, run: Run,
                         reply_to: str | None, correlation_id: str | None, key: str) -> None:
        try:
            result = await self.handlers.invoke_async(fdef, inv, run)
            body = ok_reply(inv, result, self.limits) if reply_to else None
        except BaseException as exc:  # noqa: BLE001
            body = failed_reply(inv, exc, log_it=not reply_to)
        self._finish(body, reply_to, correlation_id, key)

    def _finish(self, body: str | None, reply_to: str | None, correlation_id: str | None,
                key: str) -> None:
        if reply_to and body is not None:
            try:
                self.publisher.publish(body, routing_key=reply_to, correlation_id=correlation_id)
            except IIIError as exc:
                if is_outage(exc):  # its caller hears broker_unavailable from its own side
                    broker_outage(self.settings).failed(exc)
                else:
                    log.error("could not publish a reply to %s: %s", reply_to, exc)
        self._done.put(("done", key))

    def _on_block(self, delta: int) -> None:
        if _context._peek() is not None:
            self._done.put(("qos", delta))

    def _install_signals(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            if self._stopping.is_set():
                log.warning("second signal: exiting now")
                os._exit(128 + signum)  # 130 for SIGINT, as shells report it
            log.info("received %s: draining (send again to exit at once)",
                     signal.Signals(signum).name)
            self.stop()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

