"""The functions a stream process calls: ``auth_function`` before an upgrade, and the
functions of ``stream:join`` and ``stream:leave`` triggers as clients subscribe and leave.

Calls go through one :class:`~iii_broker.client.Caller` on a small pool of threads
(greenlets under gevent). The pool is not for speed: the Caller keeps one broker connection
per thread, and a greenlet per socket making calls would open one per socket.

The ``stream:join``/``stream:leave`` triggers are read from the registry
(``Registry.triggers()``) and cached; the cache is marked stale on every ``NS:events``
message (the hub listens to that channel beside the live one) and reloaded at least every
:data:`TRIGGERS_TTL_S`.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import redis

from ...client import Caller, Void
from ...errors import BrokerUnavailable, IIIError
from ...observe import triggered_by
from ...registry import Registry
from ...settings import Settings
from .peer import Peer
from .protocol import Subscription

log = logging.getLogger("iii.stream")

CALL_THREADS = 16
"""Calls in flight at once (each holds a broker connection of its own)."""
TRIGGERS_TTL_S = 5.0
"""The cached join/leave triggers are reloaded at least this often."""
JOIN = "stream:join"
LEAVE = "stream:leave"


class Refused(Exception):
    """The ``auth_function`` refused the connection (or could not be asked)."""


class JoinFailed(Exception):
    """A ``stream:join`` function (or its condition) failed; carries the call's error."""

    def __init__(self, function_id: str, error: IIIError) -> None:
        super().__init__(f"{function_id}: {error.message}")
        self.function_id = function_id
        self.error = error


class Hooks:
    """Calls the stream process makes to functions."""

    def __init__(self, settings: Settings, store: redis.Redis, auth_function: str | None) -> None:
        self.settings = settings
        self.auth_function = auth_function
        self.registry = Registry(store, settings.namespace)
        self.caller = Caller(settings)
        self.timeout_ms = settings.default_timeout_ms
        self._pool = ThreadPoolExecutor(max_workers=CALL_THREADS,
                                        thread_name_prefix="iii-stream-call")
        self._triggers: list[dict[str, Any]] = []
        self._loaded_at: float | None = None
        self._stale = True
        self._load_lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.caller.close()

    # -- the trigger cache ------------------------------------------------------------

    def registry_changed(self) -> None:
        """Some trigger or worker changed (``NS:events``): reload before the next use."""
        self._stale = True

    def _active(self, kind: str) -> list[dict[str, Any]]:
        """The active triggers of ``kind``; raises :class:`BrokerUnavailable` when they
        were never loaded and Redis does not answer (a stale list is used meanwhile)."""
        now = time.monotonic()
        if self._stale or self._loaded_at is None or now - self._loaded_at > TRIGGERS_TTL_S:
            with self._load_lock:
                if self._stale or self._loaded_at is None or \
                        time.monotonic() - self._loaded_at > TRIGGERS_TTL_S:
                    self._reload()
        return [t for t in self._triggers if t["type"] == kind and t.get("active")]

    def _reload(self) -> None:
        self._stale = False
        try:
            triggers = self.registry.triggers()
        except redis.RedisError as exc:
            self._stale = True
            if self._loaded_at is None:
                raise BrokerUnavailable(f"cannot read the stream:join and stream:leave "
                                        f"triggers: {exc}", server=self.settings.redis_url) from exc
            return  # keep the last list until Redis answers
        self._triggers = [t for t in triggers if t["type"] in (JOIN, LEAVE)]
        self._loaded_at = time.monotonic()

    # -- calls ------------------------------------------------------------------------

    def authenticate(self, request: dict[str, Any]) -> Any:
        """The ``context`` the ``auth_function`` returns for ``request`` (``{headers, path,
        query_params, addr}``); raises :class:`Refused` when it raises, answers falsy or
        ``{"unauthorized": true}``, or cannot be reached."""
        assert self.auth_function is not None
        try:
            result = self._pool.submit(self.caller.call, self.auth_function, request,
                                       timeout_ms=self.timeout_ms).result()
        except IIIError as exc:
            raise Refused(f"{self.auth_function} refused the connection: {exc.code}: "
                          f"{exc.message}") from exc
        if not result or (isinstance(result, dict) and result.get("unauthorized") is True):
            raise Refused(f"{self.auth_function} refused the connection")
        return result.get("context") if isinstance(result, dict) else None

    def join(self, peer: Peer, sub: Subscription) -> bool:
        """Ask every active ``stream:join`` trigger; False when one answers
        ``{"unauthorized": true}``. Raises :class:`JoinFailed` when a call fails and
        :class:`BrokerUnavailable` when the triggers cannot be read."""
        triggers = self._active(JOIN)
        if not triggers:
            return True
        payload = _payload(peer, sub)
        calls = [(t["function_id"], self._pool.submit(self._ask, t, payload)) for t in triggers]
        allowed = True
        for function_id, fut in calls:
            try:
                result = fut.result()
            except IIIError as exc:
                raise JoinFailed(function_id, exc) from exc
            if isinstance(result, dict) and result.get("unauthorized") is True:
                allowed = False
        return allowed

    def leave(self, peer: Peer, subs: list[Subscription]) -> None:
        """Tell every active ``stream:leave`` trigger (Void calls, not waited for)."""
        if not subs:
            return
        try:
            triggers = self._active(LEAVE)
        except BrokerUnavailable as exc:
            log.warning("stream:leave triggers not called for %d subscription(s) of %s: %s",
                        len(subs), peer.addr, exc.message)
            return
        for t in triggers:
            for sub in subs:
                fut: Future[Any] = self._pool.submit(self._tell, t, _payload(peer, sub))
                fut.add_done_callback(_log_failure)

    def _ask(self, trigger: dict[str, Any], payload: dict[str, Any]) -> Any:
        with triggered_by(trigger["type"]):
            if not self._condition(trigger, payload):
                return None
            return self.caller.call(trigger["function_id"], payload, timeout_ms=self.timeout_ms)

    def _tell(self, trigger: dict[str, Any], payload: dict[str, Any]) -> None:
        with triggered_by(trigger["type"]):
            if self._condition(trigger, payload):
                self.caller.call(trigger["function_id"], payload, action=Void)

    def _condition(self, trigger: dict[str, Any], payload: dict[str, Any]) -> bool:
        condition = (trigger.get("config") or {}).get("condition_function_id")
        if not condition:
            return True
        return bool(self.caller.call(condition, payload, timeout_ms=self.timeout_ms))


def _payload(peer: Peer, sub: Subscription) -> dict[str, Any]:
    return {"subscription_id": sub.subscription_id, "stream_name": sub.stream_name,
            "group_id": sub.group_id, "id": sub.item_id, "context": peer.context}


def _log_failure(fut: Future[Any]) -> None:
    exc = fut.exception()
    if exc is not None:
        log.warning("a stream:leave call failed: %s", exc)
