"""The views of the http module in the web process: every request that is not for the
management API reaches :meth:`HttpTriggers.serve`, and ``GET /_iii/openapi.json`` reaches
:meth:`HttpTriggers.openapi`.

``serve`` finds the route in the live :class:`~.routes.RouteTable`, reads the whole body
(413 over ``III_HTTP_BODY_LIMIT``, whatever the transfer encoding), builds the payload of
iii-reference §3 (400 ``INVALID_JSON`` for JSON it cannot carry), runs the middleware
(:mod:`.middleware`), checks the body against the function's ``request_schema``
(:mod:`.schemas`, 400 ``INVALID_BODY``), runs the condition, calls the function and turns
its result into the response. What it answers itself uses iii's error
envelope (:func:`iii_broker.httpapi.responses.error_response`). Everything per process (settings,
client, table) is read once here, so a request allocates only what it must.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from ... import context as _context
from ...errors import FunctionNotFound, IIIError, InvocationFailed
from ...httpapi import envelope, status_of
from ...httpapi.bodies import BadRequestBody, BodyTooLarge
from ...httpapi.responses import error_response, json_response, method_not_allowed
from ...observe import _trigger_type
from ...store import RedisError
from ..hosts import WebHost
from .middleware import Answered, BadAnswer, Cors, middleware_payload, read_answer, stand_in_context
from .openapi import build_document
from .payloads import BadResponse, make_response, request_payload
from .routes import Route, RouteTable
from .schemas import BodyViolation
from .trigger import HTTP_METHODS

ENDPOINT = "http_trigger"


class HttpTriggers:
    """Serves the registry's ``http`` triggers in one web process."""

    def __init__(self, web: WebHost) -> None:
        settings = web.settings
        self.web = web
        self.client = web.client
        self.table = RouteTable(settings)
        self.cors = Cors(settings.http_cors_origin_list)
        self.global_middleware = settings.http_middleware_ids
        self.timeout_ms = settings.http_timeout_ms
        self.body_limit = settings.http_body_limit
        # The body sits one level down in the payload the function receives, which
        # III_PAYLOAD_MAX_DEPTH bounds as a whole.
        self.body_max_depth = max(1, settings.payload_max_depth - 1)

    def install(self, app: Flask) -> None:
        """Start following the registry and add the views (and CORS, when configured)."""
        self.table.start()
        serve = self.serve
        for rule in ("/", "/<path:path>"):  # every path the management API does not claim
            app.add_url_rule(rule, ENDPOINT, serve, methods=list(HTTP_METHODS),
                             provide_automatic_options=False)
        if self.cors.enabled:
            app.after_request(self.add_cors_headers)
        self.web.management_route("/openapi.json", "openapi", self.openapi, methods=("GET",))

    # -- the views --------------------------------------------------------------------

    def serve(self, path: str = "") -> Response:
        """Answer a request with the route's function (or with why it cannot)."""
        self.table.start()  # no-op unless this process was forked after install
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        match = self.table.match(req.path, req.method)
        route = match.route
        if self.cors.is_preflight(req) and match.allowed:
            return self.cors.preflight(req, match.allowed)
        if route is None:
            allowed = match.allowed
            if allowed:
                return method_not_allowed(req.method, req.path, allowed)
            return error_response(404, "NOT_FOUND", f"no route for {req.method} {req.path}")
        if route.reserved is not None:
            return error_response(403, "FORBIDDEN", f"built-in function {route.reserved!r} is not "
                                  "callable through an HTTP route")
        if not route.active:
            return error_response(503, FunctionNotFound.code,
                                  f"no live worker serves {route.function_id!r}; "
                                  "the route answers again when one starts")
        try:
            payload = request_payload(req, route, match.path_params, body_limit=self.body_limit,
                                      max_depth=self.body_max_depth)
        except BodyTooLarge:
            raise RequestEntityTooLarge() from None  # the web host answers it, as for any 413
        except BadRequestBody as exc:
            return error_response(exc.status, exc.code, str(exc))
        token = _context._set_current(stand_in_context(self.client, req.headers.get("traceparent")))
        trigger = _trigger_type.set("http")
        try:
            return self._run(req, route, payload)
        except Answered as answered:
            return answered.response
        finally:
            _trigger_type.reset(trigger)
            _context._reset_current(token)

    def openapi(self) -> Response:
        """``GET /_iii/openapi.json``: the live routes, read from the registry now."""
        registry = self.table.registry
        try:
            document = build_document(registry.triggers(), registry.functions(),
                                      title=f"iii-broker ({self.web.settings.namespace})")
        except RedisError as exc:
            return error_response(503, "STORE_UNAVAILABLE", f"cannot read the registry: {exc}")
        return json_response(document)

    def add_cors_headers(self, response: Response) -> Response:
        """``after_request``: CORS headers on every response of the web process."""
        return self.cors.decorate(request, response)

    # -- one request --------------------------------------------------------------------

    def _run(self, req: Request, route: Route, payload: dict[str, Any]) -> Response:
        """Middleware, then the condition, then the function (each may answer instead)."""
        context: dict[str, Any] = {}
        if self.global_middleware or route.middleware_function_ids:
            for function_id in (*self.global_middleware, *route.middleware_function_ids):
                answer = self._call(function_id, middleware_payload(payload, context), "middleware")
                try:
                    action, value = read_answer(answer)
                    if action == "respond":
                        return make_response(value)
                except (BadAnswer, BadResponse) as exc:
                    return self.web.failure("invalid_middleware_response",
                                            f"middleware {function_id!r} answered something "
                                            "unusable", f"{exc}: {answer!r}"[:2000])
                context = {**context, **value}
        payload["context"] = context
        if route.body_schema is not None:
            try:
                route.body_schema.check(payload["body"])
            except BodyViolation as exc:
                error = envelope("INVALID_BODY", str(exc))
                error["error"].update(path=exc.path, rule=exc.rule)
                return json_response(error, 400)
        if route.condition_function_id is not None:
            if not self._call(route.condition_function_id, payload, "condition"):
                return error_response(422, "CONDITION_NOT_MET", f"the condition of {req.method} "
                                      f"{route.api_path} is not met")
        result = self._call(route.function_id, payload, "function")
        try:
            return make_response(result)
        except BadResponse as exc:
            return self.web.failure("invalid_response", f"function {route.function_id!r} "
                                    f"returned a response that cannot be sent: {exc}", str(exc))

    def _call(self, function_id: str, payload: Any, role: str) -> Any:
        """Call and wait; a failed call becomes the response, raised as :class:`Answered`."""
        try:
            return self.client.trigger(function_id, payload, timeout_ms=self.timeout_ms)
        except InvocationFailed as exc:
            raise Answered(self.web.failure(exc.code, f"{role} {function_id!r} failed",
                                            exc.stacktrace or exc.message)) from None
        except IIIError as exc:
            status = status_of(exc)
            if status is None:
                raise Answered(self.web.failure(exc.code, f"calling {function_id!r} failed",
                                                str(exc))) from None
            raise Answered(error_response(status, exc.code, exc.message)) from None
