"""Kombu's Redis transport, tuned: same wire format, fewer round trips per message.

Used for every ``redis://`` broker URL (see :func:`iii_broker.transport.connect`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps as kombu_dumps

from . import envelope, resp
from .store import push_wake

log = logging.getLogger("iii.transport")

# Bindings of a function exchange never change after its queue is declared, so a
# publisher may trust what it read for a while instead of asking Redis every time.
_BINDINGS_TTL_S = 5.0


class RedisQoS(kombu_redis.QoS):
    """Kombu's Redis ack emulation, written in batches, with the in-flight record.

    Kombu writes each delivered message to its ``unacked`` hash before handing it
    to the consumer: one round trip in front of every handler. Here:

    - writes are buffered and flushed by the worker right after it has dispatched
      the handler (:meth:`flush`), in one pipeline, and acks of several messages go
      in one pipeline (:meth:`ack_many`);
    - ``inflight_key`` (set by a worker) receives, for each call with ``reply_to``
      still running ``inflight_delay_s`` after delivery, delivery tag -> reply route;
      the engine reads it to answer ``invocation_stopped`` when the worker dies.
      Calls that finish sooner (most) cost no Redis write at all;
    - with ``persist_unacked`` False (function invocations: at most once, iii's
      semantics for sync and Void calls), the message is kept in memory only: it is
      handed back to its queue on a clean shutdown, and never redelivered after a
      crash (its caller gets ``invocation_stopped`` instead).
    """

    inflight_key: str | None = None
    inflight_delay_s = 0.0
    persist_unacked = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[str, tuple[str | None, tuple[Any, str, str] | None, float]] = {}
        self._written: dict[str, tuple[bool, bool]] = {}   # tag -> (unacked, in-flight)
        self._volatile: dict[str, tuple[Any, str, str]] = {}

    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        exchange, routing_key = delivery["exchange"], delivery["routing_key"]
        raw = None
        if self.persist_unacked:
            raw = kombu_dumps([message._raw, exchange, routing_key])
        else:
            self._volatile[delivery_tag] = (message._raw, exchange, routing_key)
        route = None
        props = message.properties
        if self.inflight_key and props.get("reply_to"):
            # Serialized only if written: most calls finish before their record is due.
            route = (props.get("correlation_id"), props["reply_to"], routing_key)
        if raw is not None or route is not None:
            self._pending[delivery_tag] = (raw, route, time.monotonic())
        virtual.QoS.append(self, message, delivery_tag)

    def flush(self, *, due_only: bool = False) -> None:
        """Write the buffered records (one round trip). With ``due_only``, in-flight-only
        records younger than ``inflight_delay_s`` wait for a later flush."""
        if not self._pending:
            return
        now = time.monotonic()
        ripe = now - self.inflight_delay_s
        if due_only and not self.persist_unacked:
            # Only in-flight records, buffered in delivery order: the ripe ones come first.
            tags = []
            for tag, (_raw, _route, at) in self._pending.items():
                if at > ripe:
                    break
                tags.append(tag)
        else:
            tags = [tag for tag, (raw, _route, at) in self._pending.items()
                    if not due_only or raw is not None or at <= ripe]
        if not tags:
            return
        wall = time.time()
        records = [(tag, *self._pending.pop(tag)[:2]) for tag in tags]
        # In-flight records alone need no MULTI/EXEC: each HSET stands on its own.
        transaction = any(raw is not None for _tag, raw, _route in records)
        with self._pipe(transaction) as pipe:
            for tag, raw, route in records:
                if raw is not None:
                    pipe.zadd(self.unacked_index_key, {tag: wall})
                    pipe.hset(self.unacked_key, tag, raw)
                if route is not None:
                    invocation_id, reply_to, function_id = route
                    pipe.hset(self.inflight_key, tag, kombu_dumps({
                        "invocation_id": invocation_id, "correlation_id": invocation_id,
                        "reply_to": reply_to, "function_id": function_id}))
                self._written[tag] = (raw is not None, route is not None)
            pipe.execute()

    @contextmanager
    def _pipe(self, transaction: bool) -> Iterator[Any]:
        if transaction:
            with self.pipe_or_acquire() as pipe:
                yield pipe
            return
        with self.channel.conn_or_acquire() as client:
            yield client.pipeline(transaction=False)

    def next_due_s(self) -> float | None:
        """Seconds until the oldest buffered record is due, or None when none is buffered."""
        if not self._pending:
            return None
        if self.persist_unacked:
            oldest = min(at for _raw, _route, at in self._pending.values())
        else:  # buffered in delivery order
            oldest = next(iter(self._pending.values()))[2]
        return max(0.0, oldest + self.inflight_delay_s - time.monotonic())

    def ack_many(self, delivery_tags: list[str]) -> None:
        """Ack several messages in one round trip (none when nothing was written)."""
        for tag in delivery_tags:
            record = self._pending.get(tag)
            if record is not None and record[0] is None:
                del self._pending[tag]  # finished before its record was due: never written
        self.flush(due_only=True)
        written = [(tag, self._written.pop(tag, (False, False))) for tag in delivery_tags]
        if any(unacked or inflight for _, (unacked, inflight) in written):
            with self._pipe(any(unacked for _, (unacked, _i) in written)) as pipe:
                for tag, (unacked, inflight) in written:
                    if unacked:
                        pipe.zrem(self.unacked_index_key, tag).hdel(self.unacked_key, tag)
                    if inflight:
                        pipe.hdel(self.inflight_key, tag)
                pipe.execute()
        for tag in delivery_tags:
            self._volatile.pop(tag, None)
            virtual.QoS.ack(self, tag)

    def ack(self, delivery_tag: str) -> None:
        self.ack_many([delivery_tag])

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.flush()
        if delivery_tag in self._volatile:
            if requeue:
                self._restore_volatile([delivery_tag])
            self.ack_many([delivery_tag])
            return
        super().reject(delivery_tag, requeue)

    def restore_unacked(self, client: Any = None) -> None:
        self.flush()
        delivered: Any = self._delivered  # typed None in Kombu's stubs
        volatile = [tag for tag in delivered if tag in self._volatile]
        if volatile:
            self._restore_volatile(volatile)
            for tag in volatile:
                delivered.pop(tag, None)
        super().restore_unacked(client)

    def _restore_volatile(self, tags: list[str]) -> None:
        """Put in-memory messages back at the head of their queues."""
        with self.pipe_or_acquire() as pipe:
            for tag in tags:
                payload, exchange, routing_key = self._volatile.pop(tag)
                self.channel._do_restore_message(payload, exchange, routing_key, pipe,
                                                 leftmost=False)
                if self._written.pop(tag, (False, False))[1]:
                    pipe.hdel(self.inflight_key, tag)
            pipe.execute()

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        if self.inflight_key:
            pipe.hdel(self.inflight_key, delivery_tag)
        return pipe


class _RedisChannel(kombu_redis.Channel):
    """Kombu's Redis channel minus the costs it pays on every publish and delivery.

    Kombu builds a new redis-py client object for each command (about 100 µs of
    Python in redis-py 8) and reads the exchange's bindings (SMEMBERS) for each
    publish. This channel keeps one client for its commands, caches non-empty
    binding tables for a few seconds, and uses :class:`RedisQoS`. Wire format and
    semantics are Kombu's.
    """

    QoS = RedisQoS
    on_undecodable: Callable[[str, bytes, Exception], None] | None = None
    """Called with (queue, raw item, error) for an item on a queue that is not a Kombu
    message; a worker sets it to keep the item as a dead letter."""

    def _brpop_read(self, **options: Any) -> bool:
        # Kombu's own, except that an item it cannot turn into a message is handed to
        # on_undecodable instead of raising out of drain_events (the item is already
        # popped: raising would lose it and look like a broken connection).
        try:
            try:
                dest_item = self.client.parse_response(self.client.connection, "BRPOP",
                                                       **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest_item:
                raise kombu_redis.Empty()
            dest, item = dest_item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            try:
                payload = envelope.load(item)
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is not a message
                self._undecodable(dest, item, exc)
                return True
            self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _undecodable(self, queue: str, item: bytes, exc: Exception) -> None:
        if self.on_undecodable is not None:
            self.on_undecodable(queue, item, exc)
        else:
            log.warning("dropped an item on %s that is not a Kombu message: %s", queue, exc)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        cached = self.__dict__.get("_iii_client")
        if cached is None:
            cached = self.__dict__["_iii_client"] = self._create_client()
        yield cached

    def get_table(self, exchange: str) -> Any:
        cache = self.__dict__.setdefault("_iii_tables", {})
        now = time.monotonic()
        hit = cache.get(exchange)
        if hit is not None and now - hit[0] < _BINDINGS_TTL_S:
            return hit[1]
        table = super().get_table(exchange)
        if table:
            cache[exchange] = (now, table)
        return table

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> Any:
        self.__dict__.setdefault("_iii_tables", {}).pop(exchange, None)
        return super()._queue_bind(exchange, routing_key, pattern, queue)


class RedisTransport(kombu_redis.Transport):
    """Kombu's Redis transport with :class:`_RedisChannel`."""

    Channel = _RedisChannel


