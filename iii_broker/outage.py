"""Riding out outages of Redis and the broker: one log line when a server goes away, one
when it is back, and a capped backoff between attempts.

Every thread of a process that loses a server (the consumer, the heartbeat, the engine's
duties, the reply waiters) reports to the same :class:`Outage`, so an outage of any length
logs one line when it starts, one when it ends, and a reminder every
:data:`STILL_DOWN_NOTE_S` in between, however many threads retry meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from .errors import BrokerUnavailable
from .settings import Settings, mask_url

log = logging.getLogger("iii.outage")

BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 2.0
"""The longest wait between two attempts to reach a server that is down: it bounds how long
a process takes to notice the server is back."""
STILL_DOWN_NOTE_S = 60.0
"""How often a long outage is mentioned again in the log."""
AFTERSHOCK_S = 2.0
"""A failure this soon after the server came back — typically a connection that went stale
while it was away, failing on first use — starts a new outage in the log only if the server
stays unreachable this long."""

_outages: dict[str, Outage] = {}
_outages_lock = threading.Lock()


class Outage:
    """Whether one server (the Redis store, the broker) answers, as this process sees it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.since: float | None = None
        """``time.monotonic()`` when the server stopped answering; None while it answers."""
        self._noted = 0.0
        self._back_at = -AFTERSHOCK_S  # when it last came back
        self._quiet = False  # down since a failure just after it came back, not logged yet
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """A call to the server failed: logged when the outage starts (and every
        :data:`STILL_DOWN_NOTE_S` while it lasts), never for each retry."""
        now = time.monotonic()
        with self._lock:
            if self.since is None:
                self.since = now
                self._quiet = now - self._back_at < AFTERSHOCK_S
            if self._quiet:  # an aftershock is logged only once it has lasted
                if now - self.since < AFTERSHOCK_S:
                    return
                self._quiet = False
            if self._noted < self.since:
                self._noted = now
                log.warning("lost the connection to %s (%s); retrying until it is back",
                            self.name, _reason(exc))
            elif now - self._noted >= STILL_DOWN_NOTE_S:
                self._noted = now
                log.warning("%s is still unreachable after %.0fs (%s)", self.name,
                            now - self.since, _reason(exc))

    def recovered(self) -> float | None:
        """A call to the server succeeded; returns how long it was down (logged once) if it
        was. Costs one attribute read while the server answers."""
        if self.since is None:
            return None
        with self._lock:
            if self.since is None:
                return None
            now = time.monotonic()
            down_s, self.since, self._back_at = now - self.since, None, now
            quiet, self._quiet = self._quiet, False
        if not quiet:  # an aftershock that never got its "lost" line gets no "back" line
            log.info("%s is back after %.1fs", self.name, down_s)
        return down_s


class Backoff:
    """Waits between attempts: doubling from :data:`BACKOFF_FIRST_S`, capped at
    :data:`BACKOFF_CAP_S`."""

    def __init__(self, first_s: float = BACKOFF_FIRST_S, cap_s: float = BACKOFF_CAP_S) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self._next = first_s

    def next(self) -> float:
        """Seconds to wait before the next attempt."""
        delay, self._next = self._next, min(self._next * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


def outage_of(url: str) -> Outage:
    """The process-wide :class:`Outage` of the server at ``url`` (one per server, so a Redis
    that is both broker and store is reported once)."""
    name = _server_name(url)
    with _outages_lock:
        found = _outages.get(name)
        if found is None:
            found = _outages[name] = Outage(name)
        return found


def store_outage(settings: Settings) -> Outage:
    return outage_of(settings.redis_url)


def broker_outage(settings: Settings) -> Outage:
    return outage_of(settings.broker_url)


def outage_for(settings: Settings, exc: BaseException) -> Outage:
    """The outage ``exc`` tells of: the server a :class:`BrokerUnavailable` names, the store
    for redis-py's errors, else the broker (Kombu's and py-amqp's)."""
    server = getattr(exc, "server", None)
    if isinstance(server, str) and server:
        return outage_of(server)
    if isinstance(exc, redis.RedisError):
        return store_outage(settings)
    return broker_outage(settings)


def is_outage(exc: BaseException) -> bool:
    """True for the failures a server going away causes (not for a bad command or script)."""
    return isinstance(exc, (BrokerUnavailable, redis.ConnectionError, redis.TimeoutError,
                            ConnectionError, OSError)) \
        or "connection" in type(exc).__name__.lower()


def _server_name(url: str) -> str:
    kind = "RabbitMQ" if url.startswith("amqp") else "Redis"
    return f"{kind} at {mask_url(url)}"


def _reason(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, BrokerUnavailable) else str(exc)
    return (text or type(exc).__name__)[:300]


__all__ = ["BACKOFF_CAP_S", "Backoff", "Outage", "broker_outage", "is_outage", "outage_of",
           "store_outage"]
