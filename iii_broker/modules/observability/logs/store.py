"""Log records in Redis: written in batches, trimmed by count and age, listed with filters.

``NS:logs`` is a STREAM, one entry per record, in the order they were stored (the entry id
is the time it was stored, a fraction of a second after it was logged). Its fields fit
:class:`~iii_broker.modules.changes.ChangeFeed`, which feeds the ``log`` triggers:

    key    the function that logged it        event  severity text (INFO, WARN...)
    meta   the record (JSON)                   ts     when it was logged (Unix ms)

``NS:logs:trace:<trace_id>`` is a ZSET of the entry ids of one trace (score: when it was
logged, Unix ms), so a trace's records are found without reading the others; it expires
``logs_max_age_s`` after its last record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ....errors import InvalidArgument
from ....store import Keys
from ..batch import RECORDS_LUA
from .record import parse_severity

WRITE = RECORDS_LUA + """
-- KEYS[1] the log stream
-- ARGV[1] max count (approximate), ARGV[2] trace index TTL (s), ARGV[3] the prefix of a
-- trace's index key (+ trace id); ARGV[4] the records, all in one argument: separated by
-- \\30, each its fields joined by \\31 (trace id, function id, severity text, logged at
-- (Unix ms), its JSON). One argument for the batch: packing arguments is most of the
-- client's cost (JSON never holds \\30 or \\31; the writer leaves out a record whose
-- other fields do).
local traces = {}
local n = 0
for m, json in records(ARGV[4], 4) do
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'key', m[2],
                        'event', m[3], 'meta', json, 'ts', m[4])
  local index = ARGV[3] .. m[1]
  redis.call('ZADD', index, m[4], id)
  traces[index] = true
  n = n + 1
end
for index in pairs(traces) do redis.call('EXPIRE', index, ARGV[2]) end
return n
"""
"""Appends a batch of records and indexes them by trace, in one atomic step (a batch
retried after a Redis outage is never half written)."""

_RECORD = json.JSONEncoder(default=str)
"""Encodes a record (built once: ``json.dumps`` with options builds one per call)."""

CHUNK = 500
"""Entries read per round trip while listing."""
LATE_MS = 60_000
"""How much later than it was logged a record may have been stored (a batch held back by
a Redis outage): a time range is widened by this before the records' own times decide."""
MAX_LIMIT = 10_000


