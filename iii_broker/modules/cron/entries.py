"""The RedBeat entries of cron triggers: one per trigger, kept in step with the registry.

An entry is RedBeat's hash ``NS:redbeat:<trigger id>`` (``definition`` and ``meta``, JSON)
plus its member in ``NS:redbeat::schedule``, scored by the next slot (Unix seconds). What
the registry says decides everything:

- a trigger that is **active** (its function has a live worker) has an enabled entry;
- an **inactive** one keeps its entry, disabled (score -1, so no beat loads it); when it is
  active again it starts from that moment: slots missed meanwhile are not fired;
- a **removed** trigger's entry goes, with its status.

A new entry, and one whose expression or time zone changed, starts at "now": nothing
fires on creation unless its first slot has come (RedBeat fires a fresh crontab entry at
once; we do not). ``NS:cron:known`` lists the triggers that have entries, so an entry
that vanished (evicted, or Redis restarted without persistence) is told from a new one,
logged as an error, and re-created.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from ...store import Keys
from .codec import dumps, loads, parsed, schedule_json, utcnow
from .expression import CronExpression

log = logging.getLogger("iii.cron")

CRON = "cron"
TASK = "iii.cron"
"""The task name entries carry for RedBeat's sake; the beat publishes iii calls, not tasks."""
BATCH = 500
"""Entries read or written per pipeline: no single round trip holds Redis for long."""


@dataclass(frozen=True)
class Job:
    """A cron trigger as the beat schedules it (``job_id`` is the trigger id)."""

    job_id: str
    function_id: str
    config: dict[str, Any]

    @classmethod
    def of(cls, trigger: dict[str, Any]) -> Job:
        return cls(trigger["id"], trigger["function_id"], dict(trigger.get("config") or {}))

    @property
    def cron(self) -> CronExpression:
        return parsed(self.config["expression"], self.config.get("timezone"))

    def definition(self, enabled: bool) -> dict[str, Any]:
        """RedBeat's definition of this job's entry."""
        return {"name": self.job_id, "task": TASK, "schedule": schedule_json(self.cron),
                "args": [], "kwargs": {"function_id": self.function_id, "config": self.config},
                "options": {}, "enabled": enabled}


@dataclass
class Loaded:
    """An entry as read from Redis."""

    key: str
    job: Job
    enabled: bool
    cron: CronExpression
    last_run_at: datetime | None
    total_run_count: int


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@lru_cache(maxsize=16_384)
def _definition(definition: str) -> tuple[Job, bool, CronExpression]:
    """A definition's job, whether it is enabled, and its expression. Remembered: the beat
    reads the same definitions on every tick (their config is never mutated)."""
    d = loads(definition)
    cron = d["schedule"]
    if not isinstance(cron, CronExpression):
        raise ValueError(f"its schedule is not a cron schedule: {cron!r}")
    kwargs = d.get("kwargs") or {}
    job = Job(d["name"], kwargs["function_id"], kwargs.get("config") or {})
    return job, bool(d.get("enabled", True)), cron


def score_of(cron: CronExpression, last_run_at: datetime, enabled: bool) -> float:
    """An entry's score in the schedule: its next slot (Unix s), -1 when it never loads."""
    if not enabled:
        return -1.0
    nxt = cron.next_after(last_run_at)
    return -1.0 if nxt is None else nxt.timestamp()


def meta_json(last_run_at: datetime, total_run_count: int) -> str:
    return dumps({"last_run_at": last_run_at, "total_run_count": total_run_count})


