"""HTTP request → function payload, and function result → HTTP response (iii-reference §3)."""

from __future__ import annotations

import json
from typing import Any

from flask import Request, Response

from ...httpapi.bodies import BadRequestBody, parse_json, read_body
from .routes import Route
from .trigger import HTTP


class BadResponse(ValueError):
    """The function's result cannot be turned into an HTTP response."""


def is_json(content_type: str | None) -> bool:
    """``application/json`` and any ``+json`` type (``application/problem+json``)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


_CONTENT_HEADERS = frozenset({"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})


def request_payload(request: Request, route: Route, path_params: dict[str, str], *,
                    body_limit: int, max_depth: int) -> dict[str, Any]:
    """The payload an ``http`` trigger's function receives.

    Header names are lower-case; a query parameter given more than once is a list. The
    body is parsed JSON for JSON content types, else UTF-8 text, and None when empty.
    Raises :class:`BodyTooLarge` for a body over ``body_limit`` bytes, :class:`InvalidJson`
    for malformed JSON (or nested over ``max_depth``) under a JSON content type, and
    :class:`BadRequestBody` for a body that is cut short or is not UTF-8 text.
    """
    environ = request.environ
    raw = read_body(environ, body_limit)
    body: Any = None
    if raw:
        if is_json(request.content_type):
            body = parse_json(raw, max_depth)
        else:
            try:
                body = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequestBody(
                    f"the request body ({request.content_type or 'no Content-Type'}) is not "
                    f"UTF-8 text: {exc}; send JSON (application/json) or UTF-8 text") from None
    query: dict[str, Any] = {}
    if environ.get("QUERY_STRING"):
        for name in request.args:
            values = request.args.getlist(name)
            query[name] = values[0] if len(values) == 1 else values
    # What iterating werkzeug's EnvironHeaders yields, lower-cased, read off the environ.
    headers: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            if name in _CONTENT_HEADERS:
                continue
            key = name[5:].replace("_", "-").lower()
        elif name in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            key = name.replace("_", "-").lower()
        else:
            continue
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return {
        "path": request.path,
        "method": request.method,
        "path_params": path_params,
        "query_params": query,
        "headers": headers,
        "body": body,
        "trigger": {"type": HTTP, "path": route.api_path, "method": route.method},
        "context": {},
    }


def make_response(result: Any) -> Response:
    """The response for a function's result.

    ``{status_code, body, headers?}`` is an HTTP response (``headers`` a map or a list of
    ``"Name: value"``); anything else is a 200 with the value as JSON. A string body is
    sent as is when ``headers`` give it a content type, else as ``text/plain``; any other
    body is sent as JSON. Raises :class:`BadResponse` for a malformed response.
    """
    if not (isinstance(result, dict) and "status_code" in result):
        return _json_response(result, 200, [])
    status = result["status_code"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadResponse(f"status_code must be an integer from 100 to 599, not {status!r}")
    headers = _headers(result.get("headers"))
    body = result.get("body")
    has_type = any(name.lower() == "content-type" for name, _ in headers)
    if body is None:
        response = Response(b"", status=status)
        del response.headers["Content-Type"]  # no body, no type (unless the function gives one)
    elif isinstance(body, str):
        response = Response(body.encode("utf-8"), status=status,
                            content_type=None if has_type else "text/plain; charset=utf-8")
    else:
        return _json_response(body, status, headers)
    return _with_headers(response, headers)


def _json_response(value: Any, status: int, headers: list[tuple[str, str]]) -> Response:
    response = Response(json.dumps(value), status=status, content_type="application/json")
    return _with_headers(response, headers)


def _with_headers(response: Response, headers: list[tuple[str, str]]) -> Response:
    for name, header_value in headers:
        if name.lower() == "content-type":
            response.headers["Content-Type"] = header_value
        else:
            response.headers.add(name, header_value)
    return response


def _headers(raw: Any) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        pairs = [(str(k), v) for k, v in raw.items()]
    elif isinstance(raw, list):
        pairs = []
        for entry in raw:
            if not isinstance(entry, str) or ":" not in entry:
                raise BadResponse(f'a header in a list must be "Name: value", not {entry!r}')
            name, value = entry.split(":", 1)
            pairs.append((name.strip(), value.strip()))
    else:
        raise BadResponse(f"headers must be a map or a list, not {type(raw).__name__}")
    out = []
    for name, value in pairs:
        if not name or any(c in name for c in " \r\n:") or not isinstance(value, str | int | float):
            raise BadResponse(f"bad header {name!r}: {value!r}")
        text = str(value)
        if "\r" in text or "\n" in text:
            raise BadResponse(f"header {name!r} has a line break in its value")
        out.append((name, text))
    return out
