"""Standard-queue jobs from RabbitMQ (``III_BROKER_URL=amqp://``): a Kombu consumer.

RabbitMQ delivers up to ``--concurrency`` jobs; each is claimed in Redis against its
queue's cap (a job over the cap waits here, unacked, and is tried again every 50 ms),
run on the pool like any job, settled in Redis (done, retry, dead letter), and only
then acked. A worker that dies leaves its jobs unacked, and RabbitMQ redelivers them;
a redelivered job counts an attempt (``NS:q:<Q>:redeliveries:<id>``), so a job that
kills its worker every time ends as a dead letter.
"""

from __future__ import annotations

import json
import logging
import queue
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from kombu import Consumer

from ... import envelope
from ...outage import Backoff, broker_outage, is_outage, outage_for
from ...queues.amqp import job_queue, queue_of
from ...queues.store import Candidate, Claim, JobStore, with_attempt
from ...transport import broker_errors, connect, consumer_heartbeat_s, ensure_connected
from ..hosts import WorkerHost


class JobRunner(Protocol):
    """What this consumer needs of the worker's job runner (:class:`.jobs.JobRunner`)."""

    worker: WorkerHost
    jobs: JobStore
    capacity: int

    @property
    def stopping(self) -> bool: ...

    @property
    def running(self) -> int: ...

    def candidates(self) -> list[Candidate]: ...

    def run_one(self, claim: Claim, after: Callable[[], None]) -> None: ...

log = logging.getLogger("iii.worker")

_POLL_S = 0.05
_RESYNC_S = 2.0


class AmqpJobConsumer:
    """Feeds a :class:`JobRunner` with the jobs RabbitMQ holds for its standard queues."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self.settings = runner.worker.settings
        self._acks: queue.Queue[Any] = queue.Queue()
        self._waiting: list[tuple[str, str, str, str, int, Any]] = []
        self._consuming: set[str] = set()
        self._channel: Any = None  # the channel of the connection consuming now

    def run(self) -> None:
        """The consumer thread: reconnects until the runner stops and its jobs are acked."""
        backoff = Backoff()
        outage = broker_outage(self.settings)
        while not self._finished():
            conn = connect(self.settings, heartbeat_s=consumer_heartbeat_s(self.settings))
            try:
                ensure_connected(conn, self.settings)
                consumer = Consumer(conn.channel(), [], on_message=self._on_message,
                                    accept=["application/json"], auto_declare=True)
                consumer.qos(prefetch_count=self.runner.capacity)
                self._channel = consumer.channel
                self._consuming = set()
                self._sync(consumer)
                outage.recovered()
                backoff.reset()
                self._loop(conn, consumer)
                return
            except Exception as exc:  # noqa: BLE001 - reconnect on any broker failure
                if self._finished():
                    return
                if is_outage(exc):  # one line for the whole outage, not one per retry
                    outage_for(self.settings, exc).failed(exc)
                else:
                    log.warning("job consumer failed (%s: %s); reconnecting",
                                type(exc).__name__, exc)
                self._waiting.clear()  # unacked: RabbitMQ redelivers them
                time.sleep(backoff.next())
            finally:
                try:
                    conn.release()
                except Exception:  # noqa: BLE001
                    pass

    def _finished(self) -> bool:
        return self.runner.stopping and self.runner.running == 0 and self._acks.empty()

    def _loop(self, conn: Any, consumer: Consumer) -> None:
        errors = broker_errors(conn)
        synced = time.monotonic()
        cancelled = False
        while True:
            self._ack_done()
            if self.runner.stopping and not cancelled:
                consumer.cancel()
                cancelled = True
                for *_, message in self._waiting:
                    message.requeue()
                self._waiting.clear()
            if cancelled and self._finished():
                return
            self._retry_waiting()
            if not cancelled and time.monotonic() - synced > _RESYNC_S:
                self._sync(consumer)
                synced = time.monotonic()
            try:
                conn.heartbeat_check()  # RabbitMQ requeues what a silent consumer holds
                conn.drain_events(timeout=_POLL_S)
            except TimeoutError:
                pass
            except errors:
                raise

    def _sync(self, consumer: Consumer) -> None:
        """Consume the RabbitMQ queue of every standard (queue, function) this worker serves."""
        added = False
        for c in self.runner.candidates():
            q = job_queue(self.settings, c.queue, c.function_id)
            if c.fifo or q.name in self._consuming:
                continue
            consumer.add_queue(q)
            self._consuming.add(q.name)
            added = True
        if added:
            consumer.consume()

    def _on_message(self, message: Any) -> None:
        delivery = message.delivery_info or {}
        name = queue_of(delivery.get("routing_key", ""))
        body = message.body.decode("utf-8", "replace") if isinstance(message.body, bytes) \
            else message.body
        raw = envelope.encode(body, exchange=delivery.get("exchange") or "",
                              routing_key=delivery.get("routing_key") or "",
                              headers=message.headers or {},
                              correlation_id=message.properties.get("correlation_id"),
                              delivery_mode=2, base64_body=False)
        fid, data = "?", None
        try:
            data = json.loads(body)
            fid = data["function_id"]
        except Exception:  # noqa: BLE001 - the runner dead-letters what it cannot parse
            pass
        if delivery.get("redelivered") and isinstance(data, dict) and data.get("invocation_id"):
            count = self.runner.jobs.redeliveries(name, data["invocation_id"])
            raw = with_attempt(raw, int(data.get("attempt", 1)) + count)
        config = self.runner.jobs.configs().get(name)
        cap = config.concurrency if config is not None else 10
        tag = f"{self.runner.worker.worker_id}:{uuid.uuid4().hex[:12]}"
        job = (tag, raw, name, fid, cap, message)
        if not self._try(job):
            self._waiting.append(job)

    def _try(self, job: tuple[str, str, str, str, int, Any]) -> bool:
        tag, raw, name, fid, cap, message = job
        if not self.runner.jobs.acquire(self.runner.worker.worker_id, tag, name, fid, cap, raw):
            return False
        self.runner.run_one(Claim(tag, raw, name), lambda: self._acks.put(message))
        return True

    def _retry_waiting(self) -> None:
        if self._waiting:
            self._waiting = [job for job in self._waiting if not self._try(job)]

    def _ack_done(self) -> None:
        while True:
            try:
                message = self._acks.get_nowait()
            except queue.Empty:
                return
            if message.channel is not self._channel:
                # Delivered on a connection that has since died (a broker restart, or this
                # worker paused past its heartbeats): RabbitMQ requeued it then, so it runs
                # again (at least once). Acking on the dead channel would fail every round.
                log.info("job %s was requeued by RabbitMQ when its connection closed",
                         message.delivery_tag)
                continue
            message.ack()
