"""Dead letters: messages a worker refuses to run, kept in Redis with the reason.

Nothing here decodes a body beyond reading its bytes: a pickle is stored as base64,
never unpickled.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from ..errors import IIIError, InvocationFailed
from ..message import now_ms, reply_body
from ..store import Keys
from ..transport import Publisher

log = logging.getLogger("iii.worker")

MAX_DEAD_LETTERS = 10_000


class DeadLetters:
    """Writes refused messages to ``NS:deadletter`` (newest first, capped)."""

    def __init__(self, store: Any, keys: Keys, publisher: Publisher, worker_id: str) -> None:
        self.store = store
        self.keys = keys
        self.publisher = publisher
        self.worker_id = worker_id

    def refuse(self, message: Any, reason: str) -> None:
        """Set a Kombu message aside, tell its caller (if one waits), ack it; never run it."""
        props = message.properties or {}
        text, encoding = _text(message.body)
        self._store({
            "reason": reason, "content_type": message.content_type, "body": text,
            "body_encoding": encoding, "headers": message.headers or {},
            "queue": (message.delivery_info or {}).get("routing_key"),
            "worker_id": self.worker_id, "at": now_ms(),
        })
        reply_to, correlation_id = props.get("reply_to"), props.get("correlation_id")
        if reply_to and correlation_id:
            error = InvocationFailed(f"message refused: {reason}", invocation_id=correlation_id)
            try:
                self.publisher.publish(reply_body(correlation_id, error=error),
                                       routing_key=reply_to, correlation_id=correlation_id)
            except IIIError:
                pass
        message.ack()

    def undecodable(self, queue: str, raw: bytes, exc: Exception) -> None:
        """An item on a queue that is not a Kombu message at all (the transport popped it)."""
        text, encoding = _text(raw)
        self._store({"reason": f"not a Kombu message: {exc}", "content_type": None,
                     "body": text, "body_encoding": encoding, "queue": queue,
                     "worker_id": self.worker_id, "at": now_ms()})

    def _store(self, record: dict[str, Any]) -> None:
        log.warning("set aside a message as a dead letter: %s", record["reason"])
        try:
            pipe = self.store.pipeline(transaction=False)
            pipe.lpush(self.keys.dead_letters, json.dumps(record))
            pipe.ltrim(self.keys.dead_letters, 0, MAX_DEAD_LETTERS - 1)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the log line above keeps the evidence
            log.error("could not store the dead letter: %s", exc)


def _text(body: bytes | str) -> tuple[str, str]:
    """A body as stored in a dead letter: UTF-8 text, or base64 when it is not."""
    if isinstance(body, str):
        return body, "utf-8"
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), "base64"
