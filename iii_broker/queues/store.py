"""Durable jobs in Redis: enqueue, claim, settle, retry, dead-letter, redrive.

A job is a Kombu message (the JSON envelope Kombu's Redis transport writes, with our
invocation body in it) on the list of its function and queue, ``NS.fn.<F>.q.<Q>``.
Workers do not BRPOP it: a pop and the record that the worker holds it must be one
atomic step, or a worker killed between the two loses the job. So a worker *claims*
jobs with a Lua script that moves them into its own hash (``NS:worker:<id>:jobs``),
checks the queue's cluster-wide cap and FIFO groups in the same step, and settles
each job (done, retry later, dead) with the same script. A job held by a worker
whose heartbeat lapsed goes back to its queue (see the engine's sweeper), so a job
is never redelivered while its worker is alive, however long it runs.

The scripts and the full key list are in :mod:`iii_broker.queues.lua`.
"""

from __future__ import annotations

import enum
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from .. import envelope
from ..errors import BrokerUnavailable, EnqueueError, IIIError, PayloadError
from ..message import Invocation, Limits, now_ms
from ..store import Keys, push_wake
from . import lua
from .config import DEFAULT_QUEUE, QueueConfig

if TYPE_CHECKING:
    from .amqp import AmqpJobs



@dataclass(frozen=True)
class Claim:
    """A job a worker claimed: its delivery tag (unique per claim), the message, the queue."""

    tag: str
    raw: str
    queue: str


@dataclass(frozen=True)
class Candidate:
    """A queue a worker may claim jobs of one of its functions from."""

    queue: str
    function_id: str
    cap: int
    """The queue's ``concurrency``: running jobs allowed over the whole cluster."""
    fifo: bool


class Settle(enum.Enum):
    """How a claimed job is settled (the verbs of ``lua.CYCLE``)."""

    DONE = "ok"
    RETRY = "retry"
    DEAD = "dead"
    RELEASE = "release"
    """Free its cap slot only: RabbitMQ redelivers the job itself."""


@dataclass(frozen=True)
class Outcome:
    """What happened to a claimed job."""

    kind: Settle
    tag: str
    due_ms: int = 0
    """RETRY: when the next attempt is due (Unix ms)."""
    message: str = ""
    """RETRY: the message with its attempt raised."""
    message_id: str = ""
    """DEAD: the dead letter's id."""
    record: str = ""
    """DEAD: the dead letter (JSON)."""

    @classmethod
    def done(cls, tag: str) -> Outcome:
        return cls(Settle.DONE, tag)

    @classmethod
    def release(cls, tag: str) -> Outcome:
        return cls(Settle.RELEASE, tag)

    def script_args(self) -> list[str]:
        """The four arguments ``lua.CYCLE`` takes per outcome."""
        if self.kind is Settle.RETRY:
            return [self.kind.value, self.tag, str(self.due_ms), self.message]
        if self.kind is Settle.DEAD:
            return [self.kind.value, self.tag, self.message_id, self.record]
        return [self.kind.value, self.tag, "", ""]

_CONFIG_TTL_S = 1.0


@dataclass(frozen=True)
class Job:
    """A claimed job, parsed."""

    tag: str
    queue: str
    raw: str
    invocation: Invocation
    headers: dict[str, Any]


