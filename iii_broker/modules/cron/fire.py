"""Firing a cron job: its payload, its condition, its overlap rule, the call, its outcome.

A fire is an ordinary call of the job's function through its exchange (or a job in the
trigger's ``queue``, for that queue's retries and dead letters) with iii's payload
``{trigger: "cron", job_id, scheduled_time, actual_time}`` (RFC 3339). The beat waits for
each run's answer on an asyncio loop of its own, so a run of any length never holds the
schedule up, and records the outcome in ``NS:cron:status:<job id>``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ...client import Caller, Enqueue
from ...errors import IIIError
from ...outage import is_outage, store_outage
from ...settings import Settings
from ...store import Keys, RedisError
from .entries import Job
from .schedule import utcnow

log = logging.getLogger("iii.beat")

OUTCOMES_KEPT = 10_000
"""Outcomes kept for writing through a Redis outage (older ones are dropped)."""
FLUSH_S = 0.1
"""How often the beat writes the outcomes of finished runs."""
RUNNING_EXTRA_MS = 5_000
"""A run's overlap marker outlives its timeout by this much (then it is surely over)."""


def rfc3339(t: datetime) -> str:
    """``2026-12-01T18:40:00Z``, with milliseconds when ``t`` has them."""
    t = t.astimezone(UTC)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Fire:
    """One run of a job: the slot it is for (its time of firing is taken as it is sent)."""

    job: Job
    scheduled: datetime

    def payload(self, actual: datetime) -> dict[str, Any]:
        return {"trigger": "cron", "job_id": self.job.job_id,
                "scheduled_time": rfc3339(self.scheduled), "actual_time": rfc3339(actual)}


class Firing:
    """Runs fires and records their outcomes (one per beat process, or per ``cron run``)."""

    def __init__(self, settings: Settings, caller: Caller) -> None:
        self.settings = settings
        self.caller = caller
        self.store = caller.store
        self.keys = Keys(settings.namespace)
        self._outcomes: list[tuple[str, dict[str, str], str]] = []
        self._lock = threading.Lock()

    async def run(self, fire: Fire) -> dict[str, str]:
        """Run one fire to its end; returns its outcome as recorded (``outcome`` is ``ok``,
        ``enqueued``, ``failed``, ``skipped_overlap`` or ``skipped_condition``)."""
        job, config = fire.job, fire.job.config
        timeout_ms = int(config.get("timeout_ms") or self.settings.default_timeout_ms)
        marker = None
        if config.get("overlap") == "skip":
            marker = uuid.uuid4().hex
            if not self.store.set(self.keys.cron_running(job.job_id), marker, nx=True,
                                  px=timeout_ms + RUNNING_EXTRA_MS):
                log.info("cron job %s: slot %s skipped, its previous run is still running",
                         job.job_id, rfc3339(fire.scheduled))
                return self._record(fire, utcnow(), "skipped_overlap", count="skipped_overlap")
        started = time.monotonic()
        actual = utcnow()
        payload = fire.payload(actual)
        try:
            condition = config.get("condition_function_id")
            if condition and not await self.caller.acall(condition, payload,
                                                         timeout_ms=timeout_ms):
                return self._record(fire, actual, "skipped_condition", count="skipped_condition")
            if config.get("queue"):
                receipt = self.caller.call(job.function_id, payload,
                                           action=Enqueue(config["queue"]))
                return self._record(fire, actual, "enqueued", count="runs",
                                    detail=receipt.get("messageReceiptId"))
            await self.caller.acall(job.function_id, payload, timeout_ms=timeout_ms)
            return self._record(fire, actual, "ok", count="runs", started=started)
        except IIIError as exc:
            log.warning("cron job %s (%s), slot %s: %s: %s", job.job_id, job.function_id,
                        rfc3339(fire.scheduled), exc.code, exc.message)
            return self._record(fire, actual, "failed", count="runs", started=started,
                                error=f"{exc.code}: {exc.message}")
        finally:
            if marker is not None:
                self._clear_marker(job.job_id, marker)

    def _record(self, fire: Fire, actual: datetime, outcome: str, *, count: str,
                started: float | None = None, error: str | None = None,
                detail: str | None = None) -> dict[str, str]:
        """Note a run's outcome; it reaches Redis with the next :meth:`flush`."""
        status: dict[str, str] = {
            "last_scheduled_time": rfc3339(fire.scheduled),
            "last_actual_time": rfc3339(actual),
            "last_outcome": outcome,
            "last_error": error or "",
            "last_duration_ms": "" if started is None else
            str(round((time.monotonic() - started) * 1000)),
            "last_detail": detail or "",
        }
        with self._lock:
            self._outcomes.append((fire.job.job_id, status, count))
        return dict(status, job_id=fire.job.job_id, outcome=outcome)

    def flush(self) -> None:
        """Write the outcomes noted since the last flush, in one pipeline. Through a Redis
        outage they are kept (at most :data:`OUTCOMES_KEPT`) and written once it is back."""
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        if not outcomes:
            return
        try:
            pipe = self.store.pipeline(transaction=False)
            for job_id, status, count in outcomes:
                pipe.hset(self.keys.cron_status(job_id), mapping=dict[Any, Any](status))
                pipe.hincrby(self.keys.cron_status(job_id), count, 1)
            pipe.execute()
        except RedisError as exc:
            store_outage(self.settings).failed(exc)
            with self._lock:
                self._outcomes[:0] = outcomes[-OUTCOMES_KEPT:]

    def _clear_marker(self, job_id: str, marker: str) -> None:
        try:
            key = self.keys.cron_running(job_id)
            if self.store.get(key) == marker:
                self.store.delete(key)
        except RedisError:
            pass  # it expires with the run's timeout