class RedisFetcher:
    """Pops the messages of some Kombu Redis queues straight off their lists.

    What Kombu's poller does for a consumer of a virtual channel, minus the poller: one
    blocking command on its own connection returns up to ``count`` messages (``BLMPOP``;
    ``BRPOP``, one message, on a Redis older than 7), each turned into the channel's own
    :class:`~kombu.transport.virtual.Message` and registered with its QoS, so acks,
    rejects, in-flight records and the hand-back of unacked messages on close are
    Kombu's (and :class:`RedisQoS`'s) as before. Keys are read in Kombu's order (each
    priority step across all queues, highest first) and the queue a message came from
    goes to the back, as Kombu's round-robin cycle does. Raises ``redis.RedisError``.
    """

    def __init__(self, channel: Any, queues: list[str], url: str,
                 on_message: Callable[[Any], None],
                 on_undecodable: Callable[[str, bytes, Exception], None],
                 wake_key: str | None = None) -> None:

        self.channel = channel
        self.queues = list(queues)
        self.on_message = on_message
        self.on_undecodable = on_undecodable
        self.url = url
        self.client = resp.client(url)
        self.wake_key = wake_key
        """A list read last by every blocking pop: :meth:`wake` pushes to it, so a worker told
        to stop does not wait out the pop's timeout."""
        self._blmpop = True
        self._keys: list[str] = []
        self._reset_keys()

    def set_queues(self, queues: list[str]) -> None:
        """Read these queues from now on (the worker's app gained or dropped functions)."""
        self.queues = list(queues)
        self._reset_keys()

    def _reset_keys(self) -> None:
        ch = self.channel
        self._keys = [ch._q_for_pri(q, pri) for pri in ch.priority_steps for q in self.queues]
        if self.wake_key is not None:
            self._keys.append(self.wake_key)

    def wake(self) -> None:
        """End the blocking pop under way now (from another thread, or a signal handler):
        no message is taken, the fetch returns 0. Best effort; raises nothing."""
        if self.wake_key is None:
            return
        # A client of its own: the fetcher's is blocked in the pop.
        with redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1) as waker:
            push_wake(waker, self.wake_key)

    def fetch(self, timeout: float, count: int) -> int:
        """Wait up to ``timeout`` seconds for messages; hand over at most ``count``."""

        keys = self._keys
        wait = resp.seconds(timeout)
        items: list[bytes]
        if self._blmpop and count > 1:
            try:
                res = resp.call(self.client, resp.pack("BLMPOP", wait, len(keys), *keys,
                                                       "RIGHT", "COUNT", count))
            except redis.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self._blmpop = False  # Redis < 7
                return 0
            if not res:
                return 0
            dest_key, items = res[0], res[1]
        else:
            res = resp.call(self.client, resp.pack("BRPOP", *keys, wait))
            if not res:
                return 0
            dest_key, items = res[0], [res[1]]
        if self.wake_key is not None and bytes_to_str(dest_key) == self.wake_key:
            return 0  # woken (a stop): nothing to hand over
        dest = bytes_to_str(dest_key).rsplit(self.channel.sep, 1)[0]
        if len(self.queues) > 1 and dest in self.queues:  # round robin, as Kombu's cycle
            self.queues.remove(dest)
            self.queues.append(dest)
            self._reset_keys()
        channel = self.channel
        for item in items:
            try:
                payload = envelope.load(item)
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is not a message
                self.on_undecodable(dest, item, exc)
                continue
            message = channel.Message(payload, channel=channel)
            channel.qos.append(message, message.delivery_tag)
            self.on_message(message)
        return len(items)

    def close(self) -> None:
        try:
            if self.wake_key is not None:
                resp.call(self.client, resp.pack("DEL", self.wake_key))
        except Exception:  # noqa: BLE001 - already broken; the key expires
            pass
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - already broken
            pass
