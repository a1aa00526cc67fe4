"""The management API of the web process, under the reserved prefix ``/_iii/``.

``GET /_iii/health`` (broker, store and engine liveness), ``GET /_iii/functions``,
``/_iii/workers`` and ``/_iii/triggers`` (iii's discovery functions, iii-reference §4) and
``POST /_iii/invoke/<function_id>`` (call any function with the JSON body as payload).
Modules add their own management routes through the web host (the http module serves
``GET /_iii/openapi.json``); they are endpoints of this blueprint like the ones here.

Access: with ``III_API_TOKEN`` set every ``/_iii/`` request needs
``Authorization: Bearer <token>``; without it only loopback clients are answered. Nothing
under ``/_iii/`` ever reaches a module's catch-all view: a reserved path that is not a
management route is a 404 (or a 405) from this module, even if an ``http`` trigger claims it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import FunctionNotFound, IIIError, InvalidFunctionId
from ..httpapi import MANAGEMENT_PREFIX, status_of, token_matches
from ..httpapi import is_management_path as is_reserved  # the name the access policy uses
from ..httpapi.bodies import BadRequestBody, BodyTooLarge, parse_json, read_body
from ..httpapi.responses import error_response, json_response, method_not_allowed
from ..settings import Settings
from ..store import Keys, RedisError, connect_store
from ..transport import connect, ensure_connected

NAME = "iii_management"
ENGINE_FUNCTION = "engine::functions::list"
MAX_TIMEOUT_MS = 600_000
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
"""The methods tried when telling a client which ones a management route accepts."""

INVOKE_STATUS: Mapping[type[IIIError], int] = {FunctionNotFound: 404, InvalidFunctionId: 400}
"""``POST /_iii/invoke/<id>`` names the function, so nobody serving it is a 404 there (a
route or a listing answers 503: the route exists, the function is not running), and an
id that cannot be one (``foo``, ``Engine::x``) is the request's fault: 400."""
_LISTINGS = {"functions": "engine::functions::list", "workers": "engine::workers::list",
             "triggers": "engine::triggers::list"}

__all__ = ["NAME", "access_denied", "blueprint", "client_allowed", "is_loopback", "is_reserved"]


# -- access policy ----------------------------------------------------------------

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


def access_denied(authorization: str | None, remote_addr: str | None,
                  settings: Settings) -> Response | None:
    """The 401/403 for a request that may not use the management API, else None."""
    if settings.api_token is not None:
        if token_matches(authorization, settings.api_token):
            return None
        given = "a wrong bearer token" if authorization else "no Authorization header"
        response = error_response(401, "UNAUTHORIZED",
                                  f"the management API needs 'Authorization: Bearer "
                                  f"<III_API_TOKEN>'; the request had {given}")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if client_allowed(remote_addr, settings):
        return None
    return error_response(403, "FORBIDDEN",
                          f"the management API answers only loopback clients (this one is "
                          f"{remote_addr}) while III_API_TOKEN is unset; set III_API_TOKEN to "
                          "allow other clients with 'Authorization: Bearer <token>'")


# -- the blueprint ----------------------------------------------------------------

blueprint = Blueprint(NAME, __name__, url_prefix=f"/{MANAGEMENT_PREFIX}")
"""The ``/_iii/`` routes; register it on an app whose ``extensions["iii"]`` is the web host."""


@blueprint.record_once
def _setup(state: Any) -> None:
    state.app.extensions[NAME] = {"store": connect_store(state.app.extensions["iii"].settings)}


@blueprint.before_app_request
def guard() -> Response | None:
    """Every request under ``/_iii``: access first, then only management routes."""
    if not is_reserved(request.path):
        return None
    denied = access_denied(request.headers.get("Authorization"), request.remote_addr, _settings())
    if denied is not None or request.blueprint == NAME:
        return denied
    allowed = _allowed_methods(request.path)
    if allowed:
        return method_not_allowed(request.method, request.path, allowed)
    return error_response(404, "NOT_FOUND", f"no management route {request.method} "
                          f"{request.path} (/{MANAGEMENT_PREFIX}/ is reserved: HTTP triggers are "
                          "never served under it)")


@blueprint.get("/health", provide_automatic_options=False)
def health() -> Response:
    """Broker, store and engine liveness, and whether Redis holds what the engine seeds
    (queue settings; gone after Redis restarted empty, until an engine writes them again):
    200 ``ok`` or 503 ``degraded``."""
    settings = _settings()
    store = current_app.extensions[NAME]["store"]
    checks = {"broker": _check(lambda: _broker_check(settings)),
              "store": _check(lambda: _store_check(store)),
              "engine": _check(lambda: _engine_check(store, settings)),
              "seeded": _check(lambda: _seeded_check(store, settings))}
    ok = all(c["ok"] for c in checks.values())
    return json_response({"status": "ok" if ok else "degraded", "checks": checks},
                         200 if ok else 503)


def listing(name: str) -> Response:
    """``GET /_iii/functions|workers|triggers``: the engine's discovery function's answer."""
    return _call(_LISTINGS[name], {}, _settings().http_timeout_ms)


for _name in _LISTINGS:
    blueprint.add_url_rule(f"/{_name}", _name, listing, methods=["GET"],
                           defaults={"name": _name}, provide_automatic_options=False)


@blueprint.post("/invoke/<function_id>", provide_automatic_options=False)
def invoke(function_id: str) -> Response:
    """Call ``function_id`` with the JSON body (``?timeout_ms=`` up to ten minutes)."""
    raw = request.args.get("timeout_ms", "")
    timeout_ms = _settings().http_timeout_ms
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_TIMEOUT_MS:
            return error_response(400, "INVALID_TIMEOUT", f"timeout_ms must be an integer from "
                                  f"1 to {MAX_TIMEOUT_MS}, not {raw!r}")
        timeout_ms = int(raw)
    settings = _settings()
    try:
        body = read_body(request.environ, settings.http_body_limit)
        payload = parse_json(body, settings.payload_max_depth) if body.strip() else None
    except BodyTooLarge:
        raise RequestEntityTooLarge() from None  # answered like every 413 of the web process
    except BadRequestBody as exc:
        return error_response(exc.status, exc.code, str(exc))
    return _call(function_id, payload, timeout_ms, INVOKE_STATUS)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["iii"].settings
    return settings


def _call(function_id: str, payload: Any, timeout_ms: int,
          overrides: Mapping[type[IIIError], int] | None = None) -> Response:
    """Call through the web process's client; errors become the envelope (no stacktrace)."""
    client = current_app.extensions["iii"].client
    try:
        return json_response(client.trigger(function_id, payload, timeout_ms=timeout_ms))
    except IIIError as exc:
        message = exc.message
        if isinstance(exc, FunctionNotFound) and function_id in _LISTINGS.values():
            message = f"no engine is running: {message}"
        return error_response(status_of(exc, overrides) or 500, exc.code, message)


def _allowed_methods(path: str) -> list[str]:
    """The methods this module's routes accept on ``path`` (empty: no such route)."""
    adapter = current_app.url_map.bind("localhost")
    allowed = []
    for method in METHODS:
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


def _seeded_check(store: Any, settings: Settings) -> dict[str, Any]:
    """``NS:seeded``: the engine has written what it seeds (Module.seed) since Redis last
    lost its data."""
    if not store.exists(Keys(settings.namespace).seeded):
        raise IIIError("Redis does not hold what the engine seeds (queue settings): it "
                       "restarted empty, or no engine has started; an engine writes it again "
                       "within a heartbeat")
    return {}
