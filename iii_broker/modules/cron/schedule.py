"""The schedule class of ``cron`` triggers as Celery beat and RedBeat see it, and the RedBeat
entry class that decodes it. Only the beat process imports this (and Celery with it).

Celery's ``crontab`` has no seconds, no per-entry time zone and mishandles DST;
:class:`CronSchedule` wraps a :class:`~.expression.CronExpression` instead (seconds,
years, an IANA zone, iii's DST rules). RedBeat stores entries as JSON with a ``__type__``
per schedule class; ours is ``iii_cron`` (:mod:`.codec` writes it)::

    {"__type__": "iii_cron", "expression": "*/5 * * * * *", "timezone": "Europe/Paris"}

A RedBeat that does not know the type decodes it as a plain dict, so tools reading the
store never crash on our entries; :class:`CronEntry` (``CronEntry.from_key(key, app)``)
loads them as RedBeat entries with their schedule.
"""

from __future__ import annotations

import json
from datetime import UTC, timedelta, timezone
from typing import Any

from celery.schedules import BaseSchedule, schedstate
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import RedBeatSchedulerEntry

from .codec import SCHEDULE_TYPE, parsed, schedule_json, utcnow
from .expression import CronExpression

IDLE_S = 3600.0
"""What ``is_due`` says about a schedule that never fires again: look again in an hour."""


class CronSchedule(BaseSchedule):  # type: ignore[misc]
    """A cron expression with seconds and a time zone, as a Celery beat schedule."""

    def __init__(self, cron: CronExpression, app: Any = None) -> None:
        super().__init__(nowfun=utcnow, app=app)
        self.cron = cron

    @property
    def tz(self) -> timezone:
        return UTC  # instants are UTC; the expression's own zone is in ``cron``

    def remaining_estimate(self, last_run_at: Any) -> timedelta | None:
        """Time from now to the first slot after ``last_run_at`` (negative when overdue);
        None when the schedule has no slot left."""
        nxt = self.cron.next_after(last_run_at)
        return None if nxt is None else nxt - utcnow()

    def is_due(self, last_run_at: Any) -> schedstate:
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
            return schedule_json(obj.cron)
        return super().default(obj)


class ScheduleDecoder(RedBeatJSONDecoder):  # type: ignore[misc]
    """RedBeat's JSON decoder, knowing ``iii_cron``."""

    def dict_to_object(self, d: dict[str, Any]) -> Any:
        if d.get("__type__") == SCHEDULE_TYPE:
            return CronSchedule(parsed(d["expression"], d.get("timezone")))
        return super().dict_to_object(d)


class CronEntry(RedBeatSchedulerEntry):  # type: ignore[misc]
    """A RedBeat entry whose schedule is a :class:`CronSchedule` (RedBeat's own class
    cannot decode the schedule of ours)."""

    @staticmethod
    def decode_definition(definition: str) -> dict[str, Any]:
        return json.loads(definition, cls=ScheduleDecoder)  # type: ignore[no-any-return]

    @staticmethod
    def decode_meta(meta: str | None, app: Any = None) -> dict[str, Any]:
        if not meta:
            return {"last_run_at": None}
        return json.loads(meta, cls=ScheduleDecoder)  # type: ignore[no-any-return]
