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

import logging
from collections.abc import Callable
from typing import Any

from kombu import Queue

from .. import envelope
from ..errors import BrokerUnavailable
from ..settings import Settings
from ..store import Keys
from ..transport import Publisher, connection, function_exchange

log = logging.getLogger("iii.queues")


def job_queue(settings: Settings, queue: str, function_id: str) -> Queue:
    """The RabbitMQ queue holding ``function_id``'s jobs of standard queue ``queue``."""
    return Queue(Keys(settings.namespace).job_list(queue, function_id),
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
        job = envelope.decode(raw)
        self.publisher.publish(
            job.body, exchange=function_exchange(self.settings, function_id),
            routing_key=f"q.{queue}", declare=job_queue(self.settings, queue, function_id),
            headers=job.headers, correlation_id=job.properties.get("correlation_id"))

    def depth(self, queue: str, function_ids: list[str]) -> int:
        """Jobs waiting in RabbitMQ for ``queue`` (ready, not delivered)."""
        try:
            return self._each(queue, function_ids,
                              lambda channel, name: channel.queue_declare(
                                  queue=name, passive=True).message_count)
        except BrokerUnavailable as exc:
            log.warning("cannot read queue depths: %s", exc)
            return 0

    def purge(self, queue: str, function_ids: list[str]) -> int:
        """Drop the jobs waiting in RabbitMQ for ``queue``; returns how many there were.
        Raises :class:`BrokerUnavailable`."""
        return self._each(queue, function_ids,
                          lambda channel, name: channel.queue_purge(name) or 0)

    def _each(self, queue: str, function_ids: list[str], count: Callable[[Any, str], int]) -> int:
        """Sum ``count(channel, rabbitmq_queue)`` over the RabbitMQ queues of ``queue`` (one
        channel each: RabbitMQ closes a channel whose queue was never declared)."""
        total = 0
        with connection(self.settings) as conn:
            for fid in function_ids:
                channel: Any = conn.channel()
                try:
                    total += count(channel, job_queue(self.settings, queue, fid).name)
                except Exception:  # noqa: BLE001 - not declared yet: nothing waits there
                    pass
                finally:
                    try:
                        channel.close()
                    except Exception:  # noqa: BLE001 - closed by the broker already
                        pass
        return total

    def close(self) -> None:
        self.publisher.close()