class Dispatcher:
    """Runs fires as the scheduler hands them over, on ``loops`` asyncio loops in threads of
    the beat (taking turns, so that sending one call never waits on sending another), at
    most ``limit`` per loop at once; a thread writes the outcomes every :data:`FLUSH_S`."""

    def __init__(self, firing: Firing, loops: int = 4, limit: int = 1_000) -> None:
        self.firing = firing
        self._loops = [_Loop(f"iii-cron-fire-{n}", limit) for n in range(loops)]
        self._turn = 0
        self._running: set[Future[Any]] = set()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_every, name="iii-cron-outcomes",
                                         daemon=True)

    def start(self) -> None:
        for loop in self._loops:
            loop.start()
        self._flusher.start()

    def _flush_every(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.firing.flush()
        self.firing.flush()

    def submit(self, fires: list[Fire]) -> None:
        for fire in fires:
            self._turn = (self._turn + 1) % len(self._loops)
            loop = self._loops[self._turn]
            fut = asyncio.run_coroutine_threadsafe(self._guarded(loop, fire), loop.loop)
            self._running.add(fut)
            fut.add_done_callback(self._running.discard)

    async def _guarded(self, loop: _Loop, fire: Fire) -> dict[str, Any]:
        async with loop.gate:
            try:
                return await self.firing.run(fire)
            except Exception as exc:  # a fire's trouble never stops the loop
                if is_outage(exc):
                    store_outage(self.firing.settings).failed(exc)
                else:
                    log.exception("cron job %s: firing failed", fire.job.job_id)
                return {"job_id": fire.job.job_id, "outcome": "failed", "last_error": str(exc)}

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def stop(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for runs in flight to be answered, then stop the loops (the
        calls already published still run; only their outcomes go unrecorded)."""
        deadline = time.monotonic() + wait_s
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        for loop in self._loops:
            loop.stop()
        self._stop.set()
        self._flusher.join(timeout=5)


class _Loop:
    """One asyncio loop running in a thread of its own."""

    def __init__(self, name: str, limit: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.gate = asyncio.Semaphore(limit)  # bound to the loop when first used there
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=2)
