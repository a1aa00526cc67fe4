"""A gunicorn worker that reads each request whole before a thread serves it.

Gunicorn's ``gthread`` worker gives a connection a thread as soon as its first bytes
arrive, and the thread then blocks reading the rest: twenty clients that send their
headers and trickle a body hold twenty threads, and the sixteen a web process has are
gone. :class:`BufferingWorker` keeps gthread's event loop, thread pool, keep-alive and
graceful shutdown, but reads every request (head and body) in that event loop with
non-blocking reads, as nginx does in front of an app server. A thread gets the
connection only when the whole request is buffered, so it never waits on a client:
a slow client costs a socket and its buffered bytes, not a thread.

Limits, each a setting (see :class:`RequestLimits`): the head must arrive within
``III_HTTP_HEADER_TIMEOUT_S`` and be at most :data:`MAX_HEAD_BYTES`; the body within
``III_HTTP_BODY_TIMEOUT_S`` of the head. A client too slow gets ``408`` and is closed; a
head too large gets ``431``. A body over ``III_HTTP_BODY_LIMIT`` is not buffered: the
request goes to a thread as soon as that is known (from ``Content-Length``, or once a
chunked body has sent more than the limit) and the app answers 413 from what it has; the
connection is then closed rather than drained. Connections per process are capped by
gunicorn's ``worker_connections`` (1000): past that, new ones wait in the listen backlog.

Once a request reaches a thread the connection is the thread's until the response is
written, which is what a WebSocket upgrade (a GET without a body) needs. TLS and HTTP/2
connections, which iii-broker does not configure, are served by gthread unchanged.
"""

from __future__ import annotations

import re
import selectors
import socket
import time
from dataclasses import dataclass
from functools import partial

from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

MAX_HEAD_BYTES = 65_536
"""Largest request line plus headers, in bytes (nginx allows 32 KiB by default)."""
RECV_BYTES = 65_536
SWEEP_INTERVAL_S = 0.25
"""How often deadlines are checked: they hold to within this plus the poll timeout (1 s)."""

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([^\r]*)", re.IGNORECASE)
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding:[ \t]*([^\r]*)", re.IGNORECASE)
_EXPECT_CONTINUE = re.compile(rb"\r\nexpect:[ \t]*100-continue[ \t]*\r", re.IGNORECASE)
_CHUNK_SIZE_LINE_BYTES = 4096


@dataclass(frozen=True)
class RequestLimits:
    """How long and how much the web process waits for a request before serving it."""

    header_timeout_s: float = 10.0
    """The request line and headers must arrive within this many seconds (then 408)."""
    body_timeout_s: float = 30.0
    """The body must arrive within this many seconds of the headers (then 408)."""
    body_limit: int = 1_048_576
    """Largest body buffered, in bytes; a larger one goes to the app at once (which says 413)."""


class _Arrival:
    """A connection whose next request is still arriving: its bytes and where it stands."""

    __slots__ = ("conn", "buf", "deadline", "head_end", "body_end", "chunk_pos",
                 "chunk_data", "chunked", "oversized")

    def __init__(self, conn: TConn, buf: bytes, deadline: float) -> None:
        self.conn = conn
        self.buf = bytearray(buf)
        self.deadline = deadline
        self.head_end = -1       # index just past the blank line ending the head, once seen
        self.body_end = -1       # index just past the body, when its length is known
        self.chunked = False
        self.chunk_pos = 0       # where the next chunk-size line starts (chunked bodies)
        self.chunk_data = 0      # body bytes of the complete chunks so far
        self.oversized = False   # the body is over the limit: serve now, close afterwards


class _Framing(Exception):
    """The request is complete as far as buffering goes (or malformed: gunicorn says 400)."""


class BufferingWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn has no type hints
    """gthread, with each request read whole in the event loop before a thread serves it.

    The application object must have a ``request_limits`` attribute
    (:class:`RequestLimits`), as :class:`iii_broker.web.server.WebServer` does.
    """

    def init_process(self) -> None:
        self.limits: RequestLimits = self.app.request_limits
        self.arriving: dict[TConn, _Arrival] = {}
        self.next_sweep = 0.0
        super().init_process()

    # -- every path that would hand a connection to a thread comes through here ----------

    def enqueue_req(self, conn: TConn) -> None:
        """Buffer the connection's next request; a thread gets it once it is whole."""
        if self.cfg.is_ssl or conn.is_http2 or negotiation.prior_knowledge_allowed(
                self.cfg, conn.client):
            super().enqueue_req(conn)
            return
        buffered = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        arrival = _Arrival(conn, buffered, time.monotonic() + self.limits.header_timeout_s)
        self.arriving[conn] = arrival
        if buffered and self._complete(arrival):
            self._dispatch(arrival)
            return
        self.poller.register(conn.sock, selectors.EVENT_READ,
                             partial(self._on_readable, arrival))

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection has a new request: buffer it (one poller call, not two)."""
        self.keepalived_conns.remove(conn)
        arrival = _Arrival(conn, b"", time.monotonic() + self.limits.header_timeout_s)
        self.arriving[conn] = arrival
        self.poller.modify(client, selectors.EVENT_READ, partial(self._on_readable, arrival))
        self._on_readable(arrival, client)

    def _on_readable(self, arrival: _Arrival, client: socket.socket) -> None:
        try:
            data = client.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client is done sending
            if arrival.head_end >= 0:
                # A whole head and a body cut short (a half-closed socket): the app reads
                # what came and says what is wrong with it (400), as an unbuffered server would.
                self.poller.unregister(client)
                self._dispatch(arrival)
            else:
                self._drop(arrival)
            return
        arrival.buf += data
        if self._complete(arrival):
            self.poller.unregister(client)
            self._dispatch(arrival)
        elif arrival.head_end < 0 and len(arrival.buf) > MAX_HEAD_BYTES:
            self._drop(arrival, b"431 Request Header Fields Too Large")

    def _dispatch(self, arrival: _Arrival) -> None:
        """Hand the buffered request to a thread: the parser reads it from memory."""
        del self.arriving[arrival.conn]
        conn = arrival.conn
        conn.init()
        conn.parser.unreader.unread(bytes(arrival.buf))
        conn.data_ready = True  # gthread's own wait for a first byte is not needed
        conn.close_after = arrival.oversized
        super().enqueue_req(conn)

    def _keepalive_after(self, conn: TConn, keepalive: bool) -> bool:
        # An over-limit body was answered without being read: close rather than drain
        # what a client may still be trickling, with a thread waiting on it.
        if getattr(conn, "close_after", False):
            return False
        return bool(super()._keepalive_after(conn, keepalive))

    # -- framing: is the request whole? ---------------------------------------------------

    def _complete(self, arrival: _Arrival) -> bool:
        """Whether the buffered bytes hold a whole request (or all that should be buffered)."""
        try:
            if arrival.head_end < 0:
                self._read_head(arrival)
            if arrival.chunked:
                self._read_chunks(arrival)
            return arrival.body_end >= 0 and len(arrival.buf) >= arrival.body_end
        except _Framing:
            return True

    def _read_head(self, arrival: _Arrival) -> None:
        end = arrival.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        arrival.head_end = end + 4
        head = bytes(arrival.buf[:end + 2])
        arrival.deadline = time.monotonic() + self.limits.body_timeout_s
        encodings = _TRANSFER_ENCODING.findall(head)
        lengths = _CONTENT_LENGTH.findall(head)
        if encodings:
            if len(encodings) > 1 or not encodings[0].lower().rstrip().endswith(b"chunked"):
                raise _Framing  # gunicorn refuses these itself
            arrival.chunked = True
            arrival.chunk_pos = arrival.head_end
        elif not lengths:
            arrival.body_end = arrival.head_end
            return
        elif len(set(lengths)) > 1 or not lengths[0].strip().isdigit():
            raise _Framing  # gunicorn answers 400
        else:
            length = int(lengths[0])
            if length > self.limits.body_limit:
                arrival.oversized = True
                raise _Framing
            arrival.body_end = arrival.head_end + length
        if _EXPECT_CONTINUE.search(head) and len(arrival.buf) == arrival.head_end:
            # The client waits for this before it sends the body. gunicorn sends one
            # too when the request is served; HTTP/1.1 clients accept any number of 1xx.
            self._send(arrival.conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")

    def _read_chunks(self, arrival: _Arrival) -> None:
        buf, pos = arrival.buf, arrival.chunk_pos
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                if len(buf) - pos > _CHUNK_SIZE_LINE_BYTES:
                    raise _Framing
                break
            size_text = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Framing from None
            if size == 0:  # the last chunk, then trailer lines up to an empty one
                end = buf.find(b"\r\n\r\n", line_end)
                if end >= 0:
                    arrival.body_end = end + 4
                break
            data_end = line_end + 2 + size + 2
            if arrival.chunk_data + min(size, len(buf) - line_end - 2) > self.limits.body_limit:
                arrival.oversized = True  # more than the limit has arrived: the app says 413
                raise _Framing
            if len(buf) < data_end:
                break
            arrival.chunk_data += size
            pos = data_end
        arrival.chunk_pos = pos

    # -- deadlines ------------------------------------------------------------------------

    def murder_pending(self) -> None:
        """gthread's sweep, plus the deadlines of requests still arriving (every 0.25 s)."""
        super().murder_pending()
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_INTERVAL_S
        for arrival in [a for a in self.arriving.values() if a.deadline <= now
                        or (not self.alive and not a.buf)]:
            # A client that sent nothing is just closed, like an idle keep-alive one.
            self._drop(arrival, b"408 Request Timeout" if arrival.buf else None)

    def _drop(self, arrival: _Arrival, status: bytes | None = None) -> None:
        sock = arrival.conn.sock
        if arrival.conn in self.arriving:
            del self.arriving[arrival.conn]
            try:
                self.poller.unregister(sock)
            except (KeyError, ValueError, OSError):
                pass
        if status is not None:
            self._send(sock, b"HTTP/1.1 " + status + b"\r\nConnection: close\r\n"
                       b"Content-Length: 0\r\n\r\n")
        self.nr_conns -= 1
        arrival.conn.close()

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> None:
        """Best effort, never blocking: a client that does not read gets what fits."""
        try:
            sock.send(data)
        except OSError:
            pass

