"""Durable jobs in a worker: claim from named queues, run, settle.

One fetcher thread claims jobs (as many as the worker has room for) when a wake
token says some may be waiting; each claimed job runs on a pool thread, which then
settles it and claims the next one in the same Redis round trip, so a busy worker
pays one script call per job. ``--concurrency N`` allows N jobs at once, besides N
direct calls. Each queue's ``concurrency`` caps its running jobs over the whole
cluster (checked in the claim script).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...errors import (
    IIIError,
    InvocationFailed,
    InvocationStopped,
    PayloadError,
    PayloadLimitExceeded,
)
from ...message import Limits, now_ms
from ...observe import METRICS, Run
from ...outage import Backoff, is_outage, store_outage
from ...queues.config import QueueConfig, topic_queue_name
from ...queues.store import Candidate, Claim, JobStore, Outcome, Settle, failure_outcome, parse_job
from ...registry import ENGINE_OWNED, Registry
from ...store import RedisError
from .amqp_jobs import AmqpJobConsumer
from .topics import SUBSCRIBER, subscriber_queue

if TYPE_CHECKING:
    from ..hosts import WorkerHost

log = logging.getLogger("iii.worker")

_CANDIDATES_TTL_S = 2.0
_CAPPED_POLL_S = 0.05   # a cap kept work waiting: look again soon
_IDLE_WAIT_S = 1.0


class JobRunner:
    """Runs a worker's share of durable jobs (the queue module's service in a worker)."""

    def __init__(self, worker: WorkerHost) -> None:
        self.worker = worker
        self.amqp = worker.settings.uses_amqp
        """RabbitMQ holds standard queues' jobs (consumed by AmqpJobConsumer); FIFO ones and
        every job on a Redis broker are claimed from Redis here."""
        self.jobs = JobStore(worker.store, worker.settings.namespace)
        self.registry = Registry(worker.store, worker.settings.namespace)
        self.capacity = worker.concurrency
        self.limits = Limits.of(worker.settings)
        self._stop_key = self.jobs.keys.worker_wake(worker.worker_id, "jobs")
        self._running = 0
        self._room = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._amqp_thread: threading.Thread | None = None
        self._candidates: list[Candidate] = []
        self._candidates_at = 0.0
        self._conditions: dict[str, str] = {}  # topic queue -> its trigger's condition function

    def start(self) -> None:
        self._thread = threading.Thread(target=self._fetch_loop, name="iii-jobs", daemon=True)
        self._thread.start()
        if self.amqp:
            self._amqp_thread = threading.Thread(target=AmqpJobConsumer(self).run,
                                                 name="iii-amqp-jobs", daemon=True)
            self._amqp_thread.start()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Claim nothing more; running jobs finish (see :meth:`drain`)."""
        self._stopping.set()
        with self._room:
            self._room.notify_all()
        self.jobs.end_wait(self._stop_key)  # the fetcher's wait for work ends now

    def drain(self, hard: threading.Event, timeout_s: float | None = None) -> int:
        """Wait for running jobs to settle; returns how many still run (0 after a clean drain)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._room:
            while self._running and not hard.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    break
                self._room.wait(0.2)
            left = self._running
        if self._amqp_thread is not None and not left:
            self._amqp_thread.join(5)  # it acks the last jobs to RabbitMQ, then closes
        if self._thread is not None and not left:
            self._thread.join(_IDLE_WAIT_S + 1)  # woken by stop(); else one wait for work
            try:
                self.jobs.r.delete(self._stop_key)
            except RedisError:
                pass  # it expires
        return left

    @property
    def running(self) -> int:
        return self._running

    # -- claiming -------------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        """Every queue this worker may take jobs from, with the function it takes them for."""
        now = time.monotonic()
        if now - self._candidates_at < _CANDIDATES_TTL_S:
            return self._candidates
        configs = self.jobs.configs()
        functions = list(self.worker.functions)
        out = [Candidate(q.name, fid, q.concurrency, q.fifo)
               for q in configs.values() if q.topic is None for fid in functions]
        # Subscriptions of its functions: those its app declares, and engine-owned ones
        # (engine::register_trigger), which no worker declares but its functions serve.
        subscriptions = [(t.function_id, t.config) for t in self.worker.triggers
                         if t.type == SUBSCRIBER]
        subscriptions += [(t["function_id"], t["config"]) for t in self.registry.triggers()
                          if t["type"] == SUBSCRIBER and t.get("owner") == ENGINE_OWNED]
        for fid, config in subscriptions:
            if fid not in self.worker.functions:
                continue  # another worker's function: its jobs would find no handler here
            name = topic_queue_name(config["topic"], fid)
            q = configs.get(name) or subscriber_queue(config, fid)
            out.append(Candidate(name, fid, q.concurrency, q.fifo))
            if config.get("condition_function_id"):
                self._conditions[name] = config["condition_function_id"]
        random.shuffle(out)  # workers with many queues don't all favour the same one
        self._candidates, self._candidates_at = out, now
        return out

    def redis_candidates(self) -> list[Candidate]:
        """The candidates claimed from Redis: all of them, or only FIFO ones on RabbitMQ."""
        candidates = self.candidates()
        return [c for c in candidates if c.fifo] if self.amqp else candidates

    def run_one(self, claim: Claim, after: Callable[[], None]) -> None:
        """Run a job claimed elsewhere (RabbitMQ), settle it, then call ``after``."""
        with self._room:
            self._running += 1

        def job() -> None:
            try:
                self._settle(self._run(claim), chain=False)
                after()
            finally:
                with self._room:
                    self._running -= 1
                    self._room.notify_all()
        self.worker.submit(job)

    def _fetch_loop(self) -> None:
        backoff = Backoff()
        outage = store_outage(self.worker.settings)
        while not self._stopping.is_set():
            with self._room:
                while self._running >= self.capacity and not self._stopping.is_set():
                    self._room.wait(_IDLE_WAIT_S)
                free = self.capacity - self._running
            if self._stopping.is_set():
                return
            try:
                capped, claims = self.jobs.cycle(self.worker.worker_id, [], free,
                                                 self.redis_candidates())
                for claim in claims:
                    self._start(claim)
                functions = list(self.worker.functions)  # what it serves now (unregister())
                if not claims and functions:
                    self.jobs.wait_for_work(functions, _CAPPED_POLL_S if capped else _IDLE_WAIT_S,
                                            self._stop_key)
                elif not claims:
                    self._stopping.wait(_IDLE_WAIT_S)
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - Redis blips and outages: try again
                if is_outage(exc):
                    outage.failed(exc)  # one line for the whole outage, not one per retry
                else:
                    log.warning("claiming jobs failed: %s", exc)
                self._stopping.wait(max(0.5, backoff.next()))

    def _start(self, claim: Claim) -> None:
        with self._room:
            self._running += 1
        self.worker.submit(self._run_chain, claim)

    def _run_chain(self, claim: Claim | None) -> None:
        """Run a job, settle it and take the next one in one round trip, until none is left."""
        try:
            while claim is not None:
                outcome = self._run(claim)
                claim = self._settle(outcome)
        finally:
            with self._room:
                self._running -= 1
                self._room.notify_all()

    def _settle(self, outcome: Outcome, chain: bool = True) -> Claim | None:
        delay = 0.2
        while True:
            want = 0 if self._stopping.is_set() or not chain else 1
            try:
                _capped, claims = self.jobs.cycle(self.worker.worker_id, [outcome], want,
                                                  self.redis_candidates() if want else [])
                return claims[0] if claims else None
            except Exception as exc:  # noqa: BLE001 - keep the outcome until Redis is back
                if self.worker.hard_stopping:
                    log.error("could not settle job %s (%s); it will be run again", outcome.tag, exc)
                    return None
                if is_outage(exc):
                    store_outage(self.worker.settings).failed(exc)
                else:
                    log.warning("settling job %s failed (%s); retrying in %.1fs", outcome.tag,
                                exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- running --------------------------------------------------------------------

    def _config(self, queue: str) -> QueueConfig:
        """The queue's settings for a job this worker holds: it waits out a Redis outage
        rather than drop the claim (a dropped claim would sit unrun until the worker exits)."""
        delay = 0.2
        while True:
            try:
                return self.jobs.configs().get(queue) or QueueConfig(queue)
            except Exception as exc:  # noqa: BLE001 - Redis is away: the claim waits with us
                if not is_outage(exc) or self.worker.hard_stopping:
                    log.warning("reading queue %s's settings failed (%s): using defaults",
                                queue, exc)
                    return QueueConfig(queue)
                store_outage(self.worker.settings).failed(exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _run(self, claim: Claim) -> Outcome:
        tag, raw, queue = claim.tag, claim.raw, claim.queue
        config = self._config(queue)
        started = now_ms()
        try:
            job = parse_job(tag, queue, raw, self.limits)
        except PayloadError as exc:  # never retried: it would be refused every time
            log.error("job on queue %s is not a message we can run (%s): dead-lettered", queue,
                      exc.message)
            code = exc.code if isinstance(exc, PayloadLimitExceeded) else InvocationFailed.code
            return failure_outcome(config, tag, raw, None, IIIError(
                f"message refused: {exc.message}", code=code), started)
        inv = job.invocation
        if inv.attempt > config.max_attempts:  # redelivered by RabbitMQ after its worker died
            return failure_outcome(config, tag, raw, job, InvocationStopped(
                f"its worker stopped while running it, on its last attempt ({config.max_attempts})",
                function_id=inv.function_id, invocation_id=inv.invocation_id), started)
        fdef = self.worker.functions.get(inv.function_id)
        if fdef is None:  # kept whole, so it can be redriven once a worker has the function
            return failure_outcome(config, tag, raw, job, InvocationFailed(
                f"no handler for {inv.function_id!r} in app {self.worker.app_name!r}",
                function_id=inv.function_id, invocation_id=inv.invocation_id), started,
                final=True)
        enqueued = job.headers.get("enqueued_at")
        run = Run.of(inv.function_id, inv.invocation_id, inv.attempt, job.headers, kind="job",
                     worker_id=self.worker.worker_id, payload=inv.payload, queue=queue,
                     trigger_type=SUBSCRIBER if config.topic is not None else "queue")
        run.enqueued_ms = enqueued if isinstance(enqueued, int) else None
        try:
            condition = self._conditions.get(queue)
            if condition and not self.worker.call(condition, inv.payload):
                log.debug("job %s of %s skipped: %s said no", inv.invocation_id, inv.function_id,
                          condition)
                return Outcome.done(tag)
            self.worker.invoke(fdef, inv, run)
        except BaseException as exc:  # noqa: BLE001 - every failure is a retry or a dead letter
            message = f"{exc.code}: {exc.message}" if isinstance(exc, IIIError) \
                else (str(exc) or type(exc).__name__)
            error = InvocationFailed(f"{type(exc).__name__}: {message}",
                                     function_id=inv.function_id, invocation_id=inv.invocation_id,
                                     stacktrace="".join(traceback.format_exception(exc)))
            outcome = failure_outcome(config, tag, raw, job, error, started)
            if outcome.kind is Settle.RETRY:
                METRICS.inc("iii_retries_total", {"queue": queue})
                log.warning("job %s of %s failed on attempt %d of %d (%s); retrying in %d ms",
                            inv.invocation_id, inv.function_id, inv.attempt, config.max_attempts,
                            error.message, config.backoff_for(inv.attempt))
            else:
                log.error("job %s of %s failed on its last attempt (%d): dead-lettered on %s",
                          inv.invocation_id, inv.function_id, inv.attempt, queue, exc_info=exc)
            return outcome
        return Outcome.done(tag)

