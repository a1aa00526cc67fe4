"""The JSON responses the web process makes itself (Flask): the one builder of iii's error
envelope, for the web host's management API and for the views of modules alike."""

from __future__ import annotations

import json
from typing import Any

from flask import Response

from . import envelope


def json_response(value: Any, status: int = 200) -> Response:
    """``value`` as a JSON response; raises ``TypeError`` for what JSON cannot carry."""
    return Response(json.dumps(value), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, error_id: str | None = None) -> Response:
    """An error the web process answers itself, in iii's envelope (:func:`.envelope`)."""
    return json_response(envelope(code, message, error_id), status)


def method_not_allowed(method: str, path: str, allowed: tuple[str, ...] | list[str]) -> Response:
    """405 naming the methods the path has, with ``Allow``."""
    response = error_response(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on {path}; "
                              f"allowed: {', '.join(allowed)}")
    response.headers["Allow"] = ", ".join(allowed)
    return response
