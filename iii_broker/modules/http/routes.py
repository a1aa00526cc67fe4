"""The route table of a web process: the registry's ``http`` triggers, kept live.

A background thread subscribes to the ``NS:events`` pub/sub channel and reloads the
table on every registry change, and also reloads at least once a second in case an
event was missed (a reconnect, a sweep in another namespace's engine). Requests read
the current table without locking: a reload builds a new index and swaps it in.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ...function import is_reserved
from ...outage import store_outage
from ...registry import Registry
from ...settings import Settings
from ...store import RedisError, connect_store
from .paths import PathPattern, split_path
from .schemas import BODY_METHODS, BodySchema, SchemaCache
from .trigger import HTTP

log = logging.getLogger("iii.web")

RELOAD_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Route:
    """One ``http`` trigger: its path pattern, method, function and whether it is live."""

    api_path: str
    method: str
    function_id: str
    active: bool
    pattern: PathPattern
    condition_function_id: str | None = None
    middleware_function_ids: tuple[str, ...] = ()
    reserved: str | None = None
    """The first reserved built-in among the functions it calls (never callable over HTTP)."""
    body_schema: BodySchema | None = None
    """The function's ``request_schema``, compiled, for a POST/PUT/PATCH route (the table
    sets it; :meth:`from_trigger` does not know the function)."""

    @classmethod
    def from_trigger(cls, trigger: dict[str, Any]) -> Route:
        config = trigger["config"]
        pattern = PathPattern.parse(config["api_path"])
        function_id = trigger["function_id"]
        condition = config.get("condition_function_id")
        middleware = tuple(config.get("middleware_function_ids") or ())
        return cls(api_path=pattern.path, method=str(config["http_method"]).upper(),
                   function_id=function_id, active=bool(trigger.get("active")), pattern=pattern,
                   condition_function_id=condition, middleware_function_ids=middleware,
                   reserved=next((f for f in (function_id, condition, *middleware)
                                  if f and is_reserved(f)), None))

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sorts literal segments before parameters, position by position."""
        return self.pattern.specificity

    @property
    def sort_key(self) -> tuple[Any, ...]:
        """The order the table (and the OpenAPI document) tries routes in."""
        return (self.pattern.specificity, self.api_path, self.method, self.function_id)


class Match:
    """What a request path found: the route for its method (if any), its path params, and
    (computed only when asked) every method some route accepts on that path."""

    __slots__ = ("_allowed", "_candidates", "_parts", "path_params", "route")

    def __init__(self, route: Route | None, path_params: dict[str, str], parts: tuple[str, ...],
                 candidates: tuple[Route, ...]) -> None:
        self.route = route
        self.path_params = path_params
        self._parts = parts
        self._candidates = candidates
        self._allowed: tuple[str, ...] | None = None

    @property
    def allowed(self) -> tuple[str, ...]:
        """The methods of the routes that fit the path, sorted (empty: no route fits)."""
        if self._allowed is None:
            self._allowed = tuple(sorted({r.method for r in self._candidates
                                          if r.pattern.match(self._parts) is not None}))
        return self._allowed


class _Index:
    """The routes, sorted, and grouped for matching: by segment count, and literal-only
    routes by ``(segments, method)`` (a literal route is the most specific of its length)."""

    __slots__ = ("by_length", "literal", "routes")

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(sorted(routes, key=lambda r: r.sort_key))
        by_length: dict[int, list[Route]] = {}
        self.literal: dict[tuple[tuple[str, ...], str], Route] = {}
        for route in self.routes:
            by_length.setdefault(len(route.pattern.segments), []).append(route)
            if not route.pattern.params:
                self.literal.setdefault((route.pattern.segments, route.method), route)
        self.by_length = {n: tuple(group) for n, group in by_length.items()}


class RouteTable:
    """The ``http`` triggers of one namespace, reloaded when the registry changes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._redis = connect_store(settings)
        self.registry = Registry(self._redis, settings.namespace)
        self._index = _Index(())
        self.loaded_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._schemas = SchemaCache()

    @property
    def routes(self) -> tuple[Route, ...]:
        """Every route, in the order they are tried."""
        return self._index.routes

    @routes.setter
    def routes(self, routes: Iterable[Route]) -> None:
        self._index = _Index(routes)  # one assignment: a request sees the old or the new

    def reload(self) -> None:
        """Read the http triggers (and the request schemas of the functions that take a
        body) from the registry; raises ``redis.RedisError``."""
        routes = [Route.from_trigger(t) for t in self.registry.triggers() if t["type"] == HTTP]
        takes_body = {r.function_id for r in routes if r.method in BODY_METHODS}
        if takes_body:
            schemas = {f["function_id"]: self._schemas.get(f["function_id"],
                                                           f.get("request_schema"))
                       for f in self.registry.functions() if f["function_id"] in takes_body}
            routes = [replace(r, body_schema=schemas.get(r.function_id))
                      if r.method in BODY_METHODS and schemas.get(r.function_id) else r
                      for r in routes]
        self.routes = routes
        self.loaded_at = time.monotonic()

    def match(self, path: str, method: str) -> Match:
        """Find the route for ``method`` on ``path``; HEAD falls back to a GET route."""
        parts = split_path(path)
        index = self._index
        candidates = index.by_length.get(len(parts), ())
        if method != "HEAD":
            route = index.literal.get((parts, method))
            if route is not None:
                return Match(route, {}, parts, candidates)
        fallback: Route | None = None
        fallback_params: dict[str, str] = {}
        for route in candidates:  # most specific first: the index is sorted
            if route.method == method:
                params = route.pattern.match(parts)
                if params is not None:
                    return Match(route, params, parts, candidates)
            elif fallback is None and method == "HEAD" and route.method == "GET":
                params = route.pattern.match(parts)
                if params is not None:
                    fallback, fallback_params = route, params
        return Match(fallback, fallback_params, parts, candidates)

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
                store_outage(self.settings).recovered()
                while not self._stop.is_set():
                    wait = max(0.0, self.loaded_at + RELOAD_INTERVAL_S - time.monotonic())
                    message = pubsub.get_message(timeout=wait)
                    if message is not None:
                        while pubsub.get_message(timeout=0) is not None:
                            pass  # a burst of events needs one reload
                        self.reload()
                    elif time.monotonic() - self.loaded_at >= RELOAD_INTERVAL_S:
                        self.reload()
            except RedisError as exc:  # one line for the whole outage (the routes stay)
                store_outage(self.settings).failed(exc)
                self._stop.wait(RELOAD_INTERVAL_S)
            finally:
                try:
                    pubsub.close()
                except RedisError:
                    pass
