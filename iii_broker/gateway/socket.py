"""The gateway's WebSocket connection: the ``websockets`` library's threaded server
connection, with the answers to forwarded calls taken where they are read.

A frame normally goes from the library's reading thread to the thread iterating the
socket (a hand-over through a condition); an ``invocationresult`` — the one frame a
waiting call needs — is acted on by the reading thread itself, which releases the
waiting handler thread directly: one thread hand-over less per call. Anything else, and
an answer the fast path cannot place, takes the usual way, in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.sync.server import ServerConnection

RESULT_MARK = b'"invocationresult"'
"""Found in every ``invocationresult`` frame (where ``type`` is, varies: the Node SDK puts
it first, the Python SDK last); the decoded frame's ``type`` decides."""


class GatewaySocket(ServerConnection):
    on_result: Callable[[dict[str, Any]], bool] | None = None
    """Set by the connection: takes a decoded ``invocationresult``; False when no call
    waits for it (the frame then goes the usual way)."""

    def process_event(self, event: Any) -> None:
        on_result = self.on_result
        if (on_result is not None and isinstance(event, Frame) and event.fin
                and event.opcode is Opcode.TEXT):
            data = bytes(event.data)
            if RESULT_MARK in data:
                try:
                    frame = json.loads(data)
                except (ValueError, RecursionError):
                    frame = None
                if (isinstance(frame, dict) and frame.get("type") == "invocationresult"
                        and isinstance(frame.get("invocation_id"), str) and on_result(frame)):
                    return
        super().process_event(event)
