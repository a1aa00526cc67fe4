"""The engine's queue duties: settings, retries coming due, jobs of dead workers, and
the built-in functions for topics and dead letters (iii-reference §3 Queues).

Moving due retries and returning dead workers' jobs happen only in the engine that
holds the sweeper lock; the built-in functions are served by every engine.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ...errors import (
    InvocationStopped,
    PayloadError,
)
from ...message import Invocation, now_ms
from ...queues.amqp import AmqpJobs
from ...queues.config import QueueConfig, topic_queue_name
from ...queues.store import JobStore, Outcome, Settle, failure_outcome, parse_job
from ..base import Builtin, required, topic_and_data
from .topics import SUBSCRIBER, subscriber_queue, with_orphans

if TYPE_CHECKING:
    from ..hosts import EngineHost
    from . import QueueModule

log = logging.getLogger("iii.engine")

PROMOTE_INTERVAL_S = 0.05


class QueueDuties:
    """Queue settings, retries and dead letters for one engine."""

    def __init__(self, engine: EngineHost, module: QueueModule) -> None:
        self.engine = engine
        self.registry = engine.registry
        self.jobs = JobStore(self.registry.r, engine.settings.namespace,
                             AmqpJobs(engine.settings) if engine.settings.uses_amqp else None)
        self._missing: dict[str, float] = {}  # job holder -> when it was first seen gone
        self.idempotency_ttl_s = int(module.config.get("idempotency_ttl_s", 86_400))
        self.named: dict[str, QueueConfig] = module.queues()

    def publish_settings(self) -> None:
        """Write the settings file's queues to ``NS:queues`` for callers and workers."""
        self.jobs.publish_configs(self.named.values(), replace_named=True)

    def register_subscribers(self, triggers: list[dict[str, Any]]) -> None:
        """Record the queue of each ``durable:subscriber`` trigger being registered."""
        configs = [subscriber_queue(t["config"], t["function_id"]) for t in triggers]
        if configs:
            self.jobs.publish_configs(configs)

    # -- elected duties -------------------------------------------------------------

    def promote_due(self) -> float:
        """Move due retries onto their queues; returns seconds until the next is due."""
        moved, nxt = self.jobs.promote(sorted(self.jobs.configs()))
        if moved:
            log.debug("moved %d due retr%s back to their queues", moved, "y" if moved == 1 else "ies")
        if nxt is None:
            return PROMOTE_INTERVAL_S
        return max(0.0, min((nxt - now_ms()) / 1000, PROMOTE_INTERVAL_S))

    def return_orphans(self) -> None:
        """Jobs held by workers that are gone go back to their queues, one attempt used
        up (a job that kills its worker every time ends as a dead letter).

        A holder must stay gone for a heartbeat TTL first: a stall (a slow Redis command,
        a paused VM) lapses every lease at once, and live workers re-register within one
        heartbeat; taking their jobs then would run each a second time."""
        alive = {w["id"] for w in self.registry.workers() if w["alive"]}
        now = time.monotonic()
        gone = self.jobs.holders() - alive
        self._missing = {w: self._missing.get(w, now) for w in gone}
        for worker_id in gone:
            if now - self._missing[worker_id] < self.engine.settings.heartbeat_ttl_s:
                continue
            held = self.jobs.held(worker_id)
            outcomes: list[Outcome] = []
            configs = self.jobs.configs()
            for tag, (head, raw) in held.items():
                if head.get("amqp"):  # RabbitMQ redelivers it itself; free its cap slot
                    outcomes.append(Outcome.release(tag))
                    continue
                config = configs.get(head["q"]) or QueueConfig(head["q"])
                try:
                    job = parse_job(tag, head["q"], raw)
                except PayloadError:
                    job = None
                error = InvocationStopped(
                    f"worker {worker_id} stopped while running it",
                    function_id=job.invocation.function_id if job else head.get("f"),
                    invocation_id=job.invocation.invocation_id if job else None)
                outcomes.append(failure_outcome(config, tag, raw, job, error, head.get("at")))
            if outcomes:
                self.jobs.cycle(worker_id, outcomes, 0, [])
                log.warning("worker %s is gone holding %d job(s): %d retried, %d dead-lettered",
                            worker_id, len(outcomes), sum(o.kind is Settle.RETRY for o in outcomes),
                            sum(o.kind is Settle.DEAD for o in outcomes))
            self.jobs.forget_holder(worker_id)

    # -- built-in functions ---------------------------------------------------------

    def builtins(self) -> list[Builtin]:
        return [Builtin(function_id, handler, description) for function_id, handler, description in (
            ("iii::durable::publish", self.durable_publish,
             "A durable copy of {topic, data} for every subscribed function"),
            ("iii::queue::redrive", self.redrive, "Put every dead letter of {queue} back on it"),
            ("iii::queue::redrive_message", self.redrive_message,
             "Put one dead letter {queue, message_id} back on its queue"),
            ("iii::queue::discard_message", self.discard_message,
             "Delete one dead letter {queue, message_id}"),
            ("engine::queue::dlq_messages", self.dlq_messages,
             "Dead letters of {queue} or {topic}, newest first"),
            ("engine::queue::dlq_topics", self.dlq_topics, "Queues and topics that hold dead letters"),
            ("engine::queue::list_topics", self.list_topics, "Durable topics and their subscribers"),
            ("engine::queue::topic_stats", self.topic_stats, "Per-subscriber queue stats of {topic}"),
            ("engine::queue::list", self.list_queues,
             "Every queue with depth, in flight, delayed and dead counts"),
        )]

    def _subscribers(self, trigger_type: str, topic: str, *, active_only: bool) -> list[dict[str, Any]]:
        return [t for t in self.registry.triggers()
                if t["type"] == trigger_type and t["config"].get("topic") == topic
                and (t["active"] or not active_only)]

    def durable_publish(self, payload: Any) -> dict[str, Any]:
        topic, data = topic_and_data(payload)
        key = payload.get("idempotency_key")
        subscribers = {t["function_id"]: t for t in
                       self._subscribers(SUBSCRIBER, topic, active_only=False)}
        inv = Invocation("", data)
        if not subscribers:
            return {"messageReceiptId": inv.invocation_id, "subscribers": []}
        configs = self.jobs.configs()
        jobs: list[tuple[QueueConfig, str, Invocation, dict[str, Any]]] = []
        for fid, t in sorted(subscribers.items()):
            name = topic_queue_name(topic, fid)
            config = configs.get(name) or subscriber_queue(t["config"], fid)
            jobs.append((config, fid, Invocation(fid, data, inv.invocation_id), {}))
        stored, message_id = self.jobs.enqueue(
            jobs, message_id=inv.invocation_id, idempotency_key=key,
            idempotency_scope=f"topic:{topic}", ttl_s=self.idempotency_ttl_s)
        out = {"messageReceiptId": message_id, "subscribers": sorted(subscribers)}
        return out if stored else {**out, "duplicate": True}

    def redrive(self, payload: Any) -> dict[str, Any]:
        queue = required(payload, "queue")
        return {"queue": queue, "redriven": len(self.jobs.redrive(queue))}

    def redrive_message(self, payload: Any) -> dict[str, Any]:
        queue, message_id = required(payload, "queue"), required(payload, "message_id")
        if not self.jobs.redrive(queue, [message_id]):
            if self.jobs.dead_letter(queue, message_id) is not None:
                raise ValueError(f"dead letter {message_id!r} on queue {queue!r} cannot be "
                                 "redriven: its message is not a job (it was dead-lettered "
                                 "unread); discard it")
            raise LookupError(self.jobs.missing_letter(queue, message_id))
        return {"queue": queue, "message_id": message_id, "redriven": True}

    def discard_message(self, payload: Any) -> dict[str, Any]:
        queue, message_id = required(payload, "queue"), required(payload, "message_id")
        if not self.jobs.discard(queue, message_id):
            raise LookupError(self.jobs.missing_letter(queue, message_id))
        return {"queue": queue, "message_id": message_id, "discarded": True}

    def dlq_messages(self, payload: Any) -> dict[str, Any]:
        payload = payload or {}
        limit, offset = int(payload.get("limit", 50)), int(payload.get("offset", 0))
        if payload.get("topic"):
            queues = [q for q, c in self.jobs.configs().items() if c.topic == payload["topic"]]
        else:
            queues = [required(payload, "queue", "queue or topic")]
        messages, total = [], 0
        for q in sorted(queues):
            found, count = self.jobs.dead_letters(q, limit=offset + limit)
            messages += found
            total += count
        messages.sort(key=lambda m: m.get("failed_at") or 0, reverse=True)
        return {"messages": messages[offset:offset + limit], "total": total}

    def dlq_topics(self, _payload: Any = None) -> dict[str, Any]:
        out = []
        for stats in self.list_queues()["queues"]:
            if stats["dead"]:
                out.append({"queue": stats["queue"], "topic": stats.get("topic"),
                            "count": stats["dead"]})
        return {"topics": out}

    def list_topics(self, _payload: Any = None) -> dict[str, Any]:
        topics: dict[str, set[str]] = {}
        for t in self.registry.triggers():
            if t["type"] == SUBSCRIBER:
                topics.setdefault(t["config"]["topic"], set()).add(t["function_id"])
        return {"topics": [{"topic": name, "subscribers": sorted(fids)}
                           for name, fids in sorted(topics.items())]}

    def topic_stats(self, payload: Any) -> dict[str, Any]:
        topic = required(payload, "topic")
        prefix = topic_queue_name(topic, "")
        subs = [self.jobs.stats(name) | {"function_id": name[len(prefix):]}
                for name, c in sorted(self.jobs.configs().items()) if c.topic == topic]
        return {"topic": topic, "subscribers": subs}

    def list_queues(self, _payload: Any = None) -> dict[str, Any]:
        return {"queues": with_orphans(self.registry, self.jobs)}

