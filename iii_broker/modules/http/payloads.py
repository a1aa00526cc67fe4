"""HTTP request → function payload, and function result → HTTP response (iii-reference §3)."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Request, Response

from .routes import Route
from .trigger import HTTP


class BadRequestBody(ValueError):
    """The request body cannot be handed to a function: the web process answers 400 (or
    ``status``) with ``code`` and this message."""

    code = "INVALID_BODY"
    status = 400


class InvalidJson(BadRequestBody):
    """The body claims to be JSON and is not, or is JSON no payload may carry."""

    code = "INVALID_JSON"


class LengthRequired(BadRequestBody):
    """A chunked body the server does not de-chunk: it cannot be read safely."""

    code = "LENGTH_REQUIRED"
    status = 411


class BodyTooLarge(ValueError):
    """The body is larger than ``III_HTTP_BODY_LIMIT``."""


class BadResponse(ValueError):
    """The function's result cannot be turned into an HTTP response."""


def is_json(content_type: str | None) -> bool:
    """``application/json`` and any ``+json`` type (``application/problem+json``)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


_CONTENT_HEADERS = frozenset({"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The whole request body, never a cut one: at most ``limit`` bytes, whatever the
    transfer encoding.

    A ``Content-Length`` over ``limit`` is refused before reading; a chunked body is read
    up to ``limit + 1`` bytes, so one byte too many is seen. Raises :class:`BodyTooLarge`,
    and :class:`BadRequestBody` for a body that ends before its ``Content-Length`` or
    cannot be read (a broken chunk, a closed connection).
    """
    length_text = environ.get("CONTENT_LENGTH") or ""
    chunked = "HTTP_TRANSFER_ENCODING" in environ
    if not chunked and length_text in ("", "0"):
        return b""  # no Content-Length and no Transfer-Encoding: HTTP/1.1 says no body
    length: int | None = None
    if chunked:
        # werkzeug's own stream stops at the limit without a word (the body is cut), so
        # read the server's stream; only a server that de-chunks it says it may be read.
        if not environ.get("wsgi.input_terminated"):
            raise LengthRequired("a chunked request body is not supported by this server; "
                                 "send a Content-Length")
        want = limit + 1
    else:
        if not length_text.isdigit():
            raise BadRequestBody(f"Content-Length {length_text!r} is not a number of bytes")
        length = int(length_text)
        if length > limit:
            raise BodyTooLarge()
        want = length
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    got = 0
    while got < want:
        try:
            data = stream.read(want - got)
        except Exception as exc:  # each server raises its own (gunicorn: NoMoreData, InvalidChunkSize)
            raise BadRequestBody(f"the request body could not be read to its end: {exc}") from None
        if not data:
            break
        parts.append(data)
        got += len(data)
    if got > limit:
        raise BodyTooLarge()
    if length is not None and got < length:
        raise BadRequestBody(f"the request body ended after {got} of the {length} bytes its "
                             "Content-Length announced")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_json(raw: bytes, max_depth: int) -> Any:
    """``raw`` as JSON a payload may carry: no ``NaN``/``Infinity`` (JSON has none; they
    could not be sent on) and arrays and objects nested at most ``max_depth`` deep.
    Raises :class:`InvalidJson` naming the problem."""
    # A cheap bound first: a body with no more brackets than the limit cannot nest deeper.
    if raw.count(b"[") + raw.count(b"{") > max_depth:
        depth = json_depth(raw)
        if depth > max_depth:
            raise InvalidJson(f"the request body is JSON nested {depth} levels deep; at most "
                              f"{max_depth} are accepted (III_PAYLOAD_MAX_DEPTH, less the "
                              "payload object the body sits in)")
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except InvalidJson:
        raise
    except RecursionError:  # only if the scan above missed nesting the parser found
        raise InvalidJson(f"the request body is JSON nested deeper than {max_depth} levels "
                          "(III_PAYLOAD_MAX_DEPTH)") from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes that are no text
        raise InvalidJson(f"the request body is not valid JSON: {exc}") from None


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, escapes and all
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in the JSON text ``raw`` (strings left out),
    without recursion: ``[[1]]`` is 2, ``1`` is 0."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise InvalidJson(f"the request body is not valid JSON: {name} is not a JSON number "
                      "(JSON has no NaN or Infinity)")


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
