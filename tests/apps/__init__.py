"""Apps the tests run as workers (``iii-worker -A tests.apps.<name>``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iii_broker import App


def http_route(app: App, function_id: str, path: str, method: str,
               **schemas: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator registering a function and the ``http`` trigger that serves it."""
    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        app.register_function(function_id, handler, **schemas)
        app.register_trigger(type="http", function_id=function_id,
                             config={"api_path": path, "http_method": method})
        return handler
    return decorate
