"""What every HTTP surface of iii-broker agrees on: the ``/_iii/`` prefix of the management
API, iii's error envelope, and the HTTP status of each :class:`~iii_broker.errors.IIIError`.

Two parts of the web process answer HTTP: the web host's management API
(``web/management.py``) and the views of modules (``modules/http/`` serves ``http``
triggers, and refuses trigger paths under ``/_iii/``). A module may not import the host, and
the host should not lean on one module for its own API, so what both need lives here, in the
shared core below them. This file stays free of Flask because the ``http`` trigger type (in
every process) checks paths with it; the Flask responses are in :mod:`.responses`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from ..errors import (
    BrokerUnavailable,
    Forbidden,
    FunctionNotFound,
    IIIError,
    InvocationStopped,
    InvocationTimeout,
)

MANAGEMENT_PREFIX = "_iii"
"""The first path segment reserved for the management API: no ``http`` trigger is served there."""

STATUS_OF: Mapping[type[IIIError], int] = {
    FunctionNotFound: 503,  # nobody serves it now; it answers again when a worker starts
    BrokerUnavailable: 503,
    InvocationTimeout: 504,
    InvocationStopped: 502,
    Forbidden: 403,
}
"""The HTTP status of a failed call, by error class (subclasses included). An error that is
not here is the server's own failure: a 500."""

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error the web process makes itself (iii's envelope).",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "error_id": {"type": "string",
                                    "description": "Names the logged details of a 500."}},
    }},
}
"""The JSON Schema of :func:`envelope` (the OpenAPI ``Error`` component)."""


def envelope(code: str, message: str, error_id: str | None = None) -> dict[str, Any]:
    """iii's error envelope ``{"error": {"code", "message", "error_id"?}}``; ``error_id``
    names a failure whose details went to the log, never to the client."""
    body: dict[str, Any] = {"code": code, "message": message}
    if error_id is not None:
        body["error_id"] = error_id
    return {"error": body}


def status_of(exc: IIIError, overrides: Mapping[type[IIIError], int] | None = None) -> int | None:
    """The HTTP status for ``exc``: its most specific class in ``overrides``, else in
    :data:`STATUS_OF`; None when neither names it (the caller decides what its 500 says)."""
    for kind in type(exc).__mro__:
        if overrides is not None and kind in overrides:
            return overrides[kind]
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return None


def is_management_path(path: str) -> bool:
    """True for ``/_iii`` and everything under it (slashes at either end do not count)."""
    return path.strip("/").split("/", 1)[0] == MANAGEMENT_PREFIX


def token_matches(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>`` (scheme case-insensitive), compared in constant time
    (the management API's ``III_API_TOKEN``, the gateway's token)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
