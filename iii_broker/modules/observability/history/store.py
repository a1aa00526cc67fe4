"""The invocation history in Redis: records, their indexes, and how they are read and trimmed.

Keys (:class:`~iii_broker.store.Keys`): ``invocation(id)`` a HASH per invocation (field
``<attempt>`` -> that attempt's record, plus ``latest``, ``status``, ``function_id`` of the
latest attempt), expiring ``history_max_age_s`` after its last write; the ZSET indexes
``invocations`` (every invocation), ``invocations_of(function_id)`` and
``invocations_with(status)``, all scored by the latest attempt's start (Unix ms), so a
listing reads one index (or the intersection of two) and never scans the records;
``inv_running`` (id -> worker id) while the latest attempt is recorded as running.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ....message import now_ms
from ....store import Keys
from ..batch import RECORDS_LUA
from .record import INTERRUPTED, RECORD, RUNNING, STATUSES

WRITE = RECORDS_LUA + """
-- One batch of records in one call.
-- KEYS[1] every invocation ZSET, [2] running HASH, [3] the functions SET, [4..7] the status
-- ZSETs (in STATUSES order).
-- ARGV[1] max age (s), [2] the prefix of a record's HASH key (+ invocation id), [3] the
-- prefix of a function's ZSET key (+ function id, '%' and ':' escaped as Keys does), [4] the
-- records, all in one argument: separated by \\30, each its fields joined by \\31
-- (invocation id, attempt, status, started (ms), worker id, function id, its JSON). One
-- argument for the batch rather than several a record: packing arguments is most of the
-- client's cost. JSON never holds \\30 or \\31 (it escapes control characters); the
-- writer leaves out a record whose other fields do (:func:`line`).
local max_age, prefix, fn_prefix = ARGV[1], ARGV[2], ARGV[3]
local position = {running = 4, succeeded = 5, failed = 6, interrupted = 7}
local functions = {}
local n = 0
for m, json in records(ARGV[4], 6) do
  local iid, att, status, started, worker, fid = m[1], m[2], m[3], m[4], m[5], m[6]
  local rec = prefix .. iid
  local attempt = tonumber(att)
  local seen = redis.call('HMGET', rec, 'latest', 'status')
  local latest, before = tonumber(seen[1] or '0'), seen[2]
  -- a late "still running" note never hides an outcome
  local stale = status == 'running' and (attempt < latest or
                                         (attempt == latest and before ~= 'running'))
  if not stale then
    if attempt >= latest then
      local fn = functions[fid]
      if not fn then
        fn = fn_prefix .. (string.gsub((string.gsub(fid, '%%', '%%25')), ':', '%%3A'))
        functions[fid] = fn
        redis.call('SADD', KEYS[3], fid)
      end
      redis.call('HSET', rec, att, json, 'latest', att, 'status', status, 'function_id', fid)
      redis.call('ZADD', KEYS[1], started, iid)
      redis.call('ZADD', fn, started, iid)
      if before and before ~= status and position[before] then
        redis.call('ZREM', KEYS[position[before]], iid)
      end
      redis.call('ZADD', KEYS[position[status]], started, iid)
      if status == 'running' then
        redis.call('HSET', KEYS[2], iid, worker)
      elseif before == 'running' then
        redis.call('HDEL', KEYS[2], iid)
      end
    else
      redis.call('HSET', rec, att, json)
    end
    redis.call('EXPIRE', rec, max_age)
  end
  n = n + 1
end
return n
"""

INTERRUPT = """
-- KEYS[1] the record HASH, [2] every invocation ZSET, [3] running HASH,
-- [4] the running ZSET, [5] the interrupted ZSET
-- ARGV[1] invocation id, [2] attempt, [3] the interrupted record JSON
-- Only a record still running its latest attempt is changed (an outcome written meanwhile wins).
if redis.call('HGET', KEYS[1], 'latest') ~= ARGV[2]
   or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], 'status', 'interrupted')
local score = redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0'
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], score, ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

