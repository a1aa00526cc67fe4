"""Request bodies read whole or refused: the size limit whatever the transfer encoding,
and JSON no payload may carry (too deep, ``NaN``/``Infinity``). Used by every route that
takes a body: ``http`` triggers and the management API's ``/_iii/invoke``."""

from __future__ import annotations

import json
import re
from typing import Any


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