class Entries:
    """Reads and writes the RedBeat entries of one namespace."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.r = client
        self.keys = keys

    # -- reading --------------------------------------------------------------------

    def load(self, keys: list[str]) -> list[Loaded]:
        """The entries stored under ``keys`` (in batches); missing or unreadable ones are
        skipped (unreadable ones logged)."""
        out: list[Loaded] = []
        for i in range(0, len(keys), BATCH):
            chunk = keys[i:i + BATCH]
            pipe = self.r.pipeline(transaction=False)
            for key in chunk:
                pipe.hmget(key, "definition", "meta")
            for key, (definition, meta) in zip(chunk, pipe.execute(), strict=True):
                if not definition:
                    continue
                try:
                    out.append(self._decode(key, definition, meta))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("RedBeat entry %s cannot be read (%s); the next reconcile "
                              "rewrites it from the registry", key, exc)
        return out

    def _decode(self, key: str, definition: str, meta: str | None) -> Loaded:
        job, enabled, cron = _definition(definition)
        m = loads(meta) if meta else {}
        return Loaded(key, job, enabled, cron, m.get("last_run_at"),
                      int(m.get("total_run_count") or 0))

    # -- writing --------------------------------------------------------------------

    def sync(self, jobs: list[tuple[Job, bool]], *, remove_others: bool = False,
             remembered: set[str] | None = None) -> SyncReport:
        """Make the entries of ``jobs`` (each with whether it is active) match them; with
        ``remove_others``, delete the entries of every other trigger (the registry no longer
        has them). ``remembered``: ids this process knew had entries (besides
        ``NS:cron:known``), so that a vanished entry is reported even when Redis lost the
        whole store."""
        report = SyncReport()
        now = utcnow()
        known = set(self.r.smembers(self.keys.cron_known)) | (remembered or set())
        for i in range(0, len(jobs), BATCH):
            chunk = jobs[i:i + BATCH]
            pipe = self.r.pipeline(transaction=False)
            for job, _active in chunk:
                pipe.hmget(self.keys.beat_entry(job.job_id), "definition", "meta")
                pipe.zscore(self.keys.beat_schedule, self.keys.beat_entry(job.job_id))
            stored = pipe.execute()
            pipe = self.r.pipeline(transaction=False)
            for n, (job, active) in enumerate(chunk):
                (definition, meta), score = stored[2 * n], stored[2 * n + 1]
                self._sync_one(pipe, job, active, definition, meta, score, known, now, report)
            pipe.execute()
        if remove_others:
            wanted = {job.job_id for job, _ in jobs}
            stale = sorted(set(self.r.smembers(self.keys.cron_known)) - wanted)
            if stale:
                self.remove(stale)
                report.removed.extend(stale)
        for name in ("created", "updated", "recreated", "disabled", "removed"):
            ids = getattr(report, name)
            if ids and name != "recreated":
                log.info("cron entries %s: %s", name, ", ".join(ids[:20]) +
                         (f" (+{len(ids) - 20} more)" if len(ids) > 20 else ""))
        return report

    def _sync_one(self, pipe: Any, job: Job, active: bool, definition: str | None,
                  meta: str | None, score: float | None, known: set[str], now: datetime,
                  report: SyncReport) -> None:
        key = self.keys.beat_entry(job.job_id)
        wanted = dumps(job.definition(active))
        if definition == wanted:
            if active and score is None:  # the entry is there, its schedule member is not
                current = self._decode(key, definition, meta)
                log.error("cron job %s had lost its place in %s (evicted?); put back",
                          job.job_id, self.keys.beat_schedule)
                last = current.last_run_at or now
                pipe.zadd(self.keys.beat_schedule, {key: score_of(current.cron, last, True)})
                report.recreated.append(job.job_id)
            return
        reset = True
        total = 0
        if definition is None:
            if job.job_id in known:
                log.error("cron job %s: its RedBeat entry %s vanished (evicted, or Redis "
                          "restarted without persistence); re-created from the registry, "
                          "its last run and counts are lost", job.job_id, key)
                report.recreated.append(job.job_id)
            else:
                report.created.append(job.job_id)
            last = now
        else:
            old: Loaded | None
            try:
                old = self._decode(key, definition, meta)
            except (ValueError, KeyError, TypeError):
                old = None
            if old is not None:
                total = old.total_run_count
                # The same schedule, already enabled or staying disabled: its last run stands.
                reset = old.cron != job.cron or (active and not old.enabled)
            last = now if reset or old is None or old.last_run_at is None else old.last_run_at
            (report.updated if active else report.disabled).append(job.job_id)
        pipe.hset(key, "definition", wanted)
        if reset or meta is None:
            pipe.hset(key, "meta", meta_json(last, total))
        pipe.zadd(self.keys.beat_schedule, {key: score_of(job.cron, last, active)})
        pipe.sadd(self.keys.cron_known, job.job_id)

    def remove(self, job_ids: list[str]) -> None:
        """Delete the entries (and status) of triggers that are gone."""
        for i in range(0, len(job_ids), BATCH):
            pipe = self.r.pipeline(transaction=False)
            for job_id in job_ids[i:i + BATCH]:
                key = self.keys.beat_entry(job_id)
                pipe.zrem(self.keys.beat_schedule, key)
                pipe.delete(key, self.keys.cron_status(job_id), self.keys.cron_running(job_id))
                pipe.srem(self.keys.cron_known, job_id)
            pipe.execute()


def cron_jobs(triggers: list[dict[str, Any]]) -> list[tuple[Job, bool]]:
    """The cron triggers of a registry listing, each with whether it is active."""
    return [(Job.of(t), bool(t.get("active", True))) for t in triggers if t.get("type") == CRON]
