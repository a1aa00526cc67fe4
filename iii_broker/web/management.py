"""The management API of the web process, under the reserved prefix ``/_iii/``.

``GET /_iii/health`` (broker, store and engine liveness), ``GET /_iii/functions``,
``/_iii/workers`` and ``/_iii/triggers`` (iii's discovery functions, iii-reference §4),
``GET /_iii/openapi.json`` (the live http triggers as OpenAPI 3.1, :mod:`.openapi`) and
``POST /_iii/invoke/<function_id>`` (call any function with the JSON body as payload).

Access: with ``III_API_TOKEN`` set every ``/_iii/`` request needs
``Authorization: Bearer <token>``; without it only loopback clients are answered. Nothing
under ``/_iii/`` ever reaches the user route table: a reserved path that is not one of the
routes here is a 404 (or a 405) from this module, even if an ``http`` trigger claims it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from ..errors import (
    BrokerUnavailable,
    Forbidden,
    FunctionNotFound,
    IIIError,
    InvocationStopped,
    InvocationTimeout,
)
from ..modules.http import HTTP_METHODS
from ..settings import Settings
from ..store import Keys, RedisError, connect_store
from ..transport import connect, ensure_connected
from .openapi import build_document
from .routes import split_path

PREFIX = "_iii"
NAME = "iii_management"
ENGINE_FUNCTION = "engine::functions::list"
MAX_TIMEOUT_MS = 600_000

_INVOKE_STATUS: dict[type[IIIError], int] = {
    FunctionNotFound: 404, InvocationTimeout: 504, InvocationStopped: 502,
    BrokerUnavailable: 503, Forbidden: 403,
}
_LISTINGS = {"functions": "engine::functions::list", "workers": "engine::workers::list",
             "triggers": "engine::triggers::list"}


# -- access policy ----------------------------------------------------------------

def is_reserved(path: str) -> bool:
    """True for ``/_iii`` and everything under it (slashes at either end do not count)."""
    return split_path(path)[:1] == (PREFIX,)


def is_loopback(remote_addr: str | None) -> bool:
    """127.0.0.0/8, ``::1`` and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        address = ipaddress.ip_address((remote_addr or "").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def client_allowed(remote_addr: str | None, settings: Settings) -> bool:
    """Without a token only loopback clients may ask; with one the token decides."""
    return settings.api_token is not None or is_loopback(remote_addr)


def token_matches(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>`` (scheme case-insensitive), compared in constant time."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def access_denied(authorization: str | None, remote_addr: str | None,
                  settings: Settings) -> Response | None:
    """The 401/403 for a request that may not use the management API, else None."""
    if settings.api_token is not None:
        if token_matches(authorization, settings.api_token):
            return None
        given = "a wrong bearer token" if authorization else "no Authorization header"
        response = error(401, "UNAUTHORIZED",
                         f"the management API needs 'Authorization: Bearer <III_API_TOKEN>'; "
                         f"the request had {given}")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if client_allowed(remote_addr, settings):
        return None
    return error(403, "FORBIDDEN",
                 f"the management API answers only loopback clients (this one is {remote_addr}) "
                 "while III_API_TOKEN is unset; set III_API_TOKEN to allow other clients "
                 "with 'Authorization: Bearer <token>'")


def error(status: int, code: str, message: str) -> Response:
    """iii's error envelope ``{"error": {"code", "message"}}``."""
    return json_response({"error": {"code": code, "message": message}}, status)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, content_type="application/json")


# -- the blueprint ----------------------------------------------------------------

