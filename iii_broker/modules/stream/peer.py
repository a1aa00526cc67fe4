"""One open socket: its subscriptions, its bounded send queue, and the one thread that
writes to it.

Everything the server sends a client (syncs, live messages, errors) is put on the peer's
queue without waiting; its writer thread (a greenlet under gevent) takes messages off in
order and writes each whole (:mod:`.wire`). A client that reads too slowly fills its queue;
the next message drops it (close 1008) instead of waiting, so one slow client never holds
up the fan-out to the others. A dropped client whose writer is stuck on a full socket
buffer is cut off after :data:`DROP_GRACE_S`.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from .protocol import Subscription
from .wire import Frame, GuardedSocket

log = logging.getLogger("iii.stream")

DROP_GRACE_S = 2.0
"""How long a dropped client's close frame may take to be written before the connection is
cut."""
POLICY_VIOLATION = 1008
GOING_AWAY = 1001


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


_STOP = object()


@dataclass(eq=False)
class Peer:
    """A connected client. ``ws`` is its ``simple_websocket.Server``."""

    ws: Any
    sock: GuardedSocket
    addr: str
    send_queue: int
    context: Any = None
    """What the ``auth_function`` answered as ``context`` (None without one)."""
    subscriptions: dict[str, Subscription] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending = 0  # messages queued or being written (Queue.qsize would lock)
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, name=f"stream-writer {self.addr}",
                                        daemon=True)
        self._writer.start()

    @property
    def open(self) -> bool:
        return not self._closing

    def push(self, text: str | Frame) -> None:
        """Queue ``text`` (or a ready :class:`Frame`, for a plain socket) for the client,
        without waiting; drops the client when its queue is full."""
        if self._closing:
            return
        if self._pending >= self.send_queue:
            self.drop(POLICY_VIOLATION, f"too slow: {self._pending} messages waiting to be sent")
            return
        if self._pending == 0 and isinstance(text, Frame) and self.ws.connected:
            # Nothing queued or being written: try the socket now, without waiting. Most
            # fan-outs end here, with no queue, no writer wake-up and no greenlet switch.
            sent = self.sock.try_send(text)
            if sent == len(text):
                return
            text = Frame(text[sent:])  # the rest, first in line for the writer
        self._pending += 1
        self._queue.put_nowait(text)

    def drop(self, code: int, reason: str) -> None:
        """Close the client with ``code`` ahead of anything still queued; cut it off if the
        close frame cannot be written within :data:`DROP_GRACE_S`."""
        if self._closing:
            return
        log.warning("dropping stream client %s: %s (close %d)", self.addr, reason, code)
        self.close(code, reason)
        timer = threading.Timer(DROP_GRACE_S, self._cut_if_stuck)
        timer.daemon = True
        timer.start()

    def close(self, code: int, reason: str) -> None:
        """Send a close frame after the messages queued so far are written."""
        if self._closing:
            return
        self._closing = True
        while True:  # what is queued is not wanted any more
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put_nowait(_Close(code, reason))

    def stop(self, timeout_s: float = DROP_GRACE_S) -> None:
        """Stop the writer (the socket is done): wait for it up to ``timeout_s``, then cut
        the connection so that a writer stuck on it returns."""
        self._closing = True
        self._queue.put_nowait(_STOP)
        self._writer.join(timeout_s)
        if self._writer.is_alive():
            self.sock.abort()
            self._writer.join(timeout_s)

    def _cut_if_stuck(self) -> None:
        if self._writer.is_alive():
            self.sock.abort()  # the writer's sendall fails, and it wakes the view

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                if isinstance(item, _Close):
                    if self.ws.connected:
                        self.ws.close(reason=item.code, message=item.reason)
                    self.ws.event.set()  # wake the view: the socket is done
                    return
                if isinstance(item, Frame):
                    if not self.ws.connected:
                        raise ConnectionError("closed")
                    self.sock.send(item)  # whole, under the socket's lock
                else:
                    self.ws.send(item)
                self._pending -= 1  # after the write: push() writes itself only when idle
            except Exception:  # noqa: BLE001 - the client went away (ConnectionClosed, OSError)
                self._closing = True
                self.ws.connected = False  # the reader stops, the view's receive() raises
                self.ws.event.set()
                return
