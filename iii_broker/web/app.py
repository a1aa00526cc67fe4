"""The Flask app of the web process: serves the registry's ``http`` triggers.

Every request goes through one view: find the route in the live :class:`RouteTable`,
build the payload of iii-reference §3, run the middleware and the condition
(:mod:`.middleware`), call the function with ``App.trigger`` and turn its result into the
response. Errors the web process makes itself use iii's envelope
``{"error": {"code", "message", "error_id"?}}``.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from ..app import App, is_reserved
from ..errors import (
    BrokerUnavailable,
    Forbidden,
    FunctionNotFound,
    IIIError,
    InvocationFailed,
    InvocationStopped,
    InvocationTimeout,
)
from ..modules.http import HTTP_METHODS
from ..settings import Settings
from .management import management_blueprint
from .middleware import Answered, BadAnswer, Cors, middleware_payload, read_answer, trace
from .payloads import BadRequestBody, BadResponse, make_response, request_payload
from .routes import Route, RouteTable

log = logging.getLogger("iii.web")

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
_STATUS_OF: dict[type[IIIError], int] = {
    FunctionNotFound: 503, BrokerUnavailable: 503, InvocationTimeout: 504,
    InvocationStopped: 502, Forbidden: 403,
}


def create_app(settings: Settings | None = None) -> Flask:
    """The web process's Flask app; settings come from ``III_*`` variables unless given.

    Starts a daemon thread that keeps the route table in step with the registry.
    Raises :class:`~iii_broker.errors.ConfigError` for bad settings.
    """
    if settings is None:
        from ..cli import setup_logging
        settings = Settings.from_env()
        setup_logging(settings)
    table = RouteTable(settings)
    table.start()
    client = App("web", settings=settings)

    app = Flask("iii_broker.web", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.http_body_limit
    app.extensions["iii"] = {"settings": settings, "routes": table, "client": client}
    app.register_blueprint(management_blueprint())  # /_iii/: before any user route or hook
    app.url_map.merge_slashes = False  # the path reaches the route table as sent
    cors = Cors(settings.http_cors_origin_list)
    global_middleware = settings.http_middleware_ids

    def serve(path: str = "") -> Response:
        match = table.match(request.path, request.method)
        route = match.route
        if match.allowed and cors.is_preflight(request):
            return cors.preflight(request, match.allowed)
        if route is None:
            if match.allowed:
                response = error(405, "METHOD_NOT_ALLOWED",
                                 f"{request.method} is not allowed on {request.path}; "
                                 f"allowed: {', '.join(match.allowed)}")
                response.headers["Allow"] = ", ".join(match.allowed)
                return response
            return error(404, "NOT_FOUND", f"no route for {request.method} {request.path}")
        if (request.content_length or 0) > settings.http_body_limit:
            return too_large()
        reserved = [f for f in (route.function_id, route.condition_function_id,
                                *route.middleware_function_ids) if f and is_reserved(f)]
        if reserved:
            return error(403, "FORBIDDEN",
                         f"built-in function {reserved[0]!r} is not callable through an HTTP route")
        if not route.active:
            return error(503, FunctionNotFound.code,
                         f"no live worker serves {route.function_id!r}; "
                         "the route answers again when one starts")
        try:
            payload = request_payload(request, route, match.path_params)
        except BadRequestBody as exc:
            return error(400, "INVALID_JSON", str(exc))
        try:
            with trace(client, request.headers.get("traceparent")):
                return run(route, payload)
        except Answered as answered:
            return answered.response

    def run(route: Route, payload: dict[str, Any]) -> Response:
        """Middleware, then the condition, then the function (each may answer instead)."""
        context: dict[str, Any] = {}
        for function_id in (*global_middleware, *route.middleware_function_ids):
            answer = call(function_id, middleware_payload(payload, context), "middleware")
            try:
                action, value = read_answer(answer)
                if action == "respond":
                    return make_response(value)
            except (BadAnswer, BadResponse) as exc:
                return failure("invalid_middleware_response",
                               f"middleware {function_id!r} answered something unusable",
                               f"{exc}: {answer!r}"[:2000])
            context = {**context, **value}
        payload["context"] = context
        if route.condition_function_id is not None:
            if not call(route.condition_function_id, payload, "condition"):
                return error(422, "CONDITION_NOT_MET",
                             f"the condition of {request.method} {route.api_path} is not met")
        result = call(route.function_id, payload, "function")
        try:
            return make_response(result)
        except BadResponse as exc:
            return failure("invalid_response",
                           f"function {route.function_id!r} returned a response that cannot be "
                           f"sent: {exc}", str(exc))

    def call(function_id: str, payload: Any, role: str) -> Any:
        """``client.trigger``; an error becomes the response, raised as :class:`Answered`."""
        try:
            return client.trigger(function_id, payload, timeout_ms=settings.http_timeout_ms)
        except InvocationFailed as exc:
            raise Answered(failure(exc.code, f"{role} {function_id!r} failed",
                                   exc.stacktrace or exc.message)) from None
        except IIIError as exc:
            status = next((s for kind, s in _STATUS_OF.items() if isinstance(exc, kind)), None)
            if status is None:
                raise Answered(failure(exc.code, f"calling {function_id!r} failed",
                                       str(exc))) from None
            raise Answered(error(status, exc.code, exc.message)) from None

    for rule in ("/", "/<path:path>"):
        app.add_url_rule(rule, "http_trigger", serve, methods=list(HTTP_METHODS),
                         provide_automatic_options=False)

    @app.before_request
    def remember_request_id() -> None:
        table.start()  # no-op unless this process was forked after create_app
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id") or uuid.uuid4().hex
        return cors.decorate(request, response)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            return too_large()
        code = re.sub(r"\W+", "_", exc.name).strip("_").upper()
        return error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        return failure("internal_error", "the web process failed to handle the request",
                       repr(exc), exc_info=exc)

    def too_large() -> Response:
        return error(413, "PAYLOAD_TOO_LARGE",
                     f"the request body is larger than {settings.http_body_limit} bytes")

    def failure(code: str, message: str, detail: str, exc_info: Any = None) -> Response:
        """A 500 whose details go to the log under a fresh ``error_id``, never to the client."""
        error_id = uuid.uuid4().hex
        log.error("%s %s → 500 %s (error_id %s, request %s): %s", request.method, request.path,
                  code, error_id, g.get("request_id"), detail, exc_info=exc_info)
        return error(500, code, f"{message} (error_id {error_id})", error_id=error_id)

    return app


def error(status: int, code: str, message: str, error_id: str | None = None) -> Response:
    """An engine-made error in iii's envelope."""
    body: dict[str, Any] = {"code": code, "message": message}
    if error_id is not None:
        body["error_id"] = error_id
    return Response(json.dumps({"error": body}), status=status, content_type="application/json")
