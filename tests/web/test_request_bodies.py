"""A request body reaches a function whole and as JSON a payload can carry, or not at all:
413 over III_HTTP_BODY_LIMIT whatever the transfer encoding, 400 for a body cut short,
JSON nested too deep or holding NaN/Infinity, and text that is not UTF-8."""

from __future__ import annotations

import io
import json

import pytest

from iii_broker.httpapi.bodies import (
    BadRequestBody,
    BodyTooLarge,
    InvalidJson,
    LengthRequired,
    json_depth,
    parse_json,
    read_body,
)
from tests.web.raw_http import post_chunked, send

# -- reading the body ------------------------------------------------------------------


def environ(body: bytes, *, length: int | None = None, chunked: bool = False) -> dict:
    """What a WSGI server that de-chunks (gunicorn) hands the app."""
    env = {"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True}
    if length is not None:
        env["CONTENT_LENGTH"] = str(length)
    if chunked:
        env["HTTP_TRANSFER_ENCODING"] = "chunked"
    return env


def test_a_chunked_body_one_byte_over_the_limit_is_too_large_not_cut():
    with pytest.raises(BodyTooLarge):
        read_body(environ(b"x" * 101, chunked=True), limit=100)
    assert read_body(environ(b"x" * 100, chunked=True), limit=100) == b"x" * 100


def test_a_content_length_over_the_limit_is_refused_before_reading():
    env = environ(b"x" * 500, length=500)
    with pytest.raises(BodyTooLarge):
        read_body(env, limit=100)
    assert env["wsgi.input"].tell() == 0


def test_a_body_shorter_than_its_content_length_is_refused_naming_both_sizes():
    with pytest.raises(BadRequestBody, match="ended after 5 of the 10 bytes"):
        read_body(environ(b"12345", length=10), limit=100)


def test_a_chunked_body_the_server_does_not_terminate_needs_a_length():
    env = environ(b"abc", chunked=True)
    del env["wsgi.input_terminated"]
    with pytest.raises(LengthRequired) as info:
        read_body(env, limit=100)
    assert info.value.status == 411


def test_a_body_the_server_fails_to_read_is_a_bad_request():
    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise ValueError("Invalid chunk size")  # what gunicorn raises, more or less

    env = environ(b"", chunked=True)
    env["wsgi.input"] = Broken()
    with pytest.raises(BadRequestBody, match="could not be read to its end: Invalid chunk size"):
        read_body(env, limit=100)


def test_no_length_and_no_transfer_encoding_is_no_body():
    assert read_body({"wsgi.input": io.BytesIO(b"ignored")}, limit=100) == b""


# -- JSON a payload can carry --------------------------------------------------------------


def test_json_depth_counts_nesting_and_ignores_brackets_in_strings():
    assert json_depth(b"1") == 0
    assert json_depth(b"[[1]]") == 2
    assert json_depth(b'{"a": "[[[[\\"[[", "b": [{}]}') == 3


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_invalid_json_naming_the_constant(constant):
    with pytest.raises(InvalidJson, match=f"{constant} is not a JSON number"):
        parse_json(f'{{"x": [1, {constant}]}}'.encode(), max_depth=10)


def test_json_deeper_than_the_limit_is_refused_naming_the_setting():
    assert parse_json(b"[" * 10 + b"]" * 10, max_depth=10) == [[[[[[[[[[]]]]]]]]]]
    for depth in (11, 985, 100_000):  # 100 000 would overflow the parser's recursion
        with pytest.raises(InvalidJson, match=f"nested {depth} levels deep; at most 10 .*"
                                              "III_PAYLOAD_MAX_DEPTH"):
            parse_json(b"[" * depth + b"]" * depth, max_depth=10)


def test_many_brackets_side_by_side_are_not_depth():
    flat = json.dumps([{"a": [i]} for i in range(1000)]).encode()
    assert len(parse_json(flat, max_depth=3)) == 1000


# -- over HTTP, against the shared web process (1024-byte limit) ------------------------------


def test_a_chunked_body_over_the_limit_is_413_not_cut_to_the_limit(web):
    body = json.dumps({"x": "y" * 5000}).encode()  # before the fix: the first 1024 bytes, a 400
    reply = post_chunked(web.port, "/items", body)
    assert reply.status == 413, reply.body
    assert reply.error["code"] == "PAYLOAD_TOO_LARGE"
    text = b"z" * 3000  # not JSON: before the fix it reached the function, cut to 1024 bytes
    reply = post_chunked(web.port, "/shout", text, content_type="text/plain", method="PUT")
    assert reply.status == 413, reply.body


def test_a_chunked_body_within_the_limit_arrives_whole(web):
    body = json.dumps({"x": "y" * 900}).encode()
    reply = post_chunked(web.port, "/items", body)
    assert reply.status == 201, reply.body
    assert reply.json() == {"created": {"x": "y" * 900}}


def test_a_body_cut_short_of_its_content_length_is_400(web):
    head = ("PUT /shout HTTP/1.1\nHost: t\nContent-Type: text/plain\nContent-Length: 100\n"
            "Connection: close")
    reply = send(web.port, head, b"a" * 40, half_close=True)
    assert reply.status == 400, reply.body
    assert "ended after 40 of the 100 bytes" in reply.error["message"]


def test_deep_json_and_nan_are_400_invalid_json_naming_the_problem(web):
    deep = web.request("POST", "/items", body="[" * 200 + "]" * 200,
                       headers={"Content-Type": "application/json"})
    assert deep.status == 400, deep.body
    error = deep.json()["error"]
    assert error["code"] == "INVALID_JSON" and "III_PAYLOAD_MAX_DEPTH" in error["message"]
    assert "nested 200 levels deep" in error["message"]
    nan = web.request("POST", "/items", body='{"x": NaN}', headers={"Content-Type": "application/json"})
    assert nan.status == 400 and nan.json()["error"]["code"] == "INVALID_JSON"
    assert "NaN" in nan.json()["error"]["message"]


def test_a_text_body_that_is_not_utf8_is_400_invalid_body(web):
    reply = web.request("PUT", "/shout", body=b"caf\xe9", headers={"Content-Type": "text/plain"})
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["code"] == "INVALID_BODY" and "not UTF-8" in error["message"]
    as_json = web.request("POST", "/items", body=b'{"a": "\xff"}',
                          headers={"Content-Type": "application/json"})
    assert as_json.status == 400 and as_json.json()["error"]["code"] == "INVALID_JSON"
