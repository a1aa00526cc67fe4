"""``GET /_iii/openapi.json``: an OpenAPI 3.1 document of the live ``http`` triggers.

Built on each request from the registry: every active ``http`` trigger becomes an
operation (``/users/:id`` → ``/users/{id}`` with a string path parameter), its function's
``request_schema`` the JSON request body (which the web process validates: its ``400`` then
says so, with the ``InvalidBody`` component), its ``response_schema`` the ``200`` response,
and the errors the web process makes itself share the ``Error`` component (iii's envelope).
Triggers whose function has no live worker are left out; they return when one starts.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

from ...function import is_reserved
from ...httpapi import ERROR_SCHEMA
from .routes import Route
from .schemas import BODY_METHODS
from .trigger import HTTP

OPENAPI_VERSION = "3.1.0"
OPENAPI_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})

ERRORS: dict[str, str] = {
    "400": "The request body is not valid JSON (INVALID_JSON), is cut short or not UTF-8 "
           "text (INVALID_BODY), or the function refused it.",
    "404": "No route matches (NOT_FOUND), or the function answered 404.",
    "413": "The request body is over the web process's limit (PAYLOAD_TOO_LARGE).",
    "422": "The route's condition function answered false (CONDITION_NOT_MET).",
    "500": "The function or a middleware failed; the message carries an error_id.",
    "503": "No live worker serves the function (function_not_found), or the broker is down.",
    "504": "The function did not answer within the web process's timeout.",
}
INVALID_BODY = ("The request body is not valid JSON (INVALID_JSON), or does not match the "
                "function's request_schema (INVALID_BODY: `path` says where, `rule` which "
                "keyword failed), or the function refused it.")
INVALID_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "iii's error envelope (Error) with, for a body that breaks the "
                   "function's request_schema, where and which rule.",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "path": {"type": "string", "description": "Where the body breaks the schema, as a "
                     "JSON path ($ is the body, e.g. $.items[0].name)."},
            "rule": {"type": "string", "description": "The JSON Schema keyword that failed "
                     "(type, required, minimum, ...)."}},
    }},
}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
_DEFS_REF = "#/$defs/"


def build_document(triggers: list[dict[str, Any]], functions: list[dict[str, Any]],
                   title: str = "iii-broker", version: str | None = None) -> dict[str, Any]:
    """The OpenAPI document for ``triggers`` (``Registry.triggers()``) and ``functions``
    (``Registry.functions()`` or ``engine::functions::list``)."""
    infos = {f.get("function_id"): f for f in functions}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    names: dict[tuple[str, ...], tuple[str, ...]] = {}  # shape → the path's parameter names
    operation_ids: set[str] = set()
    routes = sorted((Route.from_trigger(t) for t in triggers if t.get("type") == HTTP),
                    key=lambda r: r.sort_key)
    omitted = 0
    for route in routes:
        if not route.active or is_reserved(route.function_id):
            omitted += 1
            continue
        if route.method not in OPENAPI_METHODS:
            continue
        params = names.setdefault(route.pattern.shape, route.pattern.names)
        path = route.pattern.template(params)
        item = paths.setdefault(path, {})
        method = route.method.lower()
        if method in item:  # two triggers for one operation: the first one serves it
            continue
        info = infos.get(route.function_id, {})
        operation_id = _unique(_UNSAFE.sub("_", route.function_id), operation_ids)
        item[method] = _operation(route, info, params, operation_id, schemas)
    description = ("The live HTTP triggers of this iii-broker namespace. Only active "
                   "triggers are listed: a trigger whose function has no live worker is "
                   "omitted and reappears when a worker serving it starts.")
    if omitted:
        description += f" Omitted now: {omitted} inactive or reserved trigger(s)."
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version or _package_version(),
                 "description": description},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas},
    }


def _operation(route: Route, info: dict[str, Any], params: tuple[str, ...],
               operation_id: str, schemas: dict[str, Any]) -> dict[str, Any]:
    prefix = operation_id
    operation: dict[str, Any] = {"operationId": operation_id, "x-iii-function-id": route.function_id}
    if info.get("description"):
        operation["summary"] = str(info["description"])
    if route.condition_function_id or route.middleware_function_ids:
        operation["x-iii-condition-function-id"] = route.condition_function_id
        operation["x-iii-middleware-function-ids"] = list(route.middleware_function_ids)
    if params:
        operation["parameters"] = [{"name": name, "in": "path", "required": True,
                                    "schema": {"type": "string", "minLength": 1}}
                                   for name in params]
    request_schema = info.get("request_schema")
    validated = False  # the web process checks the body against the schema before the call
    if route.method in BODY_METHODS and isinstance(request_schema, dict):
        validated = True
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": _hoist(request_schema, f"{prefix}.request", schemas)}}}
    response_schema = info.get("response_schema")
    if isinstance(response_schema, dict):
        ok = {"description": "The function's response body.", "content": {"application/json": {
            "schema": _hoist(response_schema, f"{prefix}.response", schemas)}}}
    else:
        ok = {"description": "The function's response (no response_schema declared).",
              "content": {"*/*": {"schema": {}}}}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    operation["responses"] = {"200": ok, **{status: {"description": text, "content": error}
                                            for status, text in ERRORS.items()}}
    if validated:
        schemas["InvalidBody"] = INVALID_BODY_SCHEMA
        operation["responses"]["400"] = {"description": INVALID_BODY, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InvalidBody"}}}}
    return operation


def _hoist(schema: dict[str, Any], prefix: str, schemas: dict[str, Any]) -> dict[str, Any]:
    """Move a schema's ``$defs`` (pydantic puts its nested models there) into
    ``components/schemas`` and point its ``#/$defs/`` references at them: inside an OpenAPI
    document ``#`` is the document, not the schema."""
    defs = schema.get("$defs")
    if not isinstance(defs, dict) or not defs:
        return schema
    renamed = {name: _UNSAFE.sub("_", f"{prefix}.{name}") for name in defs}

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: rewrite(v) for k, v in value.items() if k != "$defs"}
            ref = out.get("$ref")
            if isinstance(ref, str) and ref.startswith(_DEFS_REF):
                name = ref[len(_DEFS_REF):]
                if name in renamed:
                    out["$ref"] = f"#/components/schemas/{renamed[name]}"
            return out
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    for name, definition in defs.items():
        schemas[renamed[name]] = rewrite(definition)
    result: dict[str, Any] = rewrite(schema)
    return result


def _package_version() -> str:
    try:
        return metadata.version("iii-broker")
    except metadata.PackageNotFoundError:
        return "0"


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name or "operation", 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate
