"""The reply side of sync calls: one reply queue and one Kombu consumer per process.

Kombu connections are not thread-safe, so one thread at a time holds the *drain
role* and runs the consumer; every reply it reads resolves the future of whichever
call it answers. A thread waiting for its own reply takes the role itself when it is
free, so the common case (one call at a time) reads its reply without handing it
from thread to thread. Other waiting threads follow: they are woken when their reply
has been read, or take the role when it is released. A background thread drains for
``async`` callers (they must not block their event loop) and renews the queue's
lease in Redis, so the engine can delete the queue of a process that went away.

With a ``redis://`` broker the queue is read with plain BRPOPs (:class:`_RedisReplies`):
the same list and message format as Kombu's Redis transport, without its poller,
channel and message objects on every reply.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import redis
from kombu import Connection, Consumer, Queue
from kombu.transport import redis as kombu_redis

from . import envelope, resp
from .errors import BrokerUnavailable, PayloadError
from .message import now_ms, parse_reply
from .outage import broker_outage
from .settings import BrokerKind, Settings, mask_url
from .store import Keys, RedisError
from .transport import connect, ensure_connected

log = logging.getLogger("iii.client")

# The longest one drain may block; bounds how late a waiter notices a stop or deadline.
_DRAIN_S = 0.25
_RECONNECT_S = 0.2
# Replies read at once after a first one arrived (one RPOP with a count).
_DRAIN_BATCH = 128


class ReplyConsumer:
    """Owns the process's reply queue and resolves waiting calls by correlation id."""

    def __init__(self, settings: Settings, queue: Queue, store: Any) -> None:
        self.settings = settings
        self.queue = queue
        self.store = store
        self.keys = Keys(settings.namespace)
        self._pending: dict[str, Future[Any]] = {}
        self._cv = threading.Condition()
        self._draining = False       # someone holds the drain role
        self._followers: deque[threading.Event] = deque()  # sync waiters not draining
        self._async_waiters = 0
        self._conn: Connection | _RedisReplies | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # redis:// only: reply lists of their own for sync waiters, one call at a time each.
        self.direct = settings.broker_kind is BrokerKind.REDIS  # as transport.connect decides
        self._free_slots: deque[_RedisReplies] = deque()
        self._slots: list[_RedisReplies] = []
        self._slots_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Declare and consume the reply queue (before any call is published, so an AMQP
        broker can route replies to it); raises BrokerUnavailable."""
        if self._conn is not None and self._thread is not None:
            return
        self._take_role()
        try:
            if self._conn is None:
                self._connect()
        finally:
            self._release_role()
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(target=self._background, name="iii-replies",
                                                daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._cv:
            self._closed = True  # whoever holds the role disconnects when it lets go
            idle = not self._draining
            if idle:
                self._draining = True
        if idle:
            self._disconnect()
        with self._slots_lock:
            slots, self._slots = self._slots, []
            self._free_slots.clear()
        for slot in slots:
            slot.release()
        try:
            self.store.zrem(self.keys.clients, self.queue.name, *(s.name for s in slots))
        except RedisError:
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    # -- waiting --------------------------------------------------------------------

    def expect(self, invocation_id: str) -> Future[Any]:
        """A future for the reply to ``invocation_id`` (register it before publishing)."""
        fut: Future[Any] = Future()
        self._pending[invocation_id] = fut
        return fut

    def hold(self, fut: Future[Any]) -> None:
        """Have the background thread read replies until ``fut`` is done: for a call whose
        caller does not wait in a thread of its own (:meth:`Caller.submit`)."""
        with self._cv:
            self._async_waiters += 1
        self._wake.set()

        def done(_fut: Future[Any]) -> None:
            with self._cv:
                self._async_waiters -= 1
        fut.add_done_callback(done)

    def forget(self, invocation_id: str) -> None:
        """Stop waiting: a reply that still comes is dropped."""
        self._pending.pop(invocation_id, None)

    def checkout(self) -> _RedisReplies | None:
        """A reply list of its own for one sync call (``redis://`` brokers; else None).

        Its waiter reads its reply with its own BRPOP, as a bare redis-py client would:
        no drain role, no hand-off between threads. Give it back with :meth:`checkin`.
        Raises :class:`BrokerUnavailable` when Redis does not answer.
        """
        if not self.direct:
            return None
        try:
            return self._free_slots.pop()
        except IndexError:
            pass
        with self._slots_lock:
            name = f"{self.queue.name}.{len(self._slots) + 1}"
            slot = _RedisReplies(self.settings, name, None)
            self._slots.append(slot)
        self._lease([name])  # reaped with the process's own queue when it goes away
        return slot

    def checkin(self, slot: _RedisReplies) -> None:
        if slot._sent:  # a BRPOP's answer is still due: the next user must not read it
            slot.release()
        if not self._closed:
            self._free_slots.append(slot)  # one whose connection broke reconnects when used

    def wait_slot(self, slot: _RedisReplies, invocation_id: str, timeout_s: float) -> Any:
        """The result of ``invocation_id`` read from ``slot`` (its error raised); FutureTimeout
        after ``timeout_s``. Older replies on the list (of calls that timed out) are dropped."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                raise FutureTimeout()
            try:
                body = slot.pop(min(remaining, _DRAIN_S))
            except Exception as exc:  # noqa: BLE001 - reconnect whatever broke, or give up
                broker_outage(self.settings).failed(exc)
                try:
                    slot.reconnect()
                except BrokerUnavailable as down:  # the reply cannot come: say so now
                    raise BrokerUnavailable(
                        f"lost the broker while waiting for the reply: {down.message}",
                        invocation_id=invocation_id) from exc
                continue
            if body is None:
                continue
            try:
                inv_id, result, error = parse_reply(body)
            except Exception:  # noqa: BLE001 - a reply we cannot read answers nobody
                log.warning("dropped an unreadable reply: %r", body[:200])
                continue
            if inv_id != invocation_id:
                log.debug("dropped a late reply for invocation %s", inv_id)
                continue
            if error is not None:
                raise error
            return result

    def wait(self, fut: Future[Any], timeout_s: float) -> Any:
        """The reply's result (or its error raised); FutureTimeout after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        wake = threading.Event()  # set when our reply is read, or when the role is ours to take
        fut.add_done_callback(lambda _f: wake.set())
        while not fut.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():  # closed: no reply will be read
                raise FutureTimeout()
            with self._cv:
                if fut.done():
                    break
                if self._draining:  # follow: only our own reply or a free role wakes us
                    self._followers.append(wake)
                    lead = False
                else:
                    self._draining = True
                    lead = True
            if not lead:
                wake.wait(min(remaining, _DRAIN_S))
                wake.clear()
                with self._cv:
                    if wake in self._followers:
                        self._followers.remove(wake)
                continue
            try:
                while not fut.done() and time.monotonic() < deadline and not self._stop.is_set():
                    self._drain_once(min(deadline - time.monotonic(), _DRAIN_S))
            finally:
                self._release_role()
        return fut.result(timeout=0)

    async def await_reply(self, fut: Future[Any], timeout_s: float, *,
                          every: Callable[[], None] | None = None, every_s: float = 1.0) -> Any:
        """:meth:`wait` for async code: the background thread drains meanwhile. TimeoutError
        after ``timeout_s``; ``every`` (which may raise) is called each ``every_s`` of waiting."""

        with self._cv:
            self._async_waiters += 1
        self._wake.set()
        waiting = asyncio.wrap_future(fut)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError()
                step = min(remaining, every_s) if every is not None else remaining
                done, _ = await asyncio.wait({waiting}, timeout=step)
                if done:
                    return waiting.result()
                if every is not None and time.monotonic() < deadline:
                    every()
        finally:
            if not waiting.done():
                waiting.cancel()  # nobody reads it now: no "exception never retrieved"
            with self._cv:
                self._async_waiters -= 1

    # -- draining -------------------------------------------------------------------

    def _take_role(self) -> None:
        with self._cv:
            while self._draining:
                self._cv.wait()
            self._draining = True

    def _release_role(self) -> None:
        with self._cv:
            self._draining = False
            self._cv.notify_all()  # start() and close() wait on the condition
            if self._followers:
                self._followers.popleft().set()  # one follower takes the role
            elif self._async_waiters:
                self._wake.set()
            if self._closed:
                self._disconnect()

    def _connect(self) -> None:
        """(Re)connect and consume; only the role holder calls this."""
        self._disconnect()
        if self.settings.broker_kind is BrokerKind.REDIS:  # as transport.connect decides
            self._conn = _RedisReplies(self.settings, self.queue.name, self._on_body)
            return
        conn = connect(self.settings)
        try:
            ensure_connected(conn, self.settings)
            Consumer(conn.channel(), [self.queue], on_message=self._on_reply, no_ack=True,
                     accept=["application/json"]).consume()
        except BaseException:
            conn.release()
            raise
        self._conn = conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def _drain_once(self, timeout: float) -> None:
        """Read what replies arrive within ``timeout``; only the role holder calls this."""
        try:
            if self._conn is None:
                self._connect()
            assert self._conn is not None
            self._conn.drain_events(timeout=max(timeout, 0.001))
        except TimeoutError:
            pass
        except Exception as exc:  # noqa: BLE001 - reconnect whatever broke
            if isinstance(exc, OSError) and "timed out" in str(exc):
                return
            broker_outage(self.settings).failed(exc)
            self._disconnect()
            try:
                self._connect()
            except BrokerUnavailable as down:  # no reply can come: every waiter hears it now
                self._fail_pending(down)
                self._stop.wait(_RECONNECT_S)

    def _fail_pending(self, down: BrokerUnavailable) -> None:
        """Answer every call waiting on this queue with ``broker_unavailable``."""
        while True:
            try:
                invocation_id, fut = self._pending.popitem()
            except KeyError:
                return
            if not fut.done():
                fut.set_exception(BrokerUnavailable(
                    f"lost the broker while waiting for the reply: {down.message}",
                    invocation_id=invocation_id))

    def _on_reply(self, message: Any) -> None:
        self._on_body(message.body)

    def _on_body(self, body: bytes | str) -> None:
        try:
            inv_id, result, error = parse_reply(body)
        except Exception:  # noqa: BLE001 - a reply we cannot read answers nobody
            log.warning("dropped an unreadable reply: %r", body[:200])
            return
        fut = self._pending.pop(inv_id, None)
        if fut is None:
            log.debug("dropped a late reply for invocation %s", inv_id)
            return
        if error is not None:  # the future's callback wakes its waiter, and only it
            fut.set_exception(error)
        else:
            fut.set_result(result)

    def _background(self) -> None:
        interval = self.settings.heartbeat_interval_s
        last_beat = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_beat >= interval:
                self._beat()
                last_beat = now
            with self._cv:
                lead = bool(self._async_waiters and not self._draining and self._pending
                            and not self._followers)
                if lead:
                    self._draining = True
            if not lead:
                self._wake.wait(interval)
                self._wake.clear()
                continue
            try:
                self._drain_once(0.05)  # short: a sync waiter may want the role
            finally:
                self._release_role()

    def _beat(self) -> None:
        """Renew this reply queue's lease (the engine reaps queues whose lease lapsed)."""
        self._lease([self.queue.name, *(s.name for s in list(self._slots))])

    def _lease(self, names: list[str]) -> None:
        expiry = now_ms() + int(self.settings.heartbeat_ttl_s * 1000 * 10)
        try:
            self.store.zadd(self.keys.clients, dict.fromkeys(names, expiry))
        except RedisError:
            pass


class _RedisReplies:
    """A reply queue on Kombu's Redis transport, read with BRPOP on its own connection.

    Kombu keeps a queue as one Redis list per priority step (``name``, ``name\\x06\\x163``,
    ...) of JSON envelopes whose ``body`` is base64 (``properties.body_encoding``); this
    reads the same lists, highest priority first as Kombu does, one reply per call.
    Raises :class:`BrokerUnavailable` when Redis does not answer.
    """

    def __init__(self, settings: Settings, queue: str, on_body: Any) -> None:
        sep = kombu_redis.Channel.sep
        self.name = queue
        self.keys = [f"{queue}{sep}{p}" if p else queue for p in kombu_redis.PRIORITY_STEPS]
        self.on_body = on_body
        self.settings = settings
        self.client: redis.Redis | None = None
        self._sent = False  # a BRPOP went out with the last push; its answer is unread
        self._batch = True  # RPOP with a count works (Redis >= 6.2)
        self.reconnect()

    def reconnect(self) -> None:
        """A fresh connection; raises :class:`BrokerUnavailable` when Redis does not answer."""
        self.release()
        client = None
        try:
            client = resp.client(self.settings.broker_url)  # connects (a single-connection client)
            client.ping()
        except redis.RedisError as exc:
            if client is not None:
                client.close()
            raise BrokerUnavailable(
                f"cannot reach the broker at {mask_url(self.settings.broker_url)}: {exc}",
                server=self.settings.broker_url) from exc
        self.client = client

    def push_then_pop(self, packed: bytes, timeout: float) -> Any:
        """Send ``packed`` (the call's LPUSH) and, in the same write, the BRPOP of its reply
        (waiting up to ``timeout`` s): one round trip fewer per call. Returns the LPUSH's
        answer; the next :meth:`pop` reads the BRPOP's. Raises ``redis.RedisError``."""
        if self.client is None:
            self.reconnect()
            assert self.client is not None
        conn = self.client.connection
        assert conn is not None  # a single-connection client
        try:
            conn.send_packed_command(
                [packed + resp.pack("BRPOP", *self.keys, resp.seconds(timeout))],
                check_health=False)
            self._sent = True
            return conn.read_response()
        except BaseException:
            self.release()  # the BRPOP's answer may be pending: start clean
            raise

    def pop(self, timeout: float) -> str | None:
        """The body of the next reply within ``timeout`` seconds, else None; raises
        ``redis.RedisError`` (or BrokerUnavailable when not connected)."""
        if self._sent:  # its BRPOP went out with the call (push_then_pop)
            self._sent = False
            conn = self.client.connection if self.client is not None else None
            assert conn is not None
            try:
                item = conn.read_response()
            except BaseException:
                self.release()
                raise
        else:
            if self.client is None:
                self.reconnect()
                assert self.client is not None
            item = resp.call(self.client, resp.pack("BRPOP", *self.keys, resp.seconds(timeout)))
        if not item:
            return None
        try:
            body = envelope.decode(item[1]).body
        except PayloadError:  # not a Kombu message: it answers nobody
            log.warning("dropped an unreadable reply: %r", item[1][:200])
            return None
        return body

    def drain_events(self, timeout: float) -> None:
        """Read a reply if one comes within ``timeout`` seconds, and with it up to
        :data:`_DRAIN_BATCH` more already there (one RPOP: many replies at once cost one
        round trip, not one each); raises ``redis.RedisError``."""
        body = self.pop(timeout)
        if body is None:
            return
        self.on_body(body)
        if not self._batch or self.client is None:
            return
        try:
            more = resp.call(self.client, resp.pack("RPOP", self.keys[0], _DRAIN_BATCH))
        except redis.ResponseError:  # Redis < 6.2: RPOP takes no count
            self._batch = False
            return
        for item in more or ():
            try:
                self.on_body(envelope.decode(item).body)
            except PayloadError:
                log.warning("dropped an unreadable reply: %r", item[:200])

    def release(self) -> None:
        self._sent = False
        client, self.client = self.client, None
        if client is not None:
            client.close()
