"""The Kombu seam: connections, per-function exchanges and queues, publishing.

Kombu and py-amqp/redis-py exceptions stop here and become
:class:`~iii_broker.errors.BrokerUnavailable`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu import Connection, Exchange, Producer, Queue

from . import envelope, resp
from .errors import BrokerUnavailable
from .message import CONTENT_TYPE
from .redis_transport import RedisQoS, RedisTransport
from .settings import BrokerKind, Settings, mask_url
from .store import Keys, check_store, connect_store

__all__ = ["Publisher", "RedisQoS", "broker_errors", "check_servers", "connect", "connection",
           "consumer_heartbeat_s", "ensure_connected",
           "function_exchange", "function_queue", "reply_queue"]

# How long a message Kombu's Redis ack emulation has persisted as unacked may stay so
# before Kombu redelivers it (for queues that persist it; function queues do not).
VISIBILITY_TIMEOUT_S = 24 * 3600


# The shortest AMQP heartbeat a consuming connection asks for; RabbitMQ advises against
# less (false alarms on a busy host).
CONSUMER_HEARTBEAT_MIN_S = 5


def consumer_heartbeat_s(settings: Settings) -> int:
    """The AMQP heartbeat of a connection that consumes (a worker's, the job consumer's).

    RabbitMQ closes a connection that missed about two beats and requeues what it held
    unacked: without heartbeats a worker paused (SIGSTOP, a frozen VM) or cut off by a
    network partition would keep its jobs for as long as that lasts. Twice the worker
    lease, at least :data:`CONSUMER_HEARTBEAT_MIN_S`; the consumer loop sends the beats
    (:meth:`kombu.Connection.heartbeat_check`). Publishing connections have none: they
    are idle between publishes, and a broken one is replaced on the next publish."""
    return max(CONSUMER_HEARTBEAT_MIN_S, math.ceil(2 * settings.heartbeat_ttl_s))


def connect(settings: Settings, *, confirm: bool = False, heartbeat_s: int = 0) -> Connection:
    """A new (lazy) Kombu connection to the broker. ``confirm``: on AMQP, each publish
    waits for the broker's confirm (RabbitMQ holds the message when it returns).
    ``heartbeat_s``: on AMQP, the heartbeat to negotiate (0: none); whoever asks for one
    calls ``heartbeat_check()`` at least every ``heartbeat_s / 2`` seconds."""
    keys = Keys(settings.namespace)
    options: dict[str, Any] = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5}
    if settings.broker_kind.is_redis:
        options.update(
            visibility_timeout=VISIBILITY_TIMEOUT_S,
            unacked_key=keys.kombu_unacked,
            unacked_index_key=keys.kombu_unacked_index,
            unacked_mutex_key=keys.kombu_unacked_mutex,
            # Workers never wait more than this in one BRPOP, so drain sees a stop soon.
            brpop_timeout=1,
        )
        transport = RedisTransport if settings.broker_kind is BrokerKind.REDIS else None
        return Connection(settings.broker_url, transport=transport,
                          transport_options=options, connect_timeout=5, heartbeat=0)
    if confirm:
        options["confirm_publish"] = True
    return Connection(settings.broker_url, transport_options=options, connect_timeout=5,
                      heartbeat=heartbeat_s)


def broker_errors(conn: Connection) -> tuple[type[BaseException], ...]:
    return tuple(conn.connection_errors) + tuple(conn.channel_errors) + (OSError,)


def ensure_connected(conn: Connection, settings: Settings) -> None:
    """Connect now; raises :class:`BrokerUnavailable` naming the (masked) URL."""
    try:
        conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.3)
    except Exception as exc:  # kombu wraps errors of whichever client library
        raise BrokerUnavailable(
            f"cannot reach the broker at {mask_url(settings.broker_url)}: {exc}",
            server=settings.broker_url) from exc


def check_servers(settings: Settings, store: redis.Redis | None = None) -> None:
    """Reach the Redis store and the broker once; raises :class:`BrokerUnavailable` naming
    the (masked) URL of the one that does not answer. Every process calls it at start and
    fails fast (a wrong URL is the usual cause, and a supervisor restarts it); once running,
    a process rides out outages of any length instead."""
    client = store if store is not None else connect_store(settings)
    try:
        check_store(client, settings)
    finally:
        if store is None:
            client.close()
    probe = connect(settings)
    try:
        ensure_connected(probe, settings)
    finally:
        probe.release()


def function_exchange(settings: Settings, function_id: str) -> Exchange:
    """The function's own direct exchange."""
    return Exchange(Keys(settings.namespace).function_exchange(function_id), type="direct",
                    durable=True)


def function_queue(settings: Settings, function_id: str) -> Queue:
    """The queue every worker of the function consumes (competing consumers)."""
    name = Keys(settings.namespace).function_exchange(function_id)  # queue and exchange share it
    return Queue(name, function_exchange(settings, function_id), routing_key=function_id,
                 durable=True)


def reply_queue(settings: Settings, client_id: str) -> Queue:
    """The reply queue of one calling process; replies use the default exchange."""
    return Queue(Keys(settings.namespace).reply_queue(client_id), durable=False, auto_delete=True,
                 exclusive=not settings.broker_kind.is_redis)


