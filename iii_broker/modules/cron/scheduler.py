"""The beat's scheduler: RedBeat's, with a lock that fails over in seconds and slots that
fire once.

Celery beat calls :meth:`CronScheduler.tick` in a loop and sleeps for what it returns.
Each tick:

1. **Leadership.** The beat takes or renews ``NS:redbeat::lock`` (PX ``lock_timeout_s``,
   default 10 s). A beat without it stands by and tries again every
   ``standby_interval_s``; one that finds the lock gone or taken stands by too (RedBeat
   exits instead, and waits on a supervisor). Only the leader goes on.
2. **Due entries**: the schedule's members scored up to now, :data:`CHUNK` at a time, each
   read and given a :func:`~.slots.plan`.
3. **Claims**: each slot to fire is claimed with ``SET NX`` on
   ``NS:cron:claim:<job id>:<slot ms>``, so not even two leaders (a handover, a paused
   beat waking up) fire a slot twice. Only claimed slots are handed to the
   :class:`~.fire.Dispatcher`, at once.
4. **Advance** every planned entry's ``last_run_at`` to the slot it handled and its score
   to its next slot, counting skipped slots in its status.

It returns the time until the next scored entry, at most ``max_interval``.

Beside the ticks, a thread of the leader **reconciles** the entries with the registry
(:mod:`.entries`) when the registry announces a change on ``NS:events``, when
leadership was just taken, and every :data:`RECONCILE_S` regardless (which also finds
entries Redis lost), so that comparing thousands of entries never delays a fire.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery.beat import Scheduler
from redbeat.schedulers import RedBeatScheduler

from ...observe import METRICS
from ...outage import Backoff, store_outage
from ...registry import Registry
from ...settings import Settings
from ...store import Keys, RedisError
from .codec import utcnow
from .entries import Entries, Loaded, cron_jobs, meta_json
from .fire import Dispatcher, Fire, rfc3339
from .options import BeatOptions
from .schedule import CronEntry
from .slots import plan

log = logging.getLogger("iii.beat")

RECONCILE_S = 30.0
"""The longest the entries go without a full comparison with the registry (registry
changes are taken in as they are announced; this pass finds what Redis lost)."""
RECONCILE_MIN_S = 0.5
"""Registry changes are taken in at most this often (a burst of registrations is one pass)."""
CHUNK = 100
"""Due entries handled at a time: read, planned, claimed and sent before the next chunk."""
DEFAULT_GRACE_S = 3600.0
CLAIM_EXTRA_MS = 600_000
"""A slot's claim outlives the latest a beat would still fire it by this much."""


@dataclass
class BeatRuntime:
    """What the scheduler needs that Celery does not give it (set on the Celery app as
    ``app.iii_beat`` before beat starts)."""

    settings: Settings
    options: BeatOptions
    store: Any
    dispatcher: Dispatcher
    beat_id: str = ""

    def __post_init__(self) -> None:
        self.beat_id = self.beat_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def catch_up_grace(config: dict[str, Any]) -> timedelta | None:
    """How late a ``misfire: "catch_up_once"`` trigger's missed slot may still fire
    (``misfire_grace_s``, default :data:`DEFAULT_GRACE_S`); None for other triggers."""
    if config.get("misfire") != "catch_up_once":
        return None
    return timedelta(seconds=float(config.get("misfire_grace_s") or DEFAULT_GRACE_S))


class CronScheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat's scheduler for ``cron`` triggers (see the module docstring)."""

    Entry = CronEntry

    def __init__(self, app: Any, **kwargs: Any) -> None:
        self.rt: BeatRuntime = app.iii_beat
        self.keys = Keys(self.rt.settings.namespace)
        self.r = self.rt.store
        self.registry = Registry(self.r, self.rt.settings.namespace)
        self.entries = Entries(self.r, self.keys)
        self.leading = False
        self._remembered: set[str] = set()
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._backoff = Backoff()
        super().__init__(app, **kwargs)
        self.lock_key = None  # our own lock (below): RedBeat's blocks at start and exits on loss
        self.lock_timeout = self.rt.options.lock_timeout_s
        # Beside the ticks, so that comparing thousands of entries never delays a fire.
        for target, name in ((self._listen, "iii-beat-events"),
                             (self._reconcile_loop, "iii-beat-reconcile")):
            threading.Thread(target=target, name=name, daemon=True).start()

    # -- Celery's scheduler interface --------------------------------------------------

    def setup_schedule(self) -> None:
        """No static schedule: every entry comes from the registry."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            interval = self._tick()
        except RedisError as exc:
            store_outage(self.rt.settings).failed(exc)
            if self.leading:
                log.warning("beat %s: Redis failed while leading; standing by until it is back",
                            self.rt.beat_id)
            self.leading = False
            return self._backoff.next()
        self._backoff.reset()
        store_outage(self.rt.settings).recovered()
        return interval

    def close(self) -> None:
        self._stopping.set()
        self._dirty.set()  # wakes the reconciler to see it
        if self.leading:
            try:
                self.registry.release(self.keys.beat_lock, self.rt.beat_id)
                log.info("beat %s: released the lock", self.rt.beat_id)
            except RedisError:
                pass
            self.leading = False
        Scheduler.close(self)

    @property
    def info(self) -> str:
        return (f"       . redis -> {self.keys.beat_schedule}\n"
                f"       . lock -> {self.keys.beat_lock} ({self.rt.options.lock_timeout_s}s)")

    # -- one tick -----------------------------------------------------------------------

    def _tick(self) -> float:
        if not self._lead():
            return self.rt.options.standby_interval_s
        return self.run_due()

    def _lead(self) -> bool:
        held = self.registry.acquire(self.keys.beat_lock, self.rt.beat_id,
                                     int(self.rt.options.lock_timeout_s * 1000))
        if held and not self.leading:
            log.info("beat %s: leading (lock %s)", self.rt.beat_id, self.keys.beat_lock)
            self._dirty.set()  # whatever changed while another beat led
        elif not held and self.leading:
            owner = self.r.get(self.keys.beat_lock)
            log.warning("beat %s: lost the lock%s; standing by", self.rt.beat_id,
                        f" to {owner}" if owner else "")
        if not held:  # another beat leads: what this one knew of the entries goes stale
            self._remembered = set()
        self.leading = held
        return held

    def reconcile(self) -> None:
        """Bring the entries in step with the registry (see :mod:`.entries`)."""
        jobs = cron_jobs(self.registry.triggers())
        self._report_vanished()
        report = self.entries.sync(jobs, remove_others=True, remembered=self._remembered)
        # Kept across a registry that lost them too (Redis restarted empty: the registry is
        # empty until workers register again); forgotten once this beat removed them.
        self._remembered = (self._remembered | {job.job_id for job, _ in jobs}) \
            - set(report.removed)

    def _reconcile_loop(self) -> None:
        """While leading: reconcile when the registry announced a change (at most every
        :data:`RECONCILE_MIN_S`), when leadership was just taken, and every
        :data:`RECONCILE_S` regardless."""
        backoff = Backoff()
        while not self._stopping.is_set():
            self._dirty.wait(RECONCILE_S)
            if self._stopping.is_set():
                return
            if not self.leading:
                self._dirty.clear()  # taking the lead sets it again
                continue
            self._stopping.wait(RECONCILE_MIN_S)  # a burst of changes is one pass
            self._dirty.clear()
            try:
                self.reconcile()
                backoff.reset()
            except RedisError as exc:  # the tick reports the outage; try again after it
                store_outage(self.rt.settings).failed(exc)
                self._dirty.set()
                self._stopping.wait(backoff.next())

    def _report_vanished(self) -> None:
        """Log the entries this beat knew of that Redis no longer lists in ``NS:cron:known``
        (only this beat, while leading, removes ids from it): Redis lost them, and whoever
        registers their triggers again (the engine, as workers re-register) creates them
        anew, as if new, so it must be said here, once."""
        if not self._remembered:
            return
        vanished = sorted(self._remembered - set(self.r.smembers(self.keys.cron_known)))
        if vanished:
            log.error("cron job(s) %s: their RedBeat entries vanished (evicted, or Redis "
                      "restarted without persistence); each is re-created from the registry "
                      "when its trigger is registered again, its last run and counts are lost",
                      ", ".join(vanished[:20]) + (f" (+{len(vanished) - 20} more)"
                                                  if len(vanished) > 20 else ""))
            self._remembered -= set(vanished)

    def run_due(self) -> float:
        """Fire what is due; returns the seconds until the next entry is due."""
        now_s = time.time()
        pipe = self.r.pipeline(transaction=False)
        pipe.zrangebyscore(self.keys.beat_schedule, 0, now_s)
        pipe.zrangebyscore(self.keys.beat_schedule, f"({now_s}", "+inf", start=0, num=1,
                           withscores=True)
        due, upcoming = pipe.execute()
        for i in range(0, len(due), CHUNK):  # the first fires go while the rest is read
            chunk = due[i:i + CHUNK]
            self._handle(self.entries.load(chunk), missing=chunk)
        wait = self.rt.options.max_interval_s
        if upcoming:
            wait = min(wait, max(upcoming[0][1] - time.time(), 0.0))
        return wait

    def _handle(self, loaded: list[Loaded], missing: list[str]) -> None:
        now = utcnow()
        threshold = timedelta(milliseconds=self.rt.options.misfire_threshold_ms)
        gone = set(missing) - {e.key for e in loaded}
        planned: list[tuple[Loaded, Any]] = []
        for entry in loaded:
            if not entry.enabled:
                continue
            p = plan(entry.cron, entry.last_run_at or now, now, threshold=threshold,
                     catch_up_grace=catch_up_grace(entry.job.config))
            planned.append((entry, p))
        claims = self._claim([(e.job.job_id, p.fire, self._claim_ttl_ms(e)) for e, p in planned
                              if p.fire is not None])
        fires: list[Fire] = []
        pipe = self.r.pipeline(transaction=False)
        for entry, p in planned:
            job_id = entry.job.job_id
            if p.fire is not None and claims.get((job_id, p.fire)):
                fires.append(Fire(entry.job, p.fire))
            if p.skipped:
                pipe.hincrby(self.keys.cron_status(job_id), "skipped_misfire", p.skipped)
                METRICS.inc("iii_cron_skipped_total", {"function": entry.job.function_id,
                                                       "reason": "misfire"}, p.skipped)
                log.warning("cron job %s: %d slot(s) up to %s skipped: no beat was leading "
                            "then (misfire)", job_id, p.skipped, rfc3339(p.handled or now))
            last = p.handled or entry.last_run_at or now
            if p.handled is not None or entry.last_run_at is None:
                fired = entry.total_run_count + (1 if p.fire is not None else 0)
                pipe.hset(entry.key, "meta", meta_json(last, fired))
            score = -1.0 if p.next_slot is None else p.next_slot.timestamp()
            pipe.zadd(self.keys.beat_schedule, {entry.key: score}, xx=True)
        for key in gone:  # a member whose entry hash vanished: the reconcile re-creates it
            pipe.zrem(self.keys.beat_schedule, key)
            self._dirty.set()
        self.rt.dispatcher.submit(fires)  # claimed: they go now, whatever the bookkeeping does
        pipe.execute()

    def _claim_ttl_ms(self, entry: Loaded) -> int:
        """Longer than any beat would still fire the slot: past it, no plan picks it again."""
        grace = catch_up_grace(entry.job.config)
        late_ms = max(0.0 if grace is None else grace.total_seconds() * 1000,
                      self.rt.options.misfire_threshold_ms)
        return int(late_ms) + CLAIM_EXTRA_MS

    def _claim(self, slots: list[tuple[str, datetime, int]]) -> dict[tuple[str, datetime], bool]:
        """Claim each (job, slot) once in Redis; True for the ones this beat won."""
        out: dict[tuple[str, datetime], bool] = {}
        for i in range(0, len(slots), 500):
            chunk = slots[i:i + 500]
            pipe = self.r.pipeline(transaction=False)
            for job_id, slot, ttl in chunk:
                pipe.set(self.keys.cron_claim(job_id, int(slot.timestamp() * 1000)), self.rt.beat_id,
                         nx=True, px=ttl)
            for (job_id, slot, _), won in zip(chunk, pipe.execute(), strict=True):
                out[(job_id, slot)] = bool(won)
        return out

    # -- registry events ----------------------------------------------------------------

    def _listen(self) -> None:
        """Mark the entries dirty on every registry change (a worker came, went, or changed
        what it declares), so the leader's reconciler takes it in."""
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                pubsub = self.r.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.keys.events)
                self._dirty.set()  # changes while we were not listening
                backoff.reset()
                while not self._stopping.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        self._dirty.set()  # any registry event may change what is active
            except RedisError:
                self._stopping.wait(backoff.next())