class JobStore:
    """Durable queues of one namespace, in the store Redis."""

    def __init__(self, client: redis.Redis, namespace: str, broker: AmqpJobs | None = None) -> None:
        self.r: Any = client  # decode_responses=True
        self.ns = namespace
        self.broker = broker
        """Set when RabbitMQ holds the jobs of standard queues (see :mod:`.amqp`)."""
        self.keys = Keys(namespace)
        self.config_key = self.keys.queues
        self.holders_key = self.keys.job_holders
        self._enqueue = client.register_script(lua.ENQUEUE)
        self._cycle = client.register_script(lua.CYCLE)
        self._promote = client.register_script(lua.PROMOTE)
        self._redrive = client.register_script(lua.REDRIVE)
        self._acquire = client.register_script(lua.ACQUIRE)
        self._local = threading.local()
        self._configs: dict[str, QueueConfig] = {}
        self._configs_at = 0.0

    # -- keys -----------------------------------------------------------------------

    def list_key(self, queue: str, function_id: str) -> str:
        return self.keys.job_list(queue, function_id)

    def qkey(self, queue: str, suffix: str) -> str:
        return self.keys.queue(queue, suffix)

    def jobs_key(self, worker_id: str) -> str:
        return self.keys.worker_jobs(worker_id)

    def wake_key(self, function_id: str) -> str:
        return self.keys.wake(function_id)

    # -- settings -------------------------------------------------------------------

    def publish_configs(self, configs: Iterable[QueueConfig], *, replace_named: bool = False) -> None:
        """Write queue settings to ``NS:queues``. With ``replace_named``, configured (not topic)
        queues missing from ``configs`` are removed: the engine's settings file is the truth."""
        configs = list(configs)
        pipe = self.r.pipeline(transaction=True)
        if replace_named:
            names = {c.name for c in configs}
            for name, raw in self.r.hgetall(self.config_key).items():
                if name not in names and QueueConfig.from_json(raw).topic is None:
                    pipe.hdel(self.config_key, name)
        for c in configs:
            pipe.hset(self.config_key, c.name, c.to_json())
        pipe.execute()
        self._configs_at = 0.0

    def configs(self, *, fresh: bool = False) -> dict[str, QueueConfig]:
        """Every queue's settings (cached for a second); ``default`` is always there.

        While Redis cannot be reached the last copy read stands, so a worker holding a claimed
        job can still run it (settling waits for Redis); ``fresh`` always asks Redis."""
        if fresh or time.monotonic() - self._configs_at > _CONFIG_TTL_S:
            try:
                raw = self.r.hgetall(self.config_key)
            except redis.RedisError:
                if fresh or not self._configs:
                    raise
                return self._configs
            configs = {name: QueueConfig.from_json(value) for name, value in raw.items()}
            configs.setdefault(DEFAULT_QUEUE, QueueConfig(DEFAULT_QUEUE))
            self._configs, self._configs_at = configs, time.monotonic()
        return self._configs

    def config(self, name: str) -> QueueConfig:
        """One queue's settings; raises :class:`EnqueueError` when no such queue exists."""
        config = self.configs().get(name) or self.configs(fresh=True).get(name)
        if config is None:
            known = ", ".join(sorted(n for n, c in self._configs.items() if c.topic is None))
            raise EnqueueError(f"queue {name!r} does not exist; configured queues: {known} "
                               "(queues are configured in the engine settings file, "
                               "[modules.queue.queues.NAME])")
        return config

    # -- producing ------------------------------------------------------------------

    def enqueue(self, jobs: list[tuple[QueueConfig, str, Invocation, dict[str, Any]]], *,
                message_id: str, idempotency_key: str | None = None,
                idempotency_scope: str | None = None, ttl_s: int | None = None) -> tuple[bool, str]:
        """Store jobs ``(queue, function_id, invocation, headers)`` in one step.

        Returns ``(True, message_id)``, or ``(False, first_id)`` when ``idempotency_key``
        was used within its TTL (nothing is stored then). Raises :class:`EnqueueError`.
        """
        args: list[Any] = []
        to_broker: list[tuple[str, str, str]] = []
        for config, function_id, inv, headers in jobs:
            group = config.group_of(inv.payload) or ""
            raw = job_message(self.ns, config.name, function_id, inv, headers)
            if self.broker is not None and not config.fifo:
                to_broker.append((config.name, function_id, raw))
                raw = ""  # counted here, held by RabbitMQ
            args += [config.name, function_id, raw, group]
        key = ""
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not idempotency_key:
                raise EnqueueError("idempotency_key must be a non-empty string")
            key = self.keys.idempotency(idempotency_scope or f"q:{jobs[0][0].name}", idempotency_key)
        ttl_ms = int((ttl_s or jobs[0][0].idempotency_ttl_s) * 1000)
        try:
            stored, mid = self._enqueue(args=[self.ns, key, ttl_ms, message_id, len(jobs), *args])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot reach Redis to store the job: {exc}") from exc
        except redis.RedisError as exc:
            raise EnqueueError(f"the store refused the job: {exc}") from exc
        if stored and to_broker:
            assert self.broker is not None
            try:
                for queue, function_id, raw in to_broker:
                    self.broker.publish(queue, function_id, raw)
            except IIIError as exc:
                if key:
                    self.r.delete(key)  # a retry with the same key must not be suppressed
                raise EnqueueError(f"the broker refused the job: {exc.message}") from exc
        return bool(stored), mid

    # -- consuming ------------------------------------------------------------------

    def cycle(self, worker_id: str, outcomes: list[Outcome], n: int,
              candidates: list[Candidate]) -> tuple[bool, list[Claim]]:
        """Settle ``outcomes`` and claim up to ``n`` jobs from ``candidates``; returns
        ``(capped, claims)``."""
        args: list[Any] = [self.ns, self.jobs_key(worker_id), self.holders_key, worker_id,
                           now_ms(), f"{worker_id}:{os.urandom(5).hex()}:", n, len(outcomes)]
        for outcome in outcomes:
            args.extend(outcome.script_args())
        args.append(len(candidates) if n > 0 else 0)
        if n > 0:
            for c in candidates:
                args += [c.queue, c.function_id, c.cap, "f" if c.fifo else "s"]
        out = self._cycle(args=args, client=self._own_client())
        claims = [Claim(out[i], out[i + 1], out[i + 2]) for i in range(1, len(out), 3)]
        return bool(out[0]), claims

    def _own_client(self) -> redis.Redis:
        """This thread's own connection: a worker's pool threads settle a job each per round
        trip, and checking a connection out of the pool (with its health poll) for every
        one costs more CPU than the command."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = redis.Redis(connection_pool=self.r.connection_pool,
                                                      single_connection_client=True)
        return client

    def wait_for_work(self, function_ids: list[str], timeout_s: float,
                      stop_key: str | None = None) -> bool:
        """Block until a wake token for one of ``function_ids`` arrives (True), a token on
        ``stop_key`` (see :meth:`end_wait`) or the timeout (False)."""
        keys = [self.wake_key(f) for f in function_ids]
        if stop_key is not None:
            keys.append(stop_key)
        popped = self.r.blpop(keys, timeout=timeout_s)
        return popped is not None and popped[0] != stop_key

    def end_wait(self, stop_key: str) -> None:
        """End a :meth:`wait_for_work` on ``stop_key`` now (a stopping worker). Best effort."""
        push_wake(self.r, stop_key)

    def held(self, worker_id: str) -> dict[str, tuple[dict[str, Any], str]]:
        """Jobs a worker holds: tag -> (claim header, message)."""
        out = {}
        for tag, rec in self.r.hgetall(self.jobs_key(worker_id)).items():
            head, _, raw = rec.partition("\n")
            out[tag] = (json.loads(head), raw)
        return out

    def holders(self) -> set[str]:
        return set(self.r.smembers(self.holders_key))

    def forget_holder(self, worker_id: str) -> None:
        """Drop a worker from the holders once it holds nothing."""
        if not self.r.exists(self.jobs_key(worker_id)):
            self.r.srem(self.holders_key, worker_id)

    # -- retries --------------------------------------------------------------------

    def promote(self, queues: list[str], limit: int = 500) -> tuple[int, int | None]:
        """Move due retries onto their queues; returns (moved, next due ms or None)."""
        if not queues:
            return 0, None
        out = self._promote(args=[self.ns, now_ms(), limit,
                                  "redis" if self.broker is None else "amqp", *queues])
        moved = int(out[0])
        for i in range(2, len(out), 2):  # RabbitMQ: publish first, forget after (never lose one)
            queue, member = out[i], out[i + 1]
            head, _, raw = member.partition("\n")
            assert self.broker is not None
            self.broker.publish(queue, json.loads(head)["f"], raw)
            self.r.zrem(self.qkey(queue, "delayed"), member)
            moved += 1
        return moved, (None if int(out[1]) < 0 else int(out[1]))

    def acquire(self, worker_id: str, tag: str, queue: str, function_id: str, cap: int,
                raw: str) -> bool:
        """Claim a job RabbitMQ delivered if ``queue``'s cap allows (False: not now)."""
        return bool(self._acquire(args=[self.ns, self.jobs_key(worker_id), self.holders_key,
                                        worker_id, now_ms(), tag, queue, function_id, cap, raw]))

    def redeliveries(self, queue: str, message_id: str) -> int:
        """Count one more redelivery of a RabbitMQ job; returns how many there were."""
        key = self.qkey(queue, f"redeliveries:{message_id}")
        pipe = self.r.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, 7 * 24 * 3600)
        return int(pipe.execute()[0])

    # -- dead letters ---------------------------------------------------------------

    def dead_letters(self, queue: str, limit: int = 50, offset: int = 0
                     ) -> tuple[list[dict[str, Any]], int]:
        """Dead letters of a queue, newest first, and how many there are."""
        index = self.qkey(queue, "dlq:index")
        if limit <= 0:
            return [], self.r.zcard(index)
        pipe = self.r.pipeline(transaction=True)  # the page and the count agree
        pipe.zrevrange(index, offset, offset + limit - 1)
        pipe.zcard(index)
        ids, total = pipe.execute()
        if not ids:
            return [], total
        records = self.r.hmget(self.qkey(queue, "dlq"), ids)
        return [json.loads(r) for r in records if r is not None], total

    def holds_dead_letters(self, queue: str) -> bool:
        """Whether ``queue`` has dead letters (configured still or not)."""
        return bool(self.r.exists(self.qkey(queue, "dlq:index")))

    def dead_letter(self, queue: str, message_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.qkey(queue, "dlq"), message_id)
        return None if raw is None else json.loads(raw)

    def redrive(self, queue: str, message_ids: list[str] | None = None) -> list[str]:
        """Put dead letters (all of the queue's when ``message_ids`` is None) back on the
        queue with their attempts reset; returns the ids redriven."""
        config = self.configs(fresh=True).get(queue)
        if config is None:
            raise EnqueueError(f"queue {queue!r} is not configured any more, so no worker would "
                               "take its jobs: configure it again to redrive, or discard its "
                               "dead letters")
        if message_ids is None:
            message_ids = list(self.r.zrange(self.qkey(queue, "dlq:index"), 0, -1))
        redriven: list[str] = []
        for start in range(0, len(message_ids), 200):
            batch = message_ids[start:start + 200]
            args: list[Any] = []
            records = self.r.hmget(self.qkey(queue, "dlq"), batch)
            count = 0
            for mid, rec in zip(batch, records, strict=True):
                if rec is None:
                    continue
                letter = json.loads(rec)
                try:  # a message dead-lettered unread (not a job) can only be discarded
                    raw = with_attempt(letter["message"], 1)
                except (PayloadError, ValueError, KeyError, TypeError):
                    continue
                if not letter.get("function_id"):
                    continue
                if self.broker is not None and not config.fifo:
                    self.broker.publish(queue, letter["function_id"], raw)
                    raw = ""  # RabbitMQ holds it now; the script only removes the letter
                group = config.group_of(letter.get("payload")) or "" if config.fifo else ""
                args += [mid, letter["function_id"], raw, group]
                count += 1
            if count:
                redriven += self._redrive(args=[self.ns, queue, count, *args])
        return redriven

    def discard(self, queue: str, message_id: str) -> bool:
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(self.qkey(queue, "dlq"), message_id)
        pipe.zrem(self.qkey(queue, "dlq:index"), message_id)
        return bool(pipe.execute()[0])

    def missing_letter(self, queue: str, message_id: str) -> str:
        """The error message for a dead letter that is not there."""
        total = self.r.zcard(self.qkey(queue, "dlq:index"))
        return (f"no dead letter {message_id!r} on queue {queue!r} ({total} dead letter(s) there; "
                "it may have been redriven or discarded already)")

    # -- stats ----------------------------------------------------------------------

    def purge(self, queue: str) -> int:
        """Drop the jobs waiting in ``queue`` (and its retries waiting for their backoff);
        returns how many were dropped. Jobs running now are left to settle. Raises
        :class:`EnqueueError` for a FIFO queue with a job running (its group's order would
        break)."""
        functions = sorted(self.r.smembers(self.qkey(queue, "functions")))
        groups = sorted(self.r.smembers(self.qkey(queue, "active")))
        pipe = self.r.pipeline(transaction=True)
        if groups:
            pipe.watch(self.qkey(queue, "running"), self.qkey(queue, "active"))
            if int(pipe.get(self.qkey(queue, "running")) or 0) > 0:
                pipe.reset()
                raise EnqueueError(f"queue {queue!r} is fifo and has jobs running: purge it "
                                   "once they settle (or stop its workers first)")
            pipe.multi()
        for fid in functions:
            pipe.llen(self.list_key(queue, fid))
            pipe.delete(self.list_key(queue, fid))
        pipe.zcard(self.qkey(queue, "delayed"))
        pipe.delete(self.qkey(queue, "delayed"))
        for group in groups:
            pipe.llen(self.qkey(queue, f"g:{group}"))
            pipe.delete(self.qkey(queue, f"g:{group}"))
        if groups:
            pipe.delete(self.qkey(queue, "active"), *[self.qkey(queue, f"ready:{f}")
                                                      for f in functions])
        res = pipe.execute()
        dropped = sum(res[0:2 * len(functions) + 2 * len(groups) + 2:2])
        if self.broker is not None and functions:
            dropped += self.broker.purge(queue, functions)
        return dropped

    def forget_queue(self, queue: str) -> None:
        """Forget a topic subscriber queue's settings (once it is empty and orphaned)."""
        self.r.hdel(self.config_key, queue)
        self._configs_at = 0.0

    def overview(self) -> list[dict[str, Any]]:
        """Every queue's :meth:`stats` with its settings."""
        return [self.stats(name) | {
            "type": c.type, "concurrency": c.concurrency, "max_retries": c.max_retries,
            "backoff_ms": c.backoff_ms, "topic": c.topic}
            for name, c in sorted(self.configs(fresh=True).items())]

    def stats(self, queue: str) -> dict[str, Any]:
        """Depth (waiting to run), in flight, delayed and dead letters (``dead``), as they
        are now, and the running totals ``enqueued``, ``completed``, ``retried`` and
        ``dead_total`` (jobs that ever died here, redriven or discarded since or not)."""
        functions = sorted(self.r.smembers(self.qkey(queue, "functions")))
        active = list(self.r.smembers(self.qkey(queue, "active")))
        pipe = self.r.pipeline(transaction=False)
        for fid in functions:
            pipe.llen(self.list_key(queue, fid))
        for group in active:
            pipe.llen(self.qkey(queue, f"g:{group}"))
        pipe.get(self.qkey(queue, "running"))
        pipe.zcard(self.qkey(queue, "delayed"))
        pipe.zcard(self.qkey(queue, "dlq:index"))
        pipe.hgetall(self.qkey(queue, "stats"))
        res = pipe.execute()
        lists = res[:len(functions)]
        groups = res[len(functions):len(functions) + len(active)]
        running, delayed, dead, counters = res[len(functions) + len(active):]
        running = max(int(running or 0), 0)
        delayed = int(delayed)
        # A FIFO group's list holds its running (or retrying) job too, at its head.
        fifo_jobs = sum(groups)
        depth = sum(lists) + (max(fifo_jobs - running - delayed, 0) if fifo_jobs else 0)
        if self.broker is not None and functions:
            depth += self.broker.depth(queue, functions)
        # The counters are running totals since the queue was first used; ``dead`` is the
        # dead letters there are now (redrive and discard take them away), so the total
        # of jobs that died is ``dead_total``.
        totals = {k if k != "dead" else "dead_total": int(v) for k, v in counters.items()}
        return {**dict(sorted(totals.items())), "queue": queue, "depth": depth,
                "in_flight": running, "delayed": delayed, "dead": int(dead),
                "groups": len(active)}


