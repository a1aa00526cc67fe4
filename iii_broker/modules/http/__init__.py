"""HTTP triggers: the ``http`` trigger type, the registration check that gives each route
to one function, and what the web process serves for them.

=================  ===========================================================================
``trigger``        the ``http`` trigger type and its config schema
``paths``          how an ``api_path`` reads (``:name`` parameters): checks, matching, shapes
``routes``         the live route table of a web process
``views``          the catch-all view serving the routes, and ``GET /_iii/openapi.json``
``payloads``       request → function payload (the whole body or 413/400), result → response
``schemas``        a function's ``request_schema``, compiled once, checked against bodies
``middleware``     CORS, middleware answers, the request's trace
``openapi``        the OpenAPI 3.1 document of the live routes
=================  ===========================================================================
"""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from ...errors import TriggerConfigError
from ...settings import Settings
from ..base import Field, Module, TriggerType, port
from ..hosts import EngineHost, WebHost
from .paths import PathPattern, route_shape
from .trigger import HTTP, HTTP_METHODS, HTTP_TRIGGER

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["HTTP", "HTTP_METHODS", "HttpModule", "PathPattern", "route_shape"]


class HttpModule(Module):
    name = "http"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (HTTP_TRIGGER,)
    options: ClassVar[dict[str, Field]] = {
        "enabled": Field(bool, default=True),
        "port": Field(int, check=port, default=3111),
        "host": Field(str, default="127.0.0.1"),
    }

    @contextmanager
    def registering(self, engine: EngineHost, triggers: list[dict[str, Any]]) -> Iterator[None]:
        """Refuse routes another function has; the check and the write hold ``NS:lock:routes``
        so that two engines cannot both give one route away."""
        new = [t for t in triggers if t["type"] == HTTP]
        if not new:
            yield
            return
        registry, owner = engine.registry, uuid.uuid4().hex
        deadline = time.monotonic() + 5
        while not registry.acquire(registry.keys.routes_lock, owner, 5_000):
            if time.monotonic() > deadline:
                raise TriggerConfigError("another registration holds the route lock; try again")
            time.sleep(0.01)  # another engine is registering routes right now
        try:
            _refuse_conflicts(registry.triggers(), new)
            yield
        finally:
            registry.release(registry.keys.routes_lock, owner)

    def web_address(self, settings: Settings) -> tuple[str, int] | None:
        """``III_HTTP_HOST``/``III_HTTP_PORT`` when set, else ``host`` and ``port`` of
        ``[modules.http]`` (default 127.0.0.1:3111)."""
        host = settings.http_host if "http_host" in settings.explicit else self.config["host"]
        port = settings.http_port if "http_port" in settings.explicit else self.config["port"]
        return host, port

    def web_setup(self, app: Flask, web: WebHost) -> None:
        """Serve the registry's http triggers on every path outside ``/_iii/``, with CORS
        when ``III_HTTP_CORS_ORIGINS`` is set, and ``GET /_iii/openapi.json``."""
        # Flask and the views load in web processes only: engines, workers and the CLI would
        # each pay ~150 ms for them at start.
        views = importlib.import_module(f"{__name__}.views")
        views.HttpTriggers(web).install(app)


def _refuse_conflicts(existing: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """Raise :class:`TriggerConfigError` when a new ``http`` trigger takes a route (method and
    path, parameter names aside) that another function's trigger already has. Only active
    triggers count, so a renamed function can take its old routes."""
    taken: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    for t in [t for t in existing if t["type"] == HTTP and t["active"]] + new:
        config = t["config"]
        key = (config["http_method"], route_shape(config["api_path"]))
        other = taken.setdefault(key, t)
        if other["function_id"] != t["function_id"]:
            raise TriggerConfigError(
                f"http trigger {config['http_method']} {config['api_path']} of "
                f"{t['function_id']!r} conflicts with {other['config']['http_method']} "
                f"{other['config']['api_path']} of {other['function_id']!r}: routes that "
                "differ only in parameter names are the same route",
                function_id=t["function_id"])
