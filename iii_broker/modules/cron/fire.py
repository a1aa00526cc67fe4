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
from collections.abc import Callable
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

    def _record(self, fire: Fire, actual: datetime, outcome: str, *, count: str, started: float | None = None,
                error: str | None = None, detail: str | None = None) -> dict[str, str]:
        status: dict[str, str] = {
            "last_scheduled_time": rfc3339(fire.scheduled),
            "last_actual_time": rfc3339(actual),
            "last_outcome": outcome,
            "last_error": error or "",
            "last_duration_ms": "" if started is None else
            str(round((time.monotonic() - started) * 1000)),
            "last_detail": detail or "",
        }
        try:
            pipe = self.store.pipeline(transaction=False)
            pipe.hset(self.keys.cron_status(fire.job.job_id), mapping=dict[Any, Any](status))
            pipe.hincrby(self.keys.cron_status(fire.job.job_id), count, 1)
            pipe.execute()
        except RedisError as exc:
            store_outage(self.settings).failed(exc)
        return dict(status, job_id=fire.job.job_id, outcome=outcome)

    def _clear_marker(self, job_id: str, marker: str) -> None:
        try:
            key = self.keys.cron_running(job_id)
            if self.store.get(key) == marker:
                self.store.delete(key)
        except RedisError:
            pass  # it expires with the run's timeout


class Dispatcher:
    """An asyncio loop in a thread of the beat, running fires as the scheduler hands them
    over; at most ``limit`` at once (more wait their turn)."""

    def __init__(self, firing: Firing, limit: int = 2_000) -> None:
        self.firing = firing
        self.loop = asyncio.new_event_loop()
        self._limit = limit
        self._gate: asyncio.Semaphore | None = None
        self._running: set[Future[Any]] = set()
        self._thread = threading.Thread(target=self._run_loop, name="iii-cron-fire", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._gate = asyncio.Semaphore(self._limit)
        self.loop.run_forever()

    def submit(self, fires: list[Fire], done: Callable[[dict[str, Any]], None] | None = None
               ) -> None:
        for fire in fires:
            fut = asyncio.run_coroutine_threadsafe(self._guarded(fire), self.loop)
            self._running.add(fut)
            fut.add_done_callback(self._running.discard)
            if done is not None:
                fut.add_done_callback(lambda f: f.exception() is None and done(f.result()))

    async def _guarded(self, fire: Fire) -> dict[str, Any]:
        while self._gate is None:
            await asyncio.sleep(0.01)
        async with self._gate:
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
        """Wait up to ``wait_s`` for runs in flight to be answered, then stop the loop (the
        calls already published still run; only their outcomes go unrecorded)."""
        deadline = time.monotonic() + wait_s
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=2)
