"""Cron expressions: parsing, checking, and the fire instants of a schedule.

Forms (fields are separated by whitespace):

- 5 fields, classic crontab: ``min hour dom month dow`` (fires at second 0);
- 6 fields, iii's form: ``sec min hour dom month dow``;
- 7 fields: ``sec min hour dom month dow year`` (year 1970-2099);
- the nicknames ``@yearly`` (= ``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (= ``@midnight``) and ``@hourly``, meaning what they mean in crontab.

A field is ``*``, a number, a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (``a`` to
the field's maximum, every ``n``), or a comma list of those. Months may be written JAN-DEC
and days of the week SUN-SAT, in any case; ``?`` in ``dom`` or ``dow`` means ``*``; in
``dow`` both 0 and 7 are Sunday. Quartz's ``L``, ``W`` and ``#`` are refused.

Day of month and day of week combine as in Vixie cron: when either field starts with ``*``
(or is ``?``) a day must match both (so ``*`` leaves the other field alone in charge); when
both are restricted, a day matches when either does.

The schedule runs on the wall clock of its IANA ``timezone`` (UTC by default):

- a wall time that does not exist because the clocks jump forward (the spring-forward gap)
  fires once, at the instant the gap ends; all matching wall times inside one gap, and the
  wall time at the gap's end itself, are that one fire;
- a wall time that occurs twice because the clocks go back (fall-back) fires once, at its
  first occurrence (``fold=0``); nothing fires during the repeated stretch the second time.

Fire instants are whole seconds and returned as aware UTC datetimes. The search works on
wall-clock fields, jumping with :mod:`bisect` over each field's sorted allowed values, and
converts a wall time to an instant only once a match is found.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from .fields import LAST_YEAR, CronError, Spec, compile_fields, cron_dow, days_in, fields_of, zone

__all__ = ["CronError", "CronExpression", "problem"]

_LOOKBACK_YEARS = 5  # how far latest_at_or_before searches back


Wall = tuple[int, int, int, int, int, int]  # year, month, day, hour, minute, second


def _first_at_or_after(spec: Spec, y: int, mo: int, d: int, h: int, mi: int, s: int) -> Wall | None:
    """The first matching wall time at or after the given one (whose fields may overflow by
    one: ``s == 60`` means the next minute); None past the year range."""
    last_year = spec.years[-1] if spec.years is not None else LAST_YEAR
    while True:
        if y > last_year:
            return None
        if spec.years is not None:
            i = bisect_left(spec.years, y)  # < len: y <= last_year
            if spec.years[i] != y:
                y, mo, d, h, mi, s = spec.years[i], 1, 1, 0, 0, 0
        i = bisect_left(spec.months, mo)
        if i == len(spec.months):
            y, mo, d, h, mi, s = y + 1, 1, 1, 0, 0, 0
            continue
        if spec.months[i] != mo:
            mo, d, h, mi, s = spec.months[i], 1, 0, 0, 0
        day = _first_day(spec, y, mo, d)
        if day == 0:
            y, mo, d, h, mi, s = (y + 1, 1, 1, 0, 0, 0) if mo == 12 else (y, mo + 1, 1, 0, 0, 0)
            continue
        if day != d:
            d, h, mi, s = day, 0, 0, 0
        i = bisect_left(spec.hours, h)
        if i == len(spec.hours):
            d, h, mi, s = d + 1, 0, 0, 0
            continue
        if spec.hours[i] != h:
            h, mi, s = spec.hours[i], 0, 0
        i = bisect_left(spec.minutes, mi)
        if i == len(spec.minutes):
            h, mi, s = h + 1, 0, 0
            continue
        if spec.minutes[i] != mi:
            mi, s = spec.minutes[i], 0
        i = bisect_left(spec.seconds, s)
        if i == len(spec.seconds):
            mi, s = mi + 1, 0
            continue
        if spec.seconds[i] != s:
            s = spec.seconds[i]
        return y, mo, d, h, mi, s


def _first_day(spec: Spec, y: int, mo: int, d: int) -> int:
    """The first matching day >= d in the month, 0 when none."""
    last = days_in(y, mo)
    if spec.day_and and len(spec.dows) == 7:  # the common case: dom alone decides
        i = bisect_left(spec.doms, d)
        return spec.doms[i] if i < len(spec.doms) and spec.doms[i] <= last else 0
    if d > last:
        return 0
    dow = cron_dow(y, mo, d)
    while d <= last:
        if spec.day_matches(d, dow):
            return d
        d, dow = d + 1, (dow + 1) % 7
    return 0


def _last_at_or_before(spec: Spec, y: int, mo: int, d: int, h: int, mi: int, s: int,
                       first_year: int) -> Wall | None:
    """The last matching wall time at or before the given one (whose fields may underflow by
    one: ``s == -1`` means the minute before); None before ``first_year``."""
    while True:
        if y < first_year:
            return None
        if spec.years is not None:
            i = bisect_right(spec.years, y) - 1
            if i < 0:
                return None
            if spec.years[i] != y:
                y, mo, d, h, mi, s = spec.years[i], 12, 31, 23, 59, 59
                continue  # that year may be before first_year
        i = bisect_right(spec.months, mo) - 1
        if i < 0:
            y, mo, d, h, mi, s = y - 1, 12, 31, 23, 59, 59
            continue
        if spec.months[i] != mo:
            mo, d, h, mi, s = spec.months[i], 31, 23, 59, 59
        day = _last_day(spec, y, mo, d)
        if day == 0:
            y, mo, d, h, mi, s = (y - 1, 12, 31, 23, 59, 59) if mo == 1 else (y, mo - 1, 31, 23, 59, 59)
            continue
        if day != d:
            d, h, mi, s = day, 23, 59, 59
        i = bisect_right(spec.hours, h) - 1
        if i < 0:
            d, h, mi, s = d - 1, 23, 59, 59
            continue
        if spec.hours[i] != h:
            h, mi, s = spec.hours[i], 59, 59
        i = bisect_right(spec.minutes, mi) - 1
        if i < 0:
            h, mi, s = h - 1, 59, 59
            continue
        if spec.minutes[i] != mi:
            mi, s = spec.minutes[i], 59
        i = bisect_right(spec.seconds, s) - 1
        if i < 0:
            mi, s = mi - 1, 59
            continue
        if spec.seconds[i] != s:
            s = spec.seconds[i]
        return y, mo, d, h, mi, s


def _last_day(spec: Spec, y: int, mo: int, d: int) -> int:
    """The last matching day <= d in the month (d past the month's end counts as its end),
    0 when none."""
    d = min(d, days_in(y, mo))
    if spec.day_and and len(spec.dows) == 7:
        i = bisect_right(spec.doms, d) - 1
        return spec.doms[i] if i >= 0 else 0
    if d < 1:
        return 0
    dow = cron_dow(y, mo, d)
    while d >= 1:
        if spec.day_matches(d, dow):
            return d
        d, dow = d - 1, (dow - 1) % 7
    return 0


def _epoch_s(wall: Wall) -> int:
    return calendar.timegm((*wall, 0, 0, 0))


def _transition_s(zone: ZoneInfo, after_s: int, by_s: int) -> int:
    """The epoch second in (after_s, by_s] at which the zone's UTC offset changes."""
    before = datetime.fromtimestamp(after_s, zone).utcoffset()
    while by_s - after_s > 1:
        mid = (after_s + by_s) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            after_s = mid
        else:
            by_s = mid
    return by_s


def _instant(zone: ZoneInfo, wall: Wall) -> datetime:
    """When ``wall`` fires: its only or first occurrence, or the end of the gap it falls in."""
    local = datetime(*wall, tzinfo=zone)
    first = local.utcoffset()
    second = local.replace(fold=1).utcoffset()
    assert first is not None and second is not None  # a ZoneInfo always answers
    if first >= second:  # equal: an ordinary time; greater: a repeated one, fold=0 first
        return datetime(*wall, tzinfo=UTC) - first
    # In a gap, fold=0 reads the wall time with the offset from before the jump: that lands
    # after the jump; fold=1 (the offset after it) lands before. The jump lies between.
    epoch = _epoch_s(wall)
    jump = _transition_s(zone, epoch - int(second.total_seconds()), epoch - int(first.total_seconds()))
    return datetime.fromtimestamp(jump, UTC)


def _wall(t: datetime) -> Wall:
    return t.year, t.month, t.day, t.hour, t.minute, t.second


def _fold_end(zone: ZoneInfo, local: datetime) -> Wall | None:
    """When ``local`` is the second occurrence of a repeated wall time: the first wall time
    after the repeated stretch (all wall times before it fired at their first occurrence)."""
    if not local.fold:
        return None
    later = local.utcoffset()
    earlier = local.replace(fold=0).utcoffset()
    assert later is not None and earlier is not None
    if earlier <= later:
        return None
    now_s = int(local.timestamp())
    jump = _transition_s(zone, now_s - int((earlier - later).total_seconds()), now_s)
    # The stretch ends where the wall clock, read with the old offset, would have reached.
    return _wall(datetime.fromtimestamp(jump, UTC).replace(tzinfo=None) + earlier)


@lru_cache(maxsize=4096)
def _compiled(text: str) -> Spec:
    """:func:`compile_fields`, refused when a 7-field expression's years hold no matching
    day (the search tells)."""
    spec = compile_fields(text)
    if spec.years is not None and _first_at_or_after(spec, spec.years[0], 1, 1, 0, 0, 0) is None:
        fields = fields_of(text)
        raise CronError(f"{text!r} never fires: no day in field 'year' value {fields[6]} matches "
                        f"'dom' {fields[3]}, 'month' {fields[4]} and 'dow' {fields[5]}")
    return spec


def _require_aware(t: datetime) -> None:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"t must be an aware datetime, not naive {t.isoformat()}")