class Publisher:
    """Publishes JSON bodies, one Kombu connection per thread (Kombu channels are not
    thread-safe).

    On a ``redis://`` broker a message whose destination queue is known (a reply: the
    default exchange; an invocation: the function exchange of a queue this thread has
    declared) is written with one LPUSH of Kombu's envelope, without Kombu's producer,
    exchange lookup and message objects.
    """

    def __init__(self, settings: Settings, *, confirm: bool = False) -> None:
        self.settings = settings
        self.confirm = confirm
        self._direct = settings.broker_kind is BrokerKind.REDIS  # as connect() decides
        self._local = threading.local()
        self._all: list[Connection] = []
        self._lock = threading.Lock()

    def _producer(self) -> tuple[Producer, set[str]]:
        local = self._local
        if getattr(local, "producer", None) is None:
            conn = connect(self.settings, confirm=self.confirm)
            ensure_connected(conn, self.settings)
            local.conn, local.producer, local.declared = conn, Producer(conn.channel()), set()
            with self._lock:
                self._all.append(conn)
        return local.producer, local.declared

    def publish(
        self,
        body: str,
        *,
        exchange: Exchange | str = "",
        routing_key: str,
        declare: Queue | None = None,
        headers: dict[str, Any] | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        send: Callable[[bytes], Any] | None = None,
    ) -> None:
        """Publish ``body`` (already JSON); raises :class:`BrokerUnavailable`.

        ``send``: when the message goes by a direct LPUSH, the packed command is handed to
        it (it sends it on a connection of its own and returns Redis's answer) instead of
        going out on this thread's connection.
        """
        for attempt in (1, 2):
            producer, declared = self._producer()
            try:
                if declare is not None and declare.name not in declared:
                    declare.bind(producer.channel).declare()
                    declared.add(declare.name)
                queue = self._direct_queue(exchange, routing_key, declare)
                if queue is not None:
                    packed = resp.pack("LPUSH", queue, envelope.encode(
                        body, exchange=exchange.name if isinstance(exchange, Exchange) else exchange,
                        routing_key=routing_key, headers=headers, reply_to=reply_to,
                        correlation_id=correlation_id,
                        delivery_mode=2 if declare is not None else 1))
                    if send is not None:
                        send(packed)
                    else:
                        resp.call(self._redis(), packed)
                    return
                producer.publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    content_type=CONTENT_TYPE,
                    content_encoding="utf-8",
                    headers=headers or {},
                    reply_to=reply_to,
                    correlation_id=correlation_id,
                    delivery_mode=2 if declare is not None else 1,
                )
                return
            except Exception as exc:
                self._drop_local()
                if attempt == 2 or not _is_connection_error(exc):
                    if isinstance(exc, BrokerUnavailable):
                        raise
                    raise BrokerUnavailable(
                        f"publishing to {mask_url(self.settings.broker_url)} failed: {exc}",
                        server=self.settings.broker_url) from exc

    def send_all(self, packed: list[bytes]) -> None:
        """Send LPUSHes that :meth:`publish` handed to a ``send`` callable, in one write on
        this thread's connection, and read their answers: a burst of calls costs one round
        trip. The connection is checked with a PING first (a stale one is replaced), and the
        burst itself is never sent twice, so a failure cannot duplicate a call. Raises
        :class:`BrokerUnavailable` (some of the calls may have been sent)."""
        if not packed:
            return
        for attempt in (1, 2):
            try:
                resp.call(self._redis(), resp.pack("PING"))
                break
            except Exception as exc:
                self._drop_local()
                if attempt == 2 or not _is_connection_error(exc):
                    raise BrokerUnavailable(
                        f"publishing to {mask_url(self.settings.broker_url)} failed: {exc}",
                        server=self.settings.broker_url) from exc
        conn = self._redis().connection
        assert conn is not None  # a single-connection client
        try:
            conn.send_packed_command(packed, check_health=False)
            for _ in packed:
                conn.read_response()
        except Exception as exc:
            self._drop_local()
            raise BrokerUnavailable(
                f"publishing to {mask_url(self.settings.broker_url)} failed: {exc}",
                server=self.settings.broker_url) from exc

    def _direct_queue(self, exchange: Exchange | str, routing_key: str,
                      declare: Queue | None) -> str | None:
        """The one queue Kombu would route to, when this can tell without asking Redis."""
        if not self._direct:
            return None
        name = exchange.name if isinstance(exchange, Exchange) else exchange
        if not name:
            return routing_key  # the default exchange: the routing key names the queue
        if (declare is not None and declare.exchange is not None
                and declare.exchange.name == name and declare.exchange.type == "direct"
                and declare.routing_key == routing_key):
            return declare.name  # a function's exchange: its one queue (declared above)
        return None

    def _redis(self) -> redis.Redis:
        """This thread's own connection for direct LPUSHes (no pool to check out from)."""
        client = getattr(self._local, "redis", None)
        if client is None:
            client = self._local.redis = resp.client(self.settings.broker_url)
        return client

    def _drop_local(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.producer = None
        client, self._local.redis = getattr(self._local, "redis", None), None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        client = getattr(self._local, "redis", None)  # other threads' go with their threads
        if client is not None:
            client.close()
        for conn in conns:
            try:
                conn.release()
            except Exception:  # noqa: BLE001
                pass
        self._local = threading.local()


def _is_connection_error(exc: Exception) -> bool:
    return isinstance(exc, (OSError, ConnectionError)) or "connection" in type(exc).__name__.lower()


@contextmanager
def connection(settings: Settings) -> Iterator[Connection]:
    """A connected Kombu connection for a short job, released afterwards."""
    conn = connect(settings)
    try:
        ensure_connected(conn, settings)
        yield conn
    finally:
        conn.release()
