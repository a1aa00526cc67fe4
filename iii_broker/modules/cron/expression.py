"""TEMPORARY STUB (replaced by the helper's implementation)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class CronExpression:
    text: str
    timezone: str

    @classmethod
    def parse(cls, text: str, timezone: str | None = None) -> CronExpression:
        text = text.strip()
        try:
            ZoneInfo(timezone or "UTC")
        except Exception as exc:
            raise CronError(f"{timezone!r} is not an IANA time zone name") from exc
        n = len(text.split())
        if n not in (5, 6, 7):
            raise CronError(f"{text!r} has {n} fields")
        if not croniter.is_valid(cls._ci(text)):
            raise CronError(f"{text!r} is invalid")
        return cls(text, timezone or "UTC")

    @staticmethod
    def _ci(text: str) -> str:
        parts = text.split()
        if len(parts) == 5:
            return text
        return " ".join(parts[1:6] + [parts[0]])

    def next_after(self, t: datetime) -> datetime | None:
        it = croniter(self._ci(self.text), t.astimezone(ZoneInfo(self.timezone)))
        return it.get_next(datetime).astimezone(UTC)

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        it = croniter(self._ci(self.text), t.astimezone(ZoneInfo(self.timezone)))
        cand = it.get_prev(datetime).astimezone(UTC)
        nxt = self.next_after(cand)
        return nxt if nxt is not None and nxt <= t else cand

    def upcoming(self, t: datetime, n: int) -> list[datetime]:
        out = []
        for _ in range(n):
            t = self.next_after(t)
            out.append(t)
        return out


def problem(text: str, timezone: str | None = None) -> str | None:
    try:
        CronExpression.parse(text, timezone)
    except CronError as exc:
        return str(exc)
    return None