@dataclass(frozen=True)
class CronExpression:
    """A checked cron expression on the wall clock of an IANA time zone.

    Build it with :meth:`parse`; constructing it directly checks it the same way. Raises
    :class:`CronError` for an unusable expression or zone.
    """

    text: str
    timezone: str = "UTC"
    _spec: Spec = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self.text.strip())
        object.__setattr__(self, "_spec", _compiled(self.text))
        object.__setattr__(self, "_zone", zone(self.timezone))

    @classmethod
    def parse(cls, text: str, timezone: str | None = None) -> CronExpression:
        """The expression ``text`` (5, 6 or 7 fields, or a nickname) on the wall clock of
        ``timezone`` (an IANA name; UTC when None). Raises CronError naming what is wrong."""
        return cls(text, "UTC" if timezone is None else timezone)

    def next_after(self, t: datetime) -> datetime | None:
        """The first fire instant strictly after aware datetime ``t``, as an aware UTC datetime
        (whole seconds, microsecond=0); None when there is none (7-field year range exhausted).
        Raises ValueError when ``t`` is naive."""
        _require_aware(t)
        local = t.astimezone(self._zone)
        start = _fold_end(self._zone, local)
        if start is None:
            # Every wall time up to t's own (seconds floored) fires at or before t.
            y, mo, d, h, mi, s = _wall(local)
            start = (y, mo, d, h, mi, s + 1)
        while True:
            wall = _first_at_or_after(self._spec, *start)
            if wall is None:
                return None
            fire = _instant(self._zone, wall)
            if fire > t:
                return fire
            # Only when several wall times share one instant (a gap's end): try the next.
            y, mo, d, h, mi, s = wall
            start = (y, mo, d, h, mi, s + 1)

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        """The last fire instant at or before aware datetime ``t``, as an aware UTC datetime;
        None when there is none since January 1st five years before ``t``'s year (local).
        Raises ValueError when ``t`` is naive."""
        _require_aware(t)
        local = t.astimezone(self._zone)
        fold_end = _fold_end(self._zone, local)
        if fold_end is None:
            start = _wall(local)
        else:  # the whole repeated stretch fired (first time round) before t
            y, mo, d, h, mi, s = fold_end
            start = (y, mo, d, h, mi, s - 1)
        wall = _last_at_or_before(self._spec, *start, first_year=local.year - _LOOKBACK_YEARS)
        return None if wall is None else _instant(self._zone, wall)

    def upcoming(self, t: datetime, n: int) -> list[datetime]:
        """The next ``n`` fire instants after aware datetime ``t`` (aware UTC), fewer when the
        schedule ends first. Raises ValueError when ``t`` is naive."""
        _require_aware(t)
        fires: list[datetime] = []
        fire: datetime | None = t
        while len(fires) < n and fire is not None:
            fire = self.next_after(fire)
            if fire is not None:
                fires.append(fire)
        return fires


def problem(text: str, timezone: str | None = None) -> str | None:
    """None when ``text`` in ``timezone`` is usable, else the :class:`CronError` message."""
    try:
        CronExpression.parse(text, timezone)
    except CronError as exc:
        return str(exc)
    return None
