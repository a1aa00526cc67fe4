"""Which slot of an entry fires now, which are skipped, and why.

A *slot* is one scheduled instant of a cron expression. Given the entry's last handled
slot (RedBeat's ``last_run_at``) and the time now:

- the first slot after it is in the future: nothing to do yet;
- the latest slot that has come is at most ``threshold`` late: it fires, and any slots
  before it (every beat was down over them) are skipped and counted;
- it is later than that (a misfire): it is skipped too, unless the trigger asked for
  ``misfire: "catch_up_once"`` and it is within ``misfire_grace_s``: then it fires, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .expression import CronExpression

COUNT_CAP = 10_000
"""Missed slots are counted one by one up to this many (a long outage of an every-second
schedule would otherwise cost seconds of counting)."""


@dataclass(frozen=True)
class Plan:
    """What to do with one entry now."""

    fire: datetime | None
    """The slot to fire now, if any."""
    handled: datetime | None
    """The slot the entry has now handled (its new ``last_run_at``); None: nothing came."""
    skipped: int
    """Slots skipped as misfires."""
    next_slot: datetime | None
    """The first slot after ``handled`` (or after the old last run when nothing came)."""


def plan(cron: CronExpression, last_run_at: datetime, now: datetime, *, threshold: timedelta,
         catch_up_grace: timedelta | None = None) -> Plan:
    """The plan for an entry last handled at ``last_run_at``; ``catch_up_grace`` is set for
    ``misfire: "catch_up_once"`` triggers."""
    first = cron.next_after(last_run_at)
    if first is None or first > now:
        return Plan(None, None, 0, first)
    latest = cron.latest_at_or_before(now) or first
    if latest < first:
        latest = first
    missed = _count(cron, first, latest)
    late = now - latest
    on_time = late <= threshold or (catch_up_grace is not None and late <= catch_up_grace)
    nxt = cron.next_after(latest)
    if on_time:
        return Plan(latest, latest, missed, nxt)
    return Plan(None, latest, missed + 1, nxt)


def _count(cron: CronExpression, first: datetime, latest: datetime) -> int:
    """Slots from ``first`` (included) up to ``latest`` (excluded), at most COUNT_CAP."""
    n, slot = 0, first  # type: tuple[int, datetime | None]
    while slot is not None and slot < latest and n < COUNT_CAP:
        n += 1
        slot = cron.next_after(slot)
    return n