PAGE = """
-- KEYS[1] an index ZSET, [2] another (optional), [3] a scratch key (with [2])
-- ARGV[1] min score, [2] max score, [3] offset, [4] limit
-- Returns {total, ids newest first}; with two indexes, of their intersection.
local src = KEYS[1]
if #KEYS == 3 then
  redis.call('ZINTERSTORE', KEYS[3], 2, KEYS[1], KEYS[2], 'AGGREGATE', 'MAX')
  src = KEYS[3]
end
local total = redis.call('ZCOUNT', src, ARGV[1], ARGV[2])
local ids = redis.call('ZREVRANGEBYSCORE', src, ARGV[2], ARGV[1], 'LIMIT', ARGV[3], ARGV[4])
if #KEYS == 3 then redis.call('DEL', KEYS[3]) end
return {total, ids}
"""

FORGET_FUNCTION = """
-- KEYS[1] the functions SET, [2] the function's ZSET; ARGV[1] function id
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

def line(invocation_id: str, attempt: int, status: str, started_ms: int, worker_id: str,
         function_id: str, text: str) -> str | None:
    """One record as :data:`WRITE` takes it (``text``: its JSON); None when an id holds
    ``\\x1e`` or ``\\x1f``, which would split the batch (such a record is left out)."""
    one = "\x1f".join((invocation_id, str(attempt), status, str(started_ms), worker_id,
                        function_id, text))
    return one if one.count("\x1f") == 6 and "\x1e" not in one else None


TRIM_BATCH = 5000
"""Invocations dropped per round of the count trim (the rest go at the next round)."""


@dataclass(frozen=True)
class Entry:
    """A record to write, with what its indexes need."""

    record: dict[str, Any]
    """The record, or (with ``text``) the fields the indexes need: invocation_id,
    function_id, attempt, status, started_at, worker_id."""
    max_age_s: int
    text: str | None = None
    """The record's JSON when the writer made it already."""


@dataclass(frozen=True)
class Page:
    """One page of a listing."""

    invocations: list[dict[str, Any]]
    total: int


