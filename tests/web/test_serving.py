"""The web process reads each request whole before a thread serves it
(``iii_broker.web.buffering``): whatever way its bytes arrive, the request is the same."""

from __future__ import annotations

import json
import socket
import time

from tests.web.conftest import Web


def exchange(web: Web, *pieces: bytes, pause_s: float = 0.05) -> bytes:
    """Send ``pieces`` on one connection with a pause between them; read until it closes."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(pause_s)  # the split arrival is what is under test
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def bodies(answer: bytes) -> list[object]:
    """The JSON bodies of the (Content-Length framed) responses in ``answer``."""
    out = []
    for response in answer.split(b"HTTP/1.1 ")[1:]:
        head, _, body = response.partition(b"\r\n\r\n")
        if not head.startswith(b"100 "):
            out.append(json.loads(body))
    return out


def test_a_request_arriving_in_pieces_is_served_whole(web):
    answer = exchange(web, b"POST /items HTTP/1.1\r\nHo", b"st: x\r\nContent-Type: text/plain\r\n",
                      b"Content-Length: 11\r\nConnection: close\r\n\r\nhello", b" world")
    assert answer.startswith(b"HTTP/1.1 201 "), answer
    assert bodies(answer) == [{"created": "hello world"}]


def test_a_chunked_body_arriving_in_pieces_is_served_whole(web):
    answer = exchange(web, b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                      b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhel",
                      b"lo\r\n6;ext=1\r\n world\r\n0\r\n", b"\r\n")
    assert answer.startswith(b"HTTP/1.1 201 "), answer
    assert bodies(answer) == [{"created": "hello world"}]


def test_pipelined_requests_are_all_answered_in_order(web):
    request = b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\n"
    answer = exchange(web, request + b"1" + request + b"2" + request.replace(
        b"Host: x", b"Host: x\r\nConnection: close") + b"3")
    assert bodies(answer) == [{"created": "1"}, {"created": "2"}, {"created": "3"}]


def test_a_client_that_expects_100_continue_gets_it_before_sending_the_body(web):
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"ok")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert b"HTTP/1.1 201 " in answer and bodies(answer) == [{"created": "ok"}]


def test_a_body_over_the_limit_is_refused_at_once_and_the_connection_closed(web):
    # 1 KiB limit (tests/web/conftest.py): the body is never sent, the answer comes anyway
    started = time.monotonic()
    answer = exchange(web, b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 1000000\r\n\r\nonly a little")
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert time.monotonic() - started < 3, "the server waited for the body it refused"


def test_a_head_larger_than_64_kib_is_refused_with_431(web):
    # just over the limit, so the server has read everything when it answers (no RST)
    answer = exchange(web, b"GET /plain HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65_600)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
