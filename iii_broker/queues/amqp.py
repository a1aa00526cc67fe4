"""Standard queues on RabbitMQ, when ``III_BROKER_URL`` is ``amqp://``.

Jobs of a standard queue then live in RabbitMQ: a durable queue ``NS.fn.<F>.q.<Q>``
bound to the function's exchange with routing key ``q.<Q>``, persistent messages
published with confirms (``messageReceiptId`` comes back once RabbitMQ holds the
job), acked by the worker only after the job is settled in Redis. RabbitMQ redelivers
the jobs of a worker whose connection dropped. Everything else stays in the store
Redis: the cap (``running``), retries waiting for their backoff (the elected engine
publishes them back when due), dead letters, counters and idempotency keys. FIFO
queues keep their jobs in Redis whatever the broker: per-group ordering needs state
RabbitMQ does not keep.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from kombu import Queue

from ..errors import BrokerUnavailable
from ..settings import Settings
from ..transport import Publisher, connection, function_exchange

log = logging.getLogger("iii.queues")


def job_queue(settings: Settings, queue: str, function_id: str) -> Queue:
    """The RabbitMQ queue holding ``function_id``'s jobs of standard queue ``queue``."""
    return Queue(f"{settings.namespace}.fn.{function_id}.q.{queue}",
                 function_exchange(settings, function_id), routing_key=f"q.{queue}",
                 durable=True)


def queue_of(routing_key: str) -> str:
    """The named queue a job was published to, from its routing key ``q.<queue>``."""
    return routing_key[2:] if routing_key.startswith("q.") else routing_key


class AmqpJobs:
    """Publishes jobs to RabbitMQ (with confirms) and reads queue depths."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.publisher = Publisher(settings, confirm=True)

    def publish(self, queue: str, function_id: str, raw: str) -> None:
        """Publish a job message (see :func:`~iii_broker.queues.store.job_message`);
        returns once RabbitMQ confirmed it. Raises :class:`BrokerUnavailable`."""
        envelope = json.loads(raw)
        props = envelope.get("properties") or {}
        self.publisher.publish(
            envelope["body"], exchange=function_exchange(self.settings, function_id),
            routing_key=f"q.{queue}", declare=job_queue(self.settings, queue, function_id),
            headers=envelope.get("headers") or {}, correlation_id=props.get("correlation_id"))

    def depth(self, queue: str, function_ids: list[str]) -> int:
        """Jobs waiting in RabbitMQ for ``queue`` (ready, not delivered)."""
        total = 0
        try:
            with connection(self.settings) as conn:
                for fid in function_ids:
                    channel: Any = conn.channel()
                    try:
                        ok = channel.queue_declare(queue=job_queue(self.settings, queue, fid).name,
                                                   passive=True)
                        total += ok.message_count
                    except Exception:  # noqa: BLE001 - not declared yet: nothing waits there
                        pass
                    finally:
                        try:
                            channel.close()
                        except Exception:  # noqa: BLE001 - closed by the broker already
                            pass
        except BrokerUnavailable as exc:
            log.warning("cannot read queue depths: %s", exc)
        return total

    def close(self) -> None:
        self.publisher.close()
