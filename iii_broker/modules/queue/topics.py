"""Durable topics: each ``durable:subscriber`` trigger gives its function a queue of its own."""

from __future__ import annotations

from typing import Any

from ...queues.config import QueueConfig, topic_queue_name
from ...queues.store import JobStore
from ...registry import Registry

SUBSCRIBER = "durable:subscriber"
"""The trigger type of a durable topic subscription."""


def subscriber_queue(config: dict[str, Any], function_id: str) -> QueueConfig:
    """The queue settings of a ``durable:subscriber`` trigger (its ``queue_config``)."""
    name = topic_queue_name(config["topic"], function_id)
    return QueueConfig.from_table(name, config.get("queue_config") or {},
                                  where=f"queue_config of {function_id!r}", topic=config["topic"])


def with_orphans(registry: Registry, jobs: JobStore) -> list[dict[str, Any]]:
    """:meth:`JobStore.overview`, each queue marked ``orphaned`` when it is a topic
    subscriber's queue whose ``durable:subscriber`` trigger is gone: it gets no new
    publishes, and what it holds waits for a worker declaring it again, or a purge."""
    subscribed = {topic_queue_name(t["config"]["topic"], t["function_id"])
                  for t in registry.triggers() if t["type"] == SUBSCRIBER}
    return [q | {"orphaned": q.get("topic") is not None and q["queue"] not in subscribed}
            for q in jobs.overview()]
