"""Poison over HTTP, against a real web process, engine and worker: bodies over the limit
in any transfer encoding, a Content-Length that lies, broken chunks, JSON nested too deep
or holding NaN/Infinity, bytes that are not UTF-8, the wrong content type, bodies that
break the function's request_schema. Each gets a clear 4xx in iii's envelope, the function
is never called with a cut or bad body (it records every call), and the web process keeps
serving."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.helpers import in_thread
from tests.web.conftest import recorded_calls, start_web
from tests.web.raw_http import RawReply, chunked, send

LIMIT = 4096  # III_HTTP_BODY_LIMIT of the web process under test


@dataclass
class Poison:
    name: str
    head: str
    body: bytes
    status: int
    code: str | None = None
    """The envelope's code; None when the server refuses before the app sees the request."""
    said: str = ""
    half_close: bool = False


def request(path: str, content_type: str = "application/json", *, length: int | None = None,
            method: str = "POST") -> str:
    head = f"{method} {path} HTTP/1.1\nHost: t\nConnection: close\nContent-Type: {content_type}"
    return head + (f"\nContent-Length: {length}" if length is not None else
                   "\nTransfer-Encoding: chunked")


def sized(path: str, body: bytes, content_type: str = "application/json") -> tuple[str, bytes]:
    return request(path, content_type, length=len(body)), body


DEEP = b"[" * 985 + b"]" * 985
POISONS = [
    Poison("JSON nested 985 deep", *sized("/echo", DEEP), 400, "INVALID_JSON",
           "nested 985 levels deep; at most 63"),
    Poison("JSON one level too deep", *sized("/echo", b"[" * 64 + b"]" * 64), 400,
           "INVALID_JSON", "III_PAYLOAD_MAX_DEPTH"),
    Poison("NaN", *sized("/echo", b'{"x": NaN}'), 400, "INVALID_JSON", "NaN is not a JSON number"),
    Poison("Infinity, nested", *sized("/echo", b'{"x": [1, {"y": Infinity}]}'), 400,
           "INVALID_JSON", "Infinity"),
    Poison("-Infinity", *sized("/echo", b"-Infinity"), 400, "INVALID_JSON", "-Infinity"),
    Poison("a 1 MiB chunked body", request("/echo"), chunked(b"[" + b"1," * 524_288 + b"1]", 8192),
           413, "PAYLOAD_TOO_LARGE", f"larger than {LIMIT} bytes"),
    Poison("a chunked body one byte over", request("/echo", "text/plain"),
           chunked(b"a" * (LIMIT + 1)), 413, "PAYLOAD_TOO_LARGE"),
    Poison("a Content-Length over the limit", *sized("/echo", b"b" * (LIMIT + 1), "text/plain"),
           413, "PAYLOAD_TOO_LARGE"),
    Poison("a Content-Length longer than the body", request("/echo", "text/plain", length=1000),
           b"c" * 10, 400, "INVALID_BODY", "ended after 10 of the 1000 bytes", half_close=True),
    Poison("a Content-Length shorter than the JSON", request("/echo", length=5),
           b'{"a": 1, "b": 2}', 400, "INVALID_JSON"),
    Poison("a chunked body cut off mid-chunk", request("/echo", "text/plain"),
           b"400\r\n" + b"d" * 100, 400, "INVALID_BODY", "could not be read to its end",
           half_close=True),
    Poison("a broken chunk size", request("/echo", "text/plain"), b"zz\r\nabc\r\n0\r\n\r\n", 400),
    Poison("text that is not UTF-8", *sized("/echo", b"caf\xe9 \xff\xfe", "text/plain"), 400,
           "INVALID_BODY", "not UTF-8 text"),
    Poison("JSON that is not UTF-8", *sized("/echo", b'{"a": "\xff"}'), 400, "INVALID_JSON"),
    Poison("a form under a JSON content type", *sized("/echo", b"a=1&b=2"), 400, "INVALID_JSON"),
    Poison("text where the schema wants an object", *sized("/users", b"Ada", "text/plain"), 400,
           "INVALID_BODY", "at $, type"),
    Poison("JSON breaking the request_schema", *sized("/users", b'{"name": ""}'), 400,
           "INVALID_BODY", "at $.name, minLength"),
    Poison("a deep body to a validated route", *sized("/users", DEEP), 400, "INVALID_JSON"),
]


calls = recorded_calls


def test_poison_over_http_gets_a_clear_4xx_and_never_reaches_the_function(cluster):
    cluster.engine()
    cluster.worker("tests.apps.http_poison")
    web = start_web(cluster, III_HTTP_BODY_LIMIT=str(LIMIT))
    web.wait_status("/ping", 200)

    def normal_traffic() -> list[int]:  # keeps going while the poison flows
        return [web.get("/ping").status for _ in range(40)]
    traffic = in_thread(normal_traffic)

    answers: dict[str, RawReply] = {}
    for poison in POISONS:
        reply = send(web.port, poison.head, poison.body, half_close=poison.half_close)
        answers[poison.name] = reply
        assert reply.status == poison.status, (poison.name, reply.status, reply.body)
        if poison.code is not None:
            error = reply.error
            assert error["code"] == poison.code, (poison.name, error)
            assert poison.said in error["message"], (poison.name, error)
    assert calls(cluster) == []  # not one poison reached a function, cut or whole

    assert traffic.result(timeout=60) == [200] * 40
    good = json.dumps({"n": [1, 2, 3]})
    ok = send(web.port, *sized("/echo", good.encode()))
    assert ok.status == 200 and ok.json() == {"type": "dict", "length": len(good)}
    whole = send(web.port, request("/echo", "text/plain"), chunked(b"e" * LIMIT, 1000))
    assert whole.status == 200 and whole.json() == {"type": "str", "length": LIMIT}
    assert [c["body"] for c in calls(cluster)] == [{"n": [1, 2, 3]}, "e" * LIMIT]
    assert web.proc.popen.poll() is None
    assert "Traceback" not in web.proc.output()  # every poison was answered, none failed
