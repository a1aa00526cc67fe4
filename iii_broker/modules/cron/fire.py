"""Firing a cron job: its payload, its condition, its overlap rule, the call, its outcome.

A fire is an ordinary call of the job's function through its exchange (or a job in the
trigger's ``queue``, for that queue's retries and dead letters) with iii's payload
``{trigger: "cron", job_id, scheduled_time, actual_time}`` (RFC 3339). The beat does not
wait for a run: the answer resolves a future (:meth:`Caller.submit`) whose callback records
the outcome in ``NS:cron:status:<job id>``, so a run of any length holds nothing up, and a
burst of fires costs a publish each.
"""

from __future__ import annotations

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
from ...observe import METRICS, triggered_by
from ...outage import is_outage, store_outage
from ...settings import Settings
from ...store import Keys, RedisError
from ...tracing import SpanContext, continuing, producer_span
from .codec import utcnow
from .entries import Job

log = logging.getLogger("iii.cron")

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
    """Starts fires and records their outcomes (one per beat process, or per ``cron run``)."""

    def __init__(self, settings: Settings, caller: Caller) -> None:
        self.settings = settings
        self.caller = caller
        self.store = caller.store
        self.keys = Keys(settings.namespace)
        self._outcomes: list[tuple[str, dict[str, str], str]] = []
        self._lock = threading.Lock()

    def fire(self, fire: Fire) -> Future[dict[str, str]]:
        """Start one run (publishing it, or its condition, before returning); the future
        gets the outcome as recorded once it is known (``outcome`` is ``ok``, ``enqueued``,
        ``failed``, ``skipped_overlap`` or ``skipped_condition``). Never raises."""
        return _Run(self, fire).start()

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

    def clear_marker(self, job_id: str, marker: str) -> None:
        """End a run's overlap marker, if it is still that run's."""
        try:
            key = self.keys.cron_running(job_id)
            if self.store.get(key) == marker:
                self.store.delete(key)
        except RedisError:
            pass  # it expires with the run's timeout


class _Run:
    """One fire on its way: overlap marker, condition, call, outcome."""

    def __init__(self, firing: Firing, fire: Fire) -> None:
        self.firing, self.fire = firing, fire
        self.config = fire.job.config
        self.timeout_ms = int(self.config.get("timeout_ms") or firing.settings.default_timeout_ms)
        self.outcome: Future[dict[str, str]] = Future()
        self.marker: str | None = None
        self.payload: dict[str, Any] = {}
        self.actual = utcnow()
        self.started = time.monotonic()
        self.span: SpanContext | None = None

    def start(self) -> Future[dict[str, str]]:
        # The fire is a span (when tracing is on) that the function's run continues.
        job = self.fire.job
        with producer_span(f"cron {job.job_id}", {
                "iii.cron.job_id": job.job_id, "iii.function_id": job.function_id,
                "iii.trigger_type": "cron", "iii.cron.scheduled_time": rfc3339(self.fire.scheduled),
        }) as self.span:
            return self._start()

    def _start(self) -> Future[dict[str, str]]:
        try:
            if self.config.get("overlap") == "skip":
                marker = uuid.uuid4().hex
                key = self.firing.keys.cron_running(self.fire.job.job_id)
                if not self.firing.store.set(key, marker, nx=True,
                                             px=self.timeout_ms + RUNNING_EXTRA_MS):
                    log.info("cron job %s: slot %s skipped, its previous run is still running",
                             self.fire.job.job_id, rfc3339(self.fire.scheduled))
                    self._finish("skipped_overlap", count="skipped_overlap", timed=False)
                    return self.outcome
                self.marker = marker
            self.actual = utcnow()
            self.payload = self.fire.payload(self.actual)
            condition = self.config.get("condition_function_id")
            if condition:
                with triggered_by("cron"):
                    fut = self.firing.caller.submit(condition, self.payload,
                                                    timeout_ms=self.timeout_ms)
                self._after(fut, self._on_condition)
            else:
                self._call()
        except Exception as exc:  # noqa: BLE001 - every failure is this run's outcome
            self._failed(exc)
        return self.outcome

    def _after(self, fut: Future[Any], then: Any) -> None:
        def done(f: Future[Any]) -> None:
            try:
                with continuing(self.span):  # the function's call, on the reply thread
                    then(f.result())
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
        fut.add_done_callback(done)

    def _on_condition(self, allowed: Any) -> None:
        if not allowed:
            self._finish("skipped_condition", count="skipped_condition")
        else:
            self._call()

    def _call(self) -> None:
        with triggered_by("cron"):
            self._call_function()

    def _call_function(self) -> None:
        job = self.fire.job
        if self.config.get("queue"):
            receipt = self.firing.caller.call(job.function_id, self.payload,
                                              action=Enqueue(self.config["queue"]))
            self._finish("enqueued", detail=receipt.get("messageReceiptId"))
            return
        self._after(self.firing.caller.submit(job.function_id, self.payload,
                                              timeout_ms=self.timeout_ms),
                    lambda _result: self._finish("ok"))

    def _failed(self, exc: BaseException) -> None:
        job = self.fire.job
        if isinstance(exc, IIIError):
            error = f"{exc.code}: {exc.message}"
        else:
            if is_outage(exc):
                store_outage(self.firing.settings).failed(exc)
            error = f"{type(exc).__name__}: {exc}"
        log.warning("cron job %s (%s), slot %s: %s", job.job_id, job.function_id,
                    rfc3339(self.fire.scheduled), error)
        self._finish("failed", error=error)

    def _finish(self, outcome: str, *, count: str = "runs", timed: bool = True,
                error: str | None = None, detail: str | None = None) -> None:
        if self.outcome.done():
            return
        if self.marker is not None:
            self.firing.clear_marker(self.fire.job.job_id, self.marker)
        if count == "runs":
            METRICS.inc("iii_cron_fires_total", {"function": self.fire.job.function_id,
                                                 "outcome": outcome})
        else:
            METRICS.inc("iii_cron_skipped_total", {"function": self.fire.job.function_id,
                                                   "reason": count.removeprefix("skipped_")})
        self.outcome.set_result(self.firing._record(
            self.fire, self.actual, outcome, count=count,
            started=self.started if timed else None, error=error, detail=detail))

class Dispatcher:
    """Hands the scheduler's fires to :class:`Firing` and keeps track of the runs in flight;
    a thread writes their outcomes every :data:`FLUSH_S`."""

    def __init__(self, firing: Firing) -> None:
        self.firing = firing
        self._running: set[Future[dict[str, str]]] = set()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_every, name="iii-cron-outcomes",
                                         daemon=True)

    def start(self) -> None:
        self._flusher.start()

    def _flush_every(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.firing.flush()
        self.firing.flush()

    def submit(self, fires: list[Fire]) -> None:
        """Start each fire now: their calls go out in one write as this returns."""
        with self.firing.caller.batched():
            for fire in fires:
                fut = self.firing.fire(fire)
                self._running.add(fut)
                fut.add_done_callback(self._running.discard)

    def stop(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for runs in flight to be answered, then write the outcomes
        (the calls already published still run; only late outcomes go unrecorded)."""
        deadline = time.monotonic() + wait_s
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._flusher.join(timeout=5)
