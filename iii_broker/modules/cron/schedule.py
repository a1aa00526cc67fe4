"""The schedule class of ``cron`` triggers, as Celery beat and RedBeat see it, and its JSON
form in RedBeat's store.

Celery's ``crontab`` has no seconds, no per-entry time zone and mishandles DST;
:class:`CronSchedule` wraps a :class:`~.expression.CronExpression` instead (seconds,
years, an IANA zone, iii's DST rules). RedBeat stores entries as JSON with a
``__type__`` per schedule class; ours is ``iii_cron``::

    {"__type__": "iii_cron", "expression": "*/5 * * * * *", "timezone": "Europe/Paris"}

A RedBeat that does not know the type decodes it as a plain dict, so tools reading the
store never crash on our entries.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from celery.schedules import BaseSchedule, schedstate
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder

from .expression import CronExpression

SCHEDULE_TYPE = "iii_cron"
IDLE_S = 3600.0
"""What ``is_due`` says about a schedule that never fires again: look again in an hour."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class CronSchedule(BaseSchedule):  # type: ignore[misc]
    """A cron expression with seconds and a time zone, as a Celery beat schedule."""

    def __init__(self, cron: CronExpression, app: Any = None) -> None:
        super().__init__(nowfun=utcnow, app=app)
        self.cron = cron

    @property
    def tz(self) -> timezone:
        return UTC  # instants are UTC; the expression's own zone is in ``cron``

    def remaining_estimate(self, last_run_at: datetime) -> timedelta | None:
        """Time from now to the first slot after ``last_run_at`` (negative when overdue);
        None when the schedule has no slot left."""
        nxt = self.cron.next_after(last_run_at)
        return None if nxt is None else nxt - utcnow()

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Celery's question: is a slot after ``last_run_at`` due now, and how many
        seconds until it should be asked again."""
        nxt = self.cron.next_after(last_run_at)
        if nxt is None:
            return schedstate(False, IDLE_S)
        now = utcnow()
        if nxt <= now:
            after = self.cron.next_after(now)
            return schedstate(True, IDLE_S if after is None else (after - now).total_seconds())
        return schedstate(False, (nxt - now).total_seconds())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronSchedule) and other.cron == self.cron

    def __hash__(self) -> int:
        return hash(self.cron)

    def __repr__(self) -> str:
        return f"<cron {self.cron.text!r} {self.cron.timezone}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.cron,)


class ScheduleEncoder(RedBeatJSONEncoder):  # type: ignore[misc]
    """RedBeat's JSON encoder, knowing :class:`CronSchedule`."""

    def default(self, obj: Any) -> Any:
        if isinstance(obj, CronSchedule):
            return {"__type__": SCHEDULE_TYPE, "expression": obj.cron.text,
                    "timezone": obj.cron.timezone}
        return super().default(obj)


class ScheduleDecoder(RedBeatJSONDecoder):  # type: ignore[misc]
    """RedBeat's JSON decoder, knowing ``iii_cron``; raises CronError for an expression
    that no longer parses (an entry written by another version)."""

    def dict_to_object(self, d: dict[str, Any]) -> Any:
        if d.get("__type__") == SCHEDULE_TYPE:
            return CronSchedule(parsed(d["expression"], d.get("timezone")))
        return super().dict_to_object(d)


@lru_cache(maxsize=16_384)
def parsed(expression: str, timezone: str | None) -> CronExpression:
    """:meth:`CronExpression.parse`, remembered: the beat meets the same expressions on every
    tick and every reconcile. Raises CronError."""
    return CronExpression.parse(expression, timezone)


def dumps(value: Any) -> str:
    return json.dumps(value, cls=ScheduleEncoder, sort_keys=True)


def loads(text: str) -> Any:
    return json.loads(text, cls=ScheduleDecoder)