class HistoryStore:
    """Reads and writes the history of one namespace (``r``: a decode_responses client)."""

    def __init__(self, r: Any, keys: Keys) -> None:
        self.r = r
        self.keys = keys
        self._write = r.register_script(WRITE)
        self._interrupt = r.register_script(INTERRUPT)
        self._page = r.register_script(PAGE)
        self._forget = r.register_script(FORGET_FUNCTION)
        self._status_keys = [keys.invocations_with(s) for s in STATUSES]

    # -- writing --------------------------------------------------------------------

    def write(self, entries: list[Entry]) -> int:
        """Store ``entries`` in one round trip (raises RedisError); returns how many were
        left out (an id holding a separator character: see :func:`line`)."""
        lines = []
        for e in entries:
            rec = e.record
            one = line(rec["invocation_id"], rec["attempt"], rec["status"], rec["started_at"],
                       rec["worker_id"], rec["function_id"],
                       e.text if e.text is not None else RECORD.encode(rec))
            if one is not None:
                lines.append(one)
        if lines:
            self.write_lines(entries[0].max_age_s, lines)
        return len(entries) - len(lines)

    def write_lines(self, max_age_s: int, lines: list[str]) -> None:
        """Store records made by :func:`line` in one round trip, one script call (raises
        RedisError; nothing is stored then)."""
        if lines:
            self.write_joined(max_age_s, "\x1e".join(lines))

    def write_joined(self, max_age_s: int, joined: str | bytes) -> None:
        """:meth:`write_lines` for lines already joined by ``\\x1e`` (UTF-8 bytes, say)."""
        k = self.keys
        self._write(keys=[k.invocations, k.inv_running, k.inv_functions, *self._status_keys],
                    args=[max_age_s, k.invocation(""), k.invocations_of(""), joined])

    def running(self) -> dict[str, str]:
        """Invocations recorded as running: id -> the worker running it."""
        return dict(self.r.hgetall(self.keys.inv_running))

    def interrupt(self, invocation_id: str, worker_id: str) -> bool:
        """Mark the invocation's running attempt ``interrupted`` (its worker died); False
        when it was not running any more (or its record is gone)."""
        attempts = self.attempts(invocation_id)
        if not attempts or attempts[-1]["status"] != RUNNING:
            self.r.hdel(self.keys.inv_running, invocation_id)
            return False
        rec = dict(attempts[-1], status=INTERRUPTED,
                   error={"code": "invocation_stopped",
                          "message": f"its worker {worker_id} stopped while running it"})
        k = self.keys
        return bool(self._interrupt(
            keys=[k.invocation(invocation_id), k.invocations, k.inv_running,
                  k.invocations_with(RUNNING), k.invocations_with(INTERRUPTED)],
            args=[invocation_id, rec["attempt"], json.dumps(rec, separators=(",", ":"))]))

    # -- reading --------------------------------------------------------------------

    def attempts(self, invocation_id: str) -> list[dict[str, Any]]:
        """Every recorded attempt of an invocation, the first first ([] when unknown)."""
        return _attempts(self.r.hgetall(self.keys.invocation(invocation_id)))

    def page(self, *, function_id: str | None = None, status: str | None = None,
             since_ms: int | None = None, until_ms: int | None = None, limit: int = 50,
             offset: int = 0) -> Page:
        """Invocations started in ``[since_ms, until_ms]``, newest first, each as its latest
        attempt's record with ``attempts`` (how many there were)."""
        k = self.keys
        indexes = []
        if function_id is not None:
            indexes.append(k.invocations_of(function_id))
        if status is not None:
            indexes.append(k.invocations_with(status))
        if not indexes:
            indexes.append(k.invocations)
        if len(indexes) == 2:
            indexes.append(k.inv_scratch(uuid.uuid4().hex))
        low = "-inf" if since_ms is None else since_ms
        high = "+inf" if until_ms is None else until_ms
        total, ids = self._page(keys=indexes, args=[low, high, offset, limit])
        pipe = self.r.pipeline(transaction=False)
        for iid in ids:
            pipe.hgetall(k.invocation(iid))
        out = []
        for found in pipe.execute() if ids else []:
            attempts = _attempts(found)
            if attempts:  # expired since the index was trimmed last: skipped
                out.append(dict(attempts[-1], attempts=len(attempts)))
        return Page(out, int(total))

    # -- retention ------------------------------------------------------------------

    def trim(self, max_count: int, max_age_s: int) -> int:
        """Drop index entries older than ``max_age_s`` (their records expire on their own)
        and the oldest invocations past ``max_count``; returns how many were dropped by count."""
        k = self.keys
        cutoff = now_ms() - max_age_s * 1000
        functions = sorted(self.r.smembers(k.inv_functions))
        pipe = self.r.pipeline(transaction=False)
        for index in [k.invocations, *self._status_keys,
                      *(k.invocations_of(f) for f in functions)]:
            pipe.zremrangebyscore(index, "-inf", f"({cutoff}")
        pipe.zcard(k.invocations)
        excess = pipe.execute()[-1] - max_count
        dropped = 0
        if excess > 0:
            ids = self.r.zrange(k.invocations, 0, min(excess, TRIM_BATCH) - 1)
            pipe = self.r.pipeline(transaction=False)
            for iid in ids:
                pipe.hget(k.invocation(iid), "function_id")
            by_function: dict[str, list[str]] = defaultdict(list)
            for iid, fid in zip(ids, pipe.execute(), strict=True):
                if fid:
                    by_function[fid].append(iid)
            pipe = self.r.pipeline(transaction=False)
            pipe.delete(*(k.invocation(i) for i in ids))
            pipe.zrem(k.invocations, *ids)
            for index in self._status_keys:
                pipe.zrem(index, *ids)
            for fid, of_fid in by_function.items():
                pipe.zrem(k.invocations_of(fid), *of_fid)
            pipe.hdel(k.inv_running, *ids)
            pipe.execute()
            dropped = len(ids)
        if functions:
            pipe = self.r.pipeline(transaction=False)
            for fid in functions:
                self._forget(keys=[k.inv_functions, k.invocations_of(fid)], args=[fid],
                             client=pipe)
            pipe.execute()
        return dropped


def _attempts(found: dict[str, str]) -> list[dict[str, Any]]:
    numbered = sorted((int(f), v) for f, v in found.items() if f.isdigit())
    return [json.loads(v) for _, v in numbered]
