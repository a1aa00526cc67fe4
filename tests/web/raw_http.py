"""HTTP requests written byte by byte, for what ``http.client`` will not send: chunked
bodies of any size, a ``Content-Length`` that lies, a body cut off by closing the socket."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class RawReply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` of iii's envelope."""
        body = self.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
        error: dict[str, Any] = body["error"]
        return error


def send(port: int, head: str, body: bytes = b"", *, half_close: bool = False,
         timeout: float = 15) -> RawReply:
    """Send ``head`` (request line and headers, no blank line) and ``body`` as they are, and
    read the first response. ``half_close`` shuts the sending side after the body: the
    server sees the end of the stream there. The body is written from another thread, as
    curl does: a server may answer (413) and stop reading long before the body ends."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").rstrip("\r\n").encode() + b"\r\n\r\n")

        def write() -> None:
            try:
                sock.sendall(body)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server answered and closed before taking it all

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        response = http.client.HTTPResponse(sock)
        response.begin()
        reply = RawReply(response.status, response.read())
        writer.join(timeout)
        return reply


def chunked(body: bytes, chunk_size: int = 1000) -> bytes:
    """``body`` in HTTP/1.1 chunked encoding, with the last (empty) chunk."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + chunk_size]), body[i:i + chunk_size])
                   for i in range(0, len(body), chunk_size))
    return out + b"0\r\n\r\n"


def post_chunked(port: int, path: str, body: bytes, content_type: str = "application/json",
                 method: str = "POST") -> RawReply:
    head = (f"{method} {path} HTTP/1.1\nHost: t\nContent-Type: {content_type}\n"
            "Transfer-Encoding: chunked\nConnection: close")
    return send(port, head, chunked(body))
