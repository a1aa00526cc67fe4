"""Named queue settings: what ``[modules.queue.queues.NAME]`` tables hold.

A queue's settings are iii's (iii-reference §3 Queues): ``max_retries`` (default 3:
retries after the first attempt), ``concurrency`` (default 10, a cap over the whole
cluster), ``type`` (``standard`` or ``fifo``), ``message_group_field`` (fifo only) and
``backoff_ms`` (default 1000: retry n waits ``backoff_ms * 2**(n-1)``). The ``default``
queue always exists. A ``durable:subscriber`` trigger gets a queue of its own,
``durable:<topic>:<function_id>``, configured by the trigger's ``queue_config``.

The engine writes every queue's settings to ``NS:queues`` (name -> JSON), where
callers and workers on any host read them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError, EnqueueError
from ..schema import Field, check_fields

DEFAULT_QUEUE = "default"
DEFAULT_IDEMPOTENCY_TTL_S = 24 * 3600
_NAME = re.compile(r"[A-Za-z0-9_\-.]{1,100}")
TOPIC_QUEUE_PREFIX = "durable:"

QUEUE_CONFIG = {
    "max_retries": Field(int, check=lambda v: "must be >= 0" if v < 0 else None),
    "concurrency": Field(int, check=lambda v: "must be >= 1" if v < 1 else None),
    "type": Field(str, choices=("standard", "fifo")),
    "message_group_field": Field(str),
    "backoff_ms": Field(int, check=lambda v: "must be >= 0" if v < 0 else None),
}
"""The keys of a queue's settings table (and of a durable subscriber's ``queue_config``)."""


@dataclass(frozen=True)
class QueueConfig:
    """One named queue's settings."""

    name: str
    max_retries: int = 3
    concurrency: int = 10
    type: str = "standard"
    message_group_field: str | None = None
    backoff_ms: int = 1000
    idempotency_ttl_s: int = DEFAULT_IDEMPOTENCY_TTL_S
    topic: str | None = None
    """Set for a durable topic subscriber's queue."""

    @property
    def fifo(self) -> bool:
        return self.type == "fifo"

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def backoff_for(self, attempt: int) -> int:
        """Milliseconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
        return self.backoff_ms * 2 ** (max(attempt, 1) - 1)

    def group_of(self, payload: Any) -> str | None:
        """The FIFO group of a payload (None for standard queues); raises :class:`EnqueueError`."""
        if not self.fifo:
            return None
        field = self.message_group_field or ""
        value = payload.get(field) if isinstance(payload, dict) else None
        if value is None or isinstance(value, (dict, list)):
            what = "missing or null" if value is None else f"a {type(value).__name__}"
            raise EnqueueError(
                f"queue {self.name!r} is fifo: the payload's {field!r} field (its message group) "
                f"is {what}; it must be a string, number or boolean")
        # Every value by its JSON, so 1 and "1" (or true and "true") are different groups,
        # and "" is a group too (an empty group would mean "not FIFO" in the store).
        return json.dumps(value, separators=(",", ":"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> QueueConfig:
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_table(cls, name: str, table: dict[str, Any], *, where: str,
                   idempotency_ttl_s: int = DEFAULT_IDEMPOTENCY_TTL_S,
                   topic: str | None = None) -> QueueConfig:
        """Check one queue's settings; raises :class:`ConfigError` naming ``where``."""
        values = check_fields(where, table, QUEUE_CONFIG, error=ConfigError)
        config = cls(name=name, idempotency_ttl_s=idempotency_ttl_s, topic=topic,
                     **{k: v for k, v in values.items() if v is not None})
        if config.fifo and not config.message_group_field:
            raise ConfigError(f"{where}: a fifo queue needs message_group_field "
                              "(the payload field whose value orders its jobs)")
        if not config.fifo and config.message_group_field:
            raise ConfigError(f"{where}: message_group_field only applies to type = \"fifo\"")
        return config


def check_queue_name(name: Any, where: str = "queue name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where} {name!r} is not valid: use 1-100 letters, digits, '_', '-' or '.'")
    return name


def topic_queue_name(topic: str, function_id: str) -> str:
    """The queue of one durable subscriber: every subscribed function has its own copy."""
    return f"{TOPIC_QUEUE_PREFIX}{topic}:{function_id}"


def parse_queues(tables: Any, *, idempotency_ttl_s: int = DEFAULT_IDEMPOTENCY_TTL_S
                 ) -> dict[str, QueueConfig]:
    """The named queues of ``[modules.queue.queues.*]``, with ``default`` always present."""
    if tables is None:
        tables = {}
    if not isinstance(tables, dict):
        raise ConfigError("[modules.queue] queues must be a table of queue tables")
    out = {}
    for name, table in tables.items():
        where = f"[modules.queue.queues.{name}]"
        check_queue_name(name, where=f"{where}: queue name")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        out[name] = QueueConfig.from_table(name, table, where=where,
                                           idempotency_ttl_s=idempotency_ttl_s)
    out.setdefault(DEFAULT_QUEUE, QueueConfig(DEFAULT_QUEUE, idempotency_ttl_s=idempotency_ttl_s))
    return out
