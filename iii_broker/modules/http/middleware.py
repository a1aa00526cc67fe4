"""What runs around an ``http`` trigger's function: CORS, middleware, the trace.

Middleware (iii-reference §3) are functions called before the route's function, the global
ones of ``III_HTTP_MIDDLEWARE`` first, then the route's ``middleware_function_ids``. Each gets
``{phase: "request", request: {path_params, query_params, headers, method}, context}`` and
answers ``{action: "continue", context?}`` (the context is merged into the one passed on) or
``{action: "respond", response: {status_code, body, headers}}`` (the request ends there).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Request, Response

from ...context import Caller, Context
from ...tracing import SpanContext, ambient_span

CORS_MAX_AGE_S = 600
CORS_DEFAULT_HEADERS = "Content-Type, Authorization, X-Request-Id, traceparent"


class Answered(Exception):  # noqa: N818 - control flow, not an error
    """A step of the pipeline answered the request itself (an error, a middleware's response)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class BadAnswer(ValueError):
    """A middleware answered something that is neither ``continue`` nor ``respond``."""


def middleware_payload(payload: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """What a middleware function receives, built from the function's payload."""
    return {
        "phase": "request",
        "request": {key: payload[key]
                    for key in ("path_params", "query_params", "headers", "method")},
        "context": context,
    }


def read_answer(answer: Any) -> tuple[str, dict[str, Any]]:
    """``("continue", context)`` or ``("respond", response)``; raises :class:`BadAnswer`."""
    if not isinstance(answer, dict):
        raise BadAnswer(f"expected an object with an action, got {type(answer).__name__}")
    action = answer.get("action")
    if action == "continue":
        context = answer.get("context")
        if context is None:
            return "continue", {}
        if not isinstance(context, dict):
            raise BadAnswer(f"context must be an object, not {type(context).__name__}")
        return "continue", context
    if action == "respond":
        response = answer.get("response")
        if not isinstance(response, dict) or "status_code" not in response:
            raise BadAnswer("respond needs a response with a status_code")
        return "respond", response
    raise BadAnswer(f'action must be "continue" or "respond", not {action!r}')


def stand_in_context(client: Caller, traceparent: str | None) -> Context:
    """The Context the web process stands in while it calls a route's functions.

    The web process is not running a handler; made current (``context._set_current``), this
    Context makes every call it makes (middleware, condition, function) a child of the
    request's span: the web tracer's when tracing is on (it continues the request's W3C
    ``traceparent``), else the ``traceparent`` itself, or one new trace per request.
    """
    span = ambient_span() or SpanContext.parse(traceparent) or SpanContext.new_root()
    return Context(function_id="web", invocation_id=os.urandom(16).hex(), attempt=1, span=span,
                   app=client)


class Cors:
    """CORS for the origins of ``III_HTTP_CORS_ORIGINS`` (``*`` = any); off when none."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o.rstrip("/").lower() for o in origins if o != "*")

    @property
    def enabled(self) -> bool:
        return self.any or bool(self.origins)

    def allow(self, request: Request) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for this request, None when not allowed."""
        origin = request.headers.get("Origin")
        if not self.enabled or not origin:
            return None
        if self.any:
            return "*"
        return origin if origin.rstrip("/").lower() in self.origins else None

    def is_preflight(self, request: Request) -> bool:
        return (self.enabled and request.method == "OPTIONS" and "Origin" in request.headers
                and "Access-Control-Request-Method" in request.headers)

    def preflight(self, request: Request, allowed_methods: tuple[str, ...]) -> Response:
        """204 for a preflight on an existing path; CORS headers only for an allowed origin."""
        response = Response(b"", status=204)
        del response.headers["Content-Type"]
        origin = self.allow(request)
        if origin is not None:
            methods = sorted(set(allowed_methods) | {"OPTIONS"})
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
            response.headers["Access-Control-Allow-Headers"] = request.headers.get(
                "Access-Control-Request-Headers", CORS_DEFAULT_HEADERS)
            response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
        if not self.any:
            response.vary.add("Origin")
        return response

    def decorate(self, request: Request, response: Response) -> Response:
        """Add ``Access-Control-Allow-Origin`` (and ``Vary: Origin``) to an ordinary response."""
        if not self.enabled or "Access-Control-Allow-Origin" in response.headers:
            return response
        origin = self.allow(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "X-Request-Id"
        if not self.any:
            response.vary.add("Origin")
        return response
