"""One writer per socket: every frame leaves whole, under one lock.

simple-websocket (under flask-sock) writes to a socket from two places — its reader thread
(pongs, pings, the close frames of a ping timeout or an oversized message) and whoever calls
``send``/``close`` — each as ``self.sock.send(self.ws.send(event))``. That is two problems:

- ``socket.send`` may write part of a frame and return (simple-websocket #45: large
  messages truncated), and a second writer's frame can land in the middle of it;
- wsproto's ``WSConnection`` is not thread-safe, and with permessage-deflate each frame's
  encoding depends on the frames encoded before it, so frames must go out in the order they
  were encoded.

:func:`guard` swaps both attributes of a fresh ``simple_websocket.Server`` before its reader
thread starts: ``ws.ws`` becomes a :class:`GuardedProtocol` whose ``send`` encodes *and*
writes the frame with ``sendall`` under the socket's lock (returning ``b""``), and ``ws.sock``
a :class:`GuardedSocket` whose own ``send`` is then a no-op for that empty string (and a
locked ``sendall`` for anything else). Every path in simple-websocket's source goes through
these two (checked against simple-websocket 1.1).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

LINGER_S = 2.0
"""After the server's close frame, how long unread client bytes are drained before the
socket is closed: closing with unread data sends a TCP reset, and a reset can overtake the
close frame (the client would see 1006 instead of 1009)."""


class GuardedSocket:
    """The socket as simple-websocket sees it: writes whole and locked, a lingering close."""

    def __init__(self, sock: Any, lock: threading.RLock) -> None:
        self._sock = sock
        self._lock = lock

    def send(self, data: bytes) -> int:
        if data:
            with self._lock:
                self._sock.sendall(data)
        return len(data)

    sendall = send

    def try_send(self, data: bytes) -> int:
        """Write what the kernel takes of ``data`` now, without waiting (0 when the socket
        is busy with another writer, full, or not a gevent socket); returns the bytes sent."""
        raw = getattr(self._sock, "_sock", None)  # gevent's OS-level socket: non-blocking
        if raw is None or raw.gettimeout() != 0.0 or not self._lock.acquire(blocking=False):
            return 0
        try:
            sent: int = raw.send(data)
            return sent
        except OSError:  # full (EAGAIN), or gone: the writer finds out and closes
            return 0
        finally:
            self._lock.release()

    def recv(self, size: int) -> bytes:
        data: bytes = self._sock.recv(size)
        return data

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def abort(self) -> None:
        """Cut the connection now (a writer stuck on a client that never reads gets an
        error, and so does the reader)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Send FIN after what was written, read what the client still sends (up to
        :data:`LINGER_S`), then close."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_S
            self._sock.settimeout(LINGER_S)
            while time.monotonic() < deadline and self._sock.recv(65536):
                self._sock.settimeout(max(deadline - time.monotonic(), 0.01))
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass


class GuardedProtocol:
    """A wsproto connection whose ``send`` writes the encoded frame itself, under the lock."""

    def __init__(self, conn: Any, sock: Any, lock: threading.RLock) -> None:
        self._conn = conn
        self._sock = sock
        self._lock = lock

    def send(self, event: Any) -> bytes:
        with self._lock:
            data = self._conn.send(event)
            if data:
                self._sock.sendall(data)
        return b""

    def receive_data(self, data: bytes | None) -> None:
        with self._lock:
            self._conn.receive_data(data)

    def events(self) -> list[Any]:
        with self._lock:
            return list(self._conn.events())

    @property
    def state(self) -> Any:
        return self._conn.state


def guard(ws: Any) -> GuardedSocket:
    """Make every write of ``ws`` (a ``simple_websocket.Server`` whose reader has not started)
    a whole frame under one lock; returns its socket (for :meth:`GuardedSocket.abort`)."""
    lock = threading.RLock()
    raw = ws.sock
    ws.ws = GuardedProtocol(ws.ws, raw, lock)
    ws.sock = GuardedSocket(raw, lock)
    return ws.sock


def reader_thread(target: Any) -> threading.Thread:
    """simple-websocket's ``thread_class``: called with the server's bound ``_thread``
    method just before that reader starts, which is the one moment :func:`guard` can run
    with nothing else touching the socket yet."""
    guard(target.__self__)
    return threading.Thread(target=target, daemon=True)


class Frame(bytes):
    """A whole text frame as a server sends it (unmasked, no extension), encoded once and
    written as it is to every plain socket that should get the message."""

    @classmethod
    def text(cls, text: str) -> Frame:
        payload = text.encode("utf-8")
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x81, 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 127, n)
        return cls(header + payload)
