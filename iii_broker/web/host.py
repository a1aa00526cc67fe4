"""The web process as its modules see it (:class:`~iii_broker.modules.hosts.WebHost`), and
what it does for every request whoever serves it: the ``X-Request-Id``, and iii's error
envelope for every HTTP error and unexpected exception no view answered."""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from ..app import App
from ..httpapi import MANAGEMENT_PREFIX
from ..httpapi.responses import error_response
from ..settings import Settings
from .management import NAME as MANAGEMENT

log = logging.getLogger("iii.web")

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces


class WebProcess:
    """One web process's settings and client, and its request-wide hooks.

    ``app.extensions["iii"]`` is this object, for the management API's views.
    """

    def __init__(self, app: Flask, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.client = App("web", settings=settings)
        app.extensions["iii"] = self
        app.before_request(self.remember_request_id)
        app.after_request(self.echo_request_id)
        app.register_error_handler(HTTPException, self.http_error)
        app.register_error_handler(Exception, self.unexpected)

    # -- what modules use (WebHost) ----------------------------------------------------

    def trigger(self, function_id: str, payload: Any = None, **kwargs: Any) -> Any:
        """Call a function like any client (``App.trigger``)."""
        return self.client.trigger(function_id, payload, **kwargs)

    def management_route(self, rule: str, endpoint: str, view: Callable[..., Response],
                         methods: Sequence[str] = ("GET",)) -> None:
        """Serve ``view`` at ``/_iii{rule}``, as an endpoint of the management blueprint (so
        its access check and its 404/405s cover it)."""
        self.app.add_url_rule(f"/{MANAGEMENT_PREFIX}{rule}", f"{MANAGEMENT}.{endpoint}", view,
                              methods=list(methods), provide_automatic_options=False)

    def failure(self, code: str, message: str, detail: str, exc_info: Any = None) -> Response:
        """A 500 whose details go to the log under a fresh ``error_id``, never to the client."""
        error_id = uuid.uuid4().hex
        log.error("%s %s → 500 %s (error_id %s, request %s): %s", request.method, request.path,
                  code, error_id, g.get("request_id"), detail, exc_info=exc_info)
        return error_response(500, code, f"{message} (error_id {error_id})", error_id=error_id)

    # -- every request -------------------------------------------------------------------

    def remember_request_id(self) -> None:
        """``before_request``: the client's ``X-Request-Id`` when it is sane, else a new one."""
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _REQUEST_ID.fullmatch(given) else os.urandom(16).hex()

    def echo_request_id(self, response: Response) -> Response:
        """``after_request``: every response names its request."""
        response.headers["X-Request-Id"] = g.get("request_id") or os.urandom(16).hex()
        return response

    def http_error(self, exc: HTTPException) -> Response:
        """A werkzeug HTTP error (no such rule, body too large, ...) in iii's envelope."""
        if exc.code == 413:
            return error_response(413, "PAYLOAD_TOO_LARGE", f"the request body is larger than "
                                  f"{self.settings.http_body_limit} bytes")
        code = re.sub(r"\W+", "_", exc.name).strip("_").upper()
        return error_response(exc.code or 500, code, exc.description or exc.name)

    def unexpected(self, exc: Exception) -> Response:
        """Any other exception: a 500 with an ``error_id``, the traceback in the log."""
        return self.failure("internal_error", "the web process failed to handle the request",
                            repr(exc), exc_info=exc)