def management_blueprint() -> Blueprint:
    """The ``/_iii/`` routes; register on an app whose ``extensions["iii"]`` is set."""
    bp = Blueprint(NAME, __name__, url_prefix=f"/{PREFIX}")

    def route(rule: str, method: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
        return bp.route(rule, methods=[method], provide_automatic_options=False)

    @bp.record_once
    def setup(state: Any) -> None:
        app: Flask = state.app
        app.extensions[NAME] = {"store": connect_store(app.extensions["iii"]["settings"])}

    @bp.before_app_request
    def guard() -> Response | None:
        """Every request under ``/_iii``: access first, then only this module's routes."""
        if not is_reserved(request.path):
            return None
        denied = access_denied(request.headers.get("Authorization"), request.remote_addr,
                               _settings())
        if denied is not None or request.blueprint == NAME:
            return denied
        allowed = _allowed_methods(request.path)
        if allowed:
            response = error(405, "METHOD_NOT_ALLOWED",
                             f"{request.method} is not allowed on {request.path}; "
                             f"allowed: {', '.join(allowed)}")
            response.headers["Allow"] = ", ".join(allowed)
            return response
        return error(404, "NOT_FOUND", f"no management route {request.method} {request.path}"
                     f" (/{PREFIX}/ is reserved: HTTP triggers are never served under it)")

    @route("/health", "GET")
    def health() -> Response:
        settings = _settings()
        store = current_app.extensions[NAME]["store"]
        checks = {"broker": _check(lambda: _broker_check(settings)),
                  "store": _check(lambda: _store_check(store)),
                  "engine": _check(lambda: _engine_check(store, settings))}
        ok = all(c["ok"] for c in checks.values())
        return json_response({"status": "ok" if ok else "degraded", "checks": checks},
                             200 if ok else 503)

    for name, function_id in _LISTINGS.items():
        bp.add_url_rule(f"/{name}", name, _listing(function_id), methods=["GET"],
                        provide_automatic_options=False)

    @route("/openapi.json", "GET")
    def openapi() -> Response:
        registry = current_app.extensions["iii"]["routes"].registry
        try:
            document = build_document(registry.triggers(), registry.functions(),
                                      title=f"iii-broker ({_settings().namespace})")
        except RedisError as exc:
            return error(503, "STORE_UNAVAILABLE", f"cannot read the registry: {exc}")
        return json_response(document)

    @route("/invoke/<function_id>", "POST")
    def invoke(function_id: str) -> Response:
        raw = request.args.get("timeout_ms", "")
        timeout_ms = _settings().http_timeout_ms
        if raw:
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_TIMEOUT_MS:
                return error(400, "INVALID_TIMEOUT", f"timeout_ms must be an integer from 1 to "
                             f"{MAX_TIMEOUT_MS}, not {raw!r}")
            timeout_ms = int(raw)
        body = request.get_data(cache=True)
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError as exc:
            return error(400, "INVALID_JSON", f"the request body is not valid JSON: {exc}")
        return _call(function_id, payload, timeout_ms, _INVOKE_STATUS)

    return bp


def _settings() -> Settings:
    settings: Settings = current_app.extensions["iii"]["settings"]
    return settings


def _listing(function_id: str) -> Callable[[], Response]:
    def view() -> Response:
        return _call(function_id, {}, _settings().http_timeout_ms,
                     {**_INVOKE_STATUS, FunctionNotFound: 503})
    return view


def _call(function_id: str, payload: Any, timeout_ms: int,
          statuses: dict[type[IIIError], int]) -> Response:
    """Call through the web process's client; errors become the envelope (no stacktrace)."""
    client = current_app.extensions["iii"]["client"]
    try:
        return json_response(client.trigger(function_id, payload, timeout_ms=timeout_ms))
    except IIIError as exc:
        status = next((s for kind, s in statuses.items() if isinstance(exc, kind)), 500)
        message = exc.message
        if isinstance(exc, FunctionNotFound) and function_id in _LISTINGS.values():
            message = f"no engine is running: {message}"
        return error(status, exc.code, message)


def _allowed_methods(path: str) -> list[str]:
    """The methods this module's routes accept on ``path`` (empty: no such route)."""
    adapter = current_app.url_map.bind("localhost")
    allowed = []
    for method in HTTP_METHODS:
        try:
            endpoint, _ = adapter.match(path, method=method)
        except HTTPException:
            continue
        if str(endpoint).startswith(f"{NAME}."):
            allowed.append(method)
    return allowed


def _check(probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one health probe: ``{ok, latency_ms, ...}`` or ``{ok: false, error}``."""
    started = time.monotonic()
    try:
        result = {"ok": True, **probe()}
    except (IIIError, RedisError, OSError) as exc:
        result = {"ok": False, "error": exc.message if isinstance(exc, IIIError) else str(exc)}
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _broker_check(settings: Settings) -> dict[str, Any]:
    conn = connect(settings)
    try:
        ensure_connected(conn, settings)
        return {"transport": urlsplit(settings.broker_url).scheme}
    finally:
        conn.release()


def _store_check(store: Any) -> dict[str, Any]:
    store.ping()
    return {}


def _engine_check(store: Any, settings: Settings) -> dict[str, Any]:
    """A worker serving ``engine::functions::list`` whose lease has not run out: a crashed
    last engine stays registered (nobody sweeps it), so membership alone is not enough."""
    keys = Keys(settings.namespace)
    if not store.sismember(keys.functions, ENGINE_FUNCTION):
        raise IIIError(f"no engine is running: no worker serves {ENGINE_FUNCTION!r}")
    engines = sorted(store.smembers(keys.function_workers(ENGINE_FUNCTION)))
    expiries = store.zmscore(keys.workers, engines) if engines else []
    now_ms = time.time() * 1000
    live = [wid for wid, expiry in zip(engines, expiries, strict=True)
            if expiry is not None and expiry > now_ms]
    if not live:
        raise IIIError(f"no engine is running: the lease of every worker serving "
                       f"{ENGINE_FUNCTION!r} has run out ({', '.join(engines)})")
    return {"engines": len(live)}