# -- the message ----------------------------------------------------------------------


def job_message(ns: str, queue: str, function_id: str, inv: Invocation,
                headers: dict[str, Any]) -> str:
    """The Kombu message (Redis transport envelope) of a job: body left as readable JSON."""
    headers = dict(headers)
    headers.setdefault("enqueued_at", now_ms())
    return envelope.encode(inv.to_json(), exchange=Keys(ns).function_exchange(function_id),
                           routing_key=f"q.{queue}", headers=headers,
                           correlation_id=inv.invocation_id, delivery_mode=2,
                           delivery_tag=inv.invocation_id, base64_body=False)


def parse_job(tag: str, queue: str, raw: str, limits: Limits | None = None) -> Job:
    """Parse a claimed message; raises :class:`PayloadError` when it is not one of ours
    (:class:`PayloadLimitExceeded` when it is larger or deeper than ``limits``)."""
    parsed = envelope.decode(raw)
    inv = Invocation.from_body(parsed.body, parsed.content_type, limits)
    return Job(tag, queue, raw, inv, parsed.headers)


def failure_outcome(config: QueueConfig, tag: str, raw: str, job: Job | None, error: IIIError,
                    started_at: int | None = None, *, final: bool = False) -> Outcome:
    """What to do with a job whose attempt failed: retry after its backoff, or, after
    ``max_retries`` retries (or when ``final``, or when it cannot be parsed at all),
    dead-letter it."""
    if job is not None and not final and job.invocation.attempt < config.max_attempts:
        attempt = job.invocation.attempt
        due = now_ms() + config.backoff_for(attempt)
        return Outcome(Settle.RETRY, tag, due_ms=due, message=with_attempt(raw, attempt + 1))
    inv = job.invocation if job is not None else None
    message_id = inv.invocation_id if inv is not None else tag
    record = {
        "message_id": message_id, "queue": config.name,
        "function_id": inv.function_id if inv else None,
        "payload": inv.payload if inv else None, "metadata": inv.metadata if inv else {},
        "attempts": inv.attempt if inv else 1, "error": error.to_dict(),
        "enqueued_at": job.headers.get("enqueued_at") if job else None,
        "last_attempt_at": started_at, "failed_at": now_ms(),
        "message": raw,
    }
    return Outcome(Settle.DEAD, tag, message_id=message_id,
                   record=json.dumps(record, separators=(",", ":")))


def with_attempt(raw: str, attempt: int) -> str:
    """The same message with its invocation's ``attempt`` set; raises :class:`PayloadError`
    (or ValueError for a body that is not JSON) when it is not a job message."""
    body = json.loads(envelope.decode(raw).body)
    body["attempt"] = attempt
    return envelope.with_body(raw, json.dumps(body, separators=(",", ":")))
