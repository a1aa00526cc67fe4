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
MAX_BODY_CHARS = 65_536


class DeadLetters:
    """Writes refused messages to ``NS:deadletter`` (newest first, capped)."""

    def __init__(self, store: Any, keys: Keys, publisher: Publisher, worker_id: str) -> None:
        self.store = store
        self.keys = keys
        self.publisher = publisher
        self.worker_id = worker_id

    def refuse(self, message: Any, reason: str, *, code: str = InvocationFailed.code) -> None:
        """Set a Kombu message aside, tell its caller (if one waits) with an error of
        ``code``, ack it; never run it."""
        props = message.properties if isinstance(message.properties, dict) else {}
        self._store({
            "reason": reason, "content_type": message.content_type, **_body(message.body),
            "headers": message.headers if isinstance(message.headers, dict) else {},
            "queue": (message.delivery_info or {}).get("routing_key"),
            "worker_id": self.worker_id, "at": now_ms(),
        })
        reply_to, correlation_id = props.get("reply_to"), props.get("correlation_id")
        if isinstance(reply_to, str) and isinstance(correlation_id, str) \
                and reply_to and correlation_id:
            error = IIIError(f"message refused: {reason}", code=code,
                             invocation_id=correlation_id)
            try:
                self.publisher.publish(reply_body(correlation_id, error=error),
                                       routing_key=reply_to, correlation_id=correlation_id)
            except IIIError:
                pass
        message.ack()

    def undecodable(self, queue: str, raw: bytes, exc: Exception) -> None:
        """An item on a queue that is not a Kombu message at all (the transport popped it)."""
        self._store({"reason": f"not a Kombu message: {type(exc).__name__}: {exc}",
                     "content_type": None, **_body(raw), "queue": queue,
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


def _body(body: bytes | str) -> dict[str, Any]:
    """The body fields of a dead letter: the body itself, cut to :data:`MAX_BODY_CHARS`
    (with its full length) when longer — a letter is evidence, not a copy of a huge one."""
    text, encoding = _text(body)
    if len(text) <= MAX_BODY_CHARS:
        return {"body": text, "body_encoding": encoding}
    return {"body": text[:MAX_BODY_CHARS], "body_encoding": encoding,
            "body_truncated": True, "body_length": len(body)}


def _text(body: bytes | str) -> tuple[str, str]:
    """A body as stored in a dead letter: UTF-8 text, or base64 when it is not."""
    if isinstance(body, str):
        return body, "utf-8"
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), "base64"
