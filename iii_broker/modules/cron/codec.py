"""The JSON of RedBeat's store, written and read here without importing RedBeat or Celery
(every process that registers cron triggers writes entries; only a beat needs Celery).

The format is RedBeat's own: a typed value is an object with a ``__type__``. Datetimes are
``{"__type__": "datetime", "year", ..., "microsecond", "timezone": "UTC"}`` and our schedule
is ``{"__type__": "iii_cron", "expression", "timezone"}``, so RedBeat's decoder reads the
entries too (:mod:`.schedule` gives it the schedule class).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from .expression import CronExpression

SCHEDULE_TYPE = "iii_cron"


def utcnow() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=16_384)
def parsed(expression: str, timezone: str | None) -> CronExpression:
    """:meth:`CronExpression.parse`, remembered: the beat meets the same expressions on every
    tick and every reconcile. Raises CronError."""
    return CronExpression.parse(expression, timezone)


def schedule_json(cron: CronExpression) -> dict[str, Any]:
    return {"__type__": SCHEDULE_TYPE, "expression": cron.text, "timezone": cron.timezone}


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        t = obj.astimezone(UTC)
        return {"__type__": "datetime", "year": t.year, "month": t.month, "day": t.day,
                "hour": t.hour, "minute": t.minute, "second": t.second,
                "microsecond": t.microsecond, "timezone": "UTC"}
    if isinstance(obj, CronExpression):
        return schedule_json(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _object(d: dict[str, Any]) -> Any:
    kind = d.get("__type__")
    if kind == "datetime":
        return datetime(d["year"], d["month"], d["day"], d["hour"], d["minute"], d["second"],
                        d.get("microsecond", 0), tzinfo=UTC)  # we write UTC only
    if kind == SCHEDULE_TYPE:
        return parsed(d["expression"], d.get("timezone"))
    return d


def dumps(value: Any) -> str:
    """``value`` as RedBeat's JSON (datetimes and expressions typed)."""
    return json.dumps(value, default=_default, sort_keys=True)


def loads(text: str) -> Any:
    """RedBeat's JSON read back (typed values decoded); raises ValueError, or CronError for
    an expression that no longer parses."""
    return json.loads(text, object_hook=_object)
