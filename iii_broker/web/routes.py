"""The route table of a web process: the registry's ``http`` triggers, kept live.

A background thread subscribes to the ``NS:events`` pub/sub channel and reloads the
table on every registry change, and also reloads at least once a second in case an
event was missed (a reconnect, a sweep in another namespace's engine). Requests read
the current table without locking: a reload builds a new tuple and swaps it in.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..engine.registry import Registry
from ..settings import Settings
from ..store import RedisError, connect_store

log = logging.getLogger("iii.web")

RELOAD_INTERVAL_S = 1.0


def split_path(path: str) -> tuple[str, ...]:
    """``/users/:id/`` → ``("users", ":id")``: the leading and trailing slash do not count."""
    path = path.strip("/")
    return tuple(path.split("/")) if path else ()


@dataclass(frozen=True)
class Route:
    """One ``http`` trigger: its path pattern, method, function and whether it is live."""

    api_path: str
    method: str
    function_id: str
    active: bool
    segments: tuple[str, ...]
    condition_function_id: str | None = None
    middleware_function_ids: tuple[str, ...] = ()

    @classmethod
    def from_trigger(cls, trigger: dict[str, Any]) -> Route:
        config = trigger["config"]
        return cls(api_path="/" + "/".join(split_path(config["api_path"])),
                   method=str(config["http_method"]).upper(), function_id=trigger["function_id"],
                   active=bool(trigger.get("active")), segments=split_path(config["api_path"]),
                   condition_function_id=config.get("condition_function_id"),
                   middleware_function_ids=tuple(config.get("middleware_function_ids") or ()))

    def match(self, parts: tuple[str, ...]) -> dict[str, str] | None:
        """The path params when ``parts`` fits this route's pattern, else None."""
        if len(parts) != len(self.segments):
            return None
        params = {}
        for pattern, part in zip(self.segments, parts, strict=True):
            if pattern.startswith(":") and len(pattern) > 1:
                if not part:
                    return None
                params[pattern[1:]] = part
            elif pattern != part:
                return None
        return params

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sorts static segments before parameters, position by position."""
        return tuple(1 if s.startswith(":") and len(s) > 1 else 0 for s in self.segments)


@dataclass(frozen=True)
class Match:
    """What a request path found: the route for its method (if any) and the allowed methods."""

    route: Route | None
    path_params: dict[str, str]
    allowed: tuple[str, ...]


class RouteTable:
    """The ``http`` triggers of one namespace, reloaded when the registry changes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._redis = connect_store(settings)
        self.registry = Registry(self._redis, settings.namespace)
        self.routes: tuple[Route, ...] = ()
        self.loaded_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def reload(self) -> None:
        """Read the http triggers from the registry; raises ``redis.RedisError``."""
        routes = [Route.from_trigger(t) for t in self.registry.triggers() if t["type"] == "http"]
        routes.sort(key=lambda r: (r.specificity, r.api_path, r.method, r.function_id))
        self.routes = tuple(routes)
        self.loaded_at = time.monotonic()

    def match(self, path: str, method: str) -> Match:
        """Find the route for ``method`` on ``path``; HEAD falls back to a GET route."""
        parts = split_path(path)
        found: list[tuple[Route, dict[str, str]]] = []
        for route in self.routes:
            params = route.match(parts)
            if params is not None:
                found.append((route, params))
        allowed = sorted({r.method for r, _ in found})
        for wanted in (method, "GET") if method == "HEAD" else (method,):
            for route, params in found:  # most specific first: the table is sorted
                if route.method == wanted:
                    return Match(route, params, tuple(allowed))
        return Match(None, {}, tuple(allowed))

    # -- keeping it live ------------------------------------------------------------

    def start(self) -> None:
        """Load once, then follow the registry in a daemon thread (again after a fork)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop.clear()
            try:
                self.reload()
            except RedisError as exc:
                log.warning("cannot load HTTP routes yet (%s); retrying in the background", exc)
            self._thread = threading.Thread(target=self._follow, name="iii-web-routes",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        channel = self.registry.keys.events
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(channel)
                self.reload()  # changes made before the subscription took effect
                while not self._stop.is_set():
                    wait = max(0.0, self.loaded_at + RELOAD_INTERVAL_S - time.monotonic())
                    message = pubsub.get_message(timeout=wait)
                    if message is not None:
                        while pubsub.get_message(timeout=0) is not None:
                            pass  # a burst of events needs one reload
                        self.reload()
                    elif time.monotonic() - self.loaded_at >= RELOAD_INTERVAL_S:
                        self.reload()
            except RedisError as exc:
                log.warning("lost the registry (%s); retrying", exc)
                self._stop.wait(RELOAD_INTERVAL_S)
            finally:
                try:
                    pubsub.close()
                except RedisError:
                    pass
