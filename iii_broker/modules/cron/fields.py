"""The fields of a cron expression: parsing and checking them, with errors that name the
expression, the field and the value (see :mod:`.expression` for the forms and their
meaning)."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["LAST_YEAR", "CronError", "Spec", "compile_fields", "cron_dow", "days_in", "fields_of",
           "zone"]


class CronError(ValueError):
    """An expression or time zone that cannot be used; str(exc) says which field and value."""


_USAGE = "use 6 (sec min hour dom month dow), 7 (with year) or classic 5-field crontab"
_NICKNAMES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_MONTHS = {name: i for i, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
_DAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
# The longest each month can be (February in a leap year): what "can ever happen" means.
_MAX_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAYS_IN = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Quartz-only tokens: L (last), LW, nW (nearest weekday), nL / FRIL (last such weekday).
_QUARTZ = re.compile(r"(\d*|[A-Z]{3})L|LW|\d+W")
LAST_YEAR = 9999  # datetime's limit: the 5- and 6-field forms search no further


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_SEC, _MIN, _HOUR = _Field("sec", 0, 59), _Field("min", 0, 59), _Field("hour", 0, 23)
_DOM, _MONTH = _Field("dom", 1, 31), _Field("month", 1, 12, _MONTHS)
_DOW, _YEAR = _Field("dow", 0, 7, _DAYS), _Field("year", 1970, 2099)


@dataclass(frozen=True)
class Spec:
    """The compiled form: sorted allowed values per field, and how days are matched."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    doms: tuple[int, ...]
    dom_set: frozenset[int]
    months: tuple[int, ...]
    dows: frozenset[int]  # 0 = Sunday
    years: tuple[int, ...] | None  # None: any year (5- and 6-field forms)
    day_and: bool  # Vixie: dom and dow must both match (else either)

    def day_matches(self, dom: int, dow: int) -> bool:
        if self.day_and:
            return dom in self.dom_set and dow in self.dows
        return dom in self.dom_set or dow in self.dows


def days_in(year: int, month: int) -> int:
    if month == 2 and calendar.isleap(year):
        return 29
    return _DAYS_IN[month]


def cron_dow(year: int, month: int, day: int) -> int:
    return date(year, month, day).isoweekday() % 7


def _parse_field(expr: str, spec: _Field, text: str) -> tuple[int, ...]:
    """The sorted allowed values of one field; raises CronError naming field and value."""

    def fail(value: object, why: str) -> CronError:
        return CronError(f"{expr!r}: field {spec.name!r} value {value} {why}")

    def number(token: str, item: str) -> int:
        upper = token.upper()
        if spec.names is not None and upper in spec.names:
            return spec.names[upper]
        if token.isascii() and token.isdigit():
            value = int(token)
            if not spec.low <= value <= spec.high:
                raise fail(value, f"is out of range {spec.low}-{spec.high}")
            return value
        if "#" in item or _QUARTZ.fullmatch(upper):
            raise fail(repr(item), "uses Quartz's L/W/# syntax, which is not supported")
        kind = {"month": "a number or a month name (JAN-DEC)",
                "dow": "a number or a day name (SUN-SAT)"}.get(spec.name, "a number")
        raise fail(repr(item), f"is not {kind}")

    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise fail(repr(text), "has an empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()):
                raise fail(repr(item), f"has step {step_text!r}, which is not a number")
            step = int(step_text)
            if step == 0:
                raise fail(repr(item), "has step 0; a step must be at least 1")
        if base in ("*", "?"):
            if base == "?" and spec.name not in ("dom", "dow"):
                raise fail(repr(item), "uses '?', which only 'dom' and 'dow' allow")
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = number(first, item), number(last, item)
            if low > high:
                raise fail(repr(item), f"is a reversed range ({low} > {high}); write the smaller bound first")
        else:
            low = number(base, item)
            high = spec.high if slash else low
        values.update(range(low, high + 1, step))
    return tuple(sorted(values))


def fields_of(text: str) -> list[str]:
    if text.startswith("@"):
        meaning = _NICKNAMES.get(text.lower())
        if meaning is None:
            raise CronError(f"{text!r} is not a known nickname; use one of {', '.join(_NICKNAMES)}")
        fields = meaning.split()
    else:
        fields = text.split()
    if len(fields) not in (5, 6, 7):
        raise CronError(f"{text!r} has {len(fields)} fields; {_USAGE}")
    return ["0", *fields] if len(fields) == 5 else fields


@lru_cache(maxsize=4096)
def compile_fields(text: str) -> Spec:
    """The compiled expression (cached: the beat builds the same few schedules over and over)."""
    fields = fields_of(text)
    years = _parse_field(text, _YEAR, fields[6]) if len(fields) == 7 else None
    doms = _parse_field(text, _DOM, fields[3])
    months = _parse_field(text, _MONTH, fields[4])
    spec = Spec(
        seconds=_parse_field(text, _SEC, fields[0]), minutes=_parse_field(text, _MIN, fields[1]),
        hours=_parse_field(text, _HOUR, fields[2]), doms=doms, dom_set=frozenset(doms), months=months,
        dows=frozenset(v % 7 for v in _parse_field(text, _DOW, fields[5])), years=years,
        day_and=fields[3][0] in "*?" or fields[5][0] in "*?")
    # Only when days must match dom can a dom/month pair shut every day out; with OR the
    # dow alone still fires, and any dom on any dow comes round within 28 years.
    if spec.day_and and doms[0] > max(_MAX_DAYS[m] for m in months):
        raise CronError(f"{text!r} never fires: field 'dom' value {fields[3]} does not occur in "
                        f"field 'month' value {fields[4]}")
    return spec


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The zone called ``name``; raises CronError when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: e.g. a directory name
        raise CronError(f"{name!r} is not an IANA time zone name") from exc