def line(record: dict[str, Any]) -> str | None:
    """One record as :data:`WRITE` takes it; None when a field holds ``\\x1e`` or
    ``\\x1f``, which would split the batch (such a record is left out)."""
    one = "\x1f".join((record["trace_id"], record["function_id"], record["severity_text"],
                        str(record["timestamp_unix_nano"] // 1_000_000), _RECORD.encode(record)))
    return one if one.count("\x1f") == 4 and "\x1e" not in one else None


@dataclass(frozen=True)
class LogQuery:
    """The filters of ``engine::logs::list`` (times in Unix ms)."""

    start_time: int | None = None
    end_time: int | None = None
    trace_id: str | None = None
    severity_min: int | None = None
    function_id: str | None = None
    limit: int = 100
    offset: int = 0

    @classmethod
    def of(cls, payload: Any) -> LogQuery:
        """From a payload; raises :class:`InvalidArgument` naming the bad field."""
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise InvalidArgument("engine::logs::list takes an object like "
                                  '{"trace_id": "...", "severity_min": "warn", "limit": 100}')
        known = {"start_time", "end_time", "trace_id", "severity_min", "function_id", "limit",
                 "offset"}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise InvalidArgument(f"engine::logs::list does not take {', '.join(unknown)}; "
                                  f"it takes {', '.join(sorted(known))}")
        severity = payload.get("severity_min")
        return cls(
            start_time=_int(payload, "start_time", 0),
            end_time=_int(payload, "end_time", 0),
            trace_id=_trace_id(payload),
            severity_min=None if severity is None else parse_severity(severity),
            function_id=_text(payload, "function_id"),
            limit=_int(payload, "limit", 1, MAX_LIMIT) or 100,
            offset=_int(payload, "offset", 0) or 0,
        )

    def matches(self, record: dict[str, Any]) -> bool:
        ms = record.get("timestamp_unix_nano", 0) // 1_000_000
        return ((self.start_time is None or ms >= self.start_time)
                and (self.end_time is None or ms <= self.end_time)
                and (self.trace_id is None or record.get("trace_id") == self.trace_id)
                and (self.severity_min is None
                     or record.get("severity_number", 0) >= self.severity_min)
                and (self.function_id is None or record.get("function_id") == self.function_id))


def _int(payload: dict[str, Any], key: str, least: int, most: int | None = None) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{key} must be an integer, not {value!r}")
    if value < least or (most is not None and value > most):
        bound = f"from {least} to {most}" if most is not None else f">= {least}"
        raise InvalidArgument(f"{key} is {value}; it must be {bound}")
    return value


def _trace_id(payload: dict[str, Any]) -> str | None:
    value = _text(payload, "trace_id")
    if value is None:
        return None
    trace = value.strip().lower()
    if len(trace) != 32 or any(c not in "0123456789abcdef" for c in trace):
        raise InvalidArgument(f"trace_id {value!r} is not a trace id: 32 hexadecimal digits, "
                              "as in a traceparent header or a stored record")
    return trace


def _text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{key} must be a non-empty string, not {value!r}")
    return value


class LogStore:
    """The log records of one namespace."""

    def __init__(self, r: Any, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._write = r.register_script(WRITE)

    # -- writing ------------------------------------------------------------------

    def write_lines(self, max_count: int, max_age_s: int, lines: list[str]) -> None:
        """Store records made by :func:`line` in one round trip (raises ``RedisError``;
        nothing is stored then)."""
        if lines:
            self.write_joined(max_count, max_age_s, "\x1e".join(lines))

    def write_joined(self, max_count: int, max_age_s: int, joined: str | bytes) -> None:
        """:meth:`write_lines` for lines already joined by ``\\x1e`` (UTF-8 bytes, say)."""
        self._write(keys=[self.keys.logs],
                    args=[max_count, max_age_s, self.keys.log_trace(""), joined])

    def trim(self, max_count: int, max_age_s: int) -> int:
        """Drop records stored more than ``max_age_s`` ago and all but the newest
        ``max_count``; returns how many went."""
        oldest_ms = int(time.time() * 1000) - max_age_s * 1000
        gone = int(self.r.xtrim(self.keys.logs, minid=f"{oldest_ms}-0", approximate=False))
        gone += int(self.r.xtrim(self.keys.logs, maxlen=max_count, approximate=False))
        return gone

    # -- reading --------------------------------------------------------------------

    def last_id(self) -> str:
        """The id of the newest entry ("0-0" when there is none)."""
        last = self.r.xrevrange(self.keys.logs, count=1)
        return last[0][0] if last else "0-0"

    def find(self, q: LogQuery) -> dict[str, Any]:
        """``{logs: [...], total?}``: the records matching ``q``, newest first, from
        ``offset``; ``total`` (every match) when the whole range was read."""
        found: list[dict[str, Any]] = []
        wanted = q.offset + q.limit
        matched = 0
        complete = True
        for rec in self._newest_first(q):
            if not q.matches(rec):
                continue
            matched += 1
            if matched > wanted:
                complete = False
                break
            if matched > q.offset:
                found.append(rec)
        out: dict[str, Any] = {"logs": found}
        if complete:
            out["total"] = matched
        return out

    def _newest_first(self, q: LogQuery) -> Iterator[dict[str, Any]]:
        if q.trace_id is not None:
            yield from self._of_trace(q)
            return
        top = "+" if q.end_time is None else f"{q.end_time + LATE_MS}-0"
        bottom = "-" if q.start_time is None else f"{q.start_time}-0"
        while True:
            entries = self.r.xrevrange(self.keys.logs, max=top, min=bottom, count=CHUNK)
            for _id, fields in entries:
                yield from _decoded(fields)
            if len(entries) < CHUNK:
                return
            top = f"({entries[-1][0]}"

    def _of_trace(self, q: LogQuery) -> Iterator[dict[str, Any]]:
        ids = self.r.zrevrangebyscore(
            self.keys.log_trace(q.trace_id or ""),
            "+inf" if q.end_time is None else q.end_time,
            "-inf" if q.start_time is None else q.start_time)
        ids.sort(key=_order, reverse=True)  # as stored (equal scores sort as text)
        for at in range(0, len(ids), CHUNK):
            pipe = self.r.pipeline(transaction=False)
            for entry_id in ids[at:at + CHUNK]:
                pipe.xrange(self.keys.logs, min=entry_id, max=entry_id, count=1)
            for entries in pipe.execute():
                for _id, fields in entries:  # none when the record was trimmed
                    yield from _decoded(fields)

    def read_after(self, entry_id: str, block_ms: int) -> tuple[str, list[dict[str, Any]]]:
        """Records stored after ``entry_id`` (waiting up to ``block_ms`` for one), oldest
        first, and the id to read after next."""
        answer = self.r.xread({self.keys.logs: entry_id}, count=CHUNK, block=block_ms)
        records: list[dict[str, Any]] = []
        for _stream, entries in answer or []:
            for got_id, fields in entries:
                entry_id = got_id
                records.extend(_decoded(fields))
        return entry_id, records


def _decoded(fields: dict[str, str]) -> Iterator[dict[str, Any]]:
    try:
        rec = json.loads(fields.get("meta") or "")
    except ValueError:
        return
    if isinstance(rec, dict):
        yield rec


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
