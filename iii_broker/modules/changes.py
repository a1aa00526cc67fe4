"""Change triggers (``state``, ``stream``): read the change records that every write appends
in the same atomic step (:mod:`iii_broker.documents.lua`) and call each matching trigger.

One engine (the leader, an *elected* duty) runs the feed. Each trigger has its own position
in the records (``NS:<kind>-cursors``), so:

- **at least once**: a position moves only past records whose calls were answered; a call
  the worker died in (``invocation_stopped``), that timed out, or found no worker is tried
  again, and a leader that dies mid-batch leaves the position where it was;
- **in order per key**: the records of one key are called one after another; different keys
  run side by side (a pool of :data:`LANES` threads);
- **nothing missed while a worker is away**: an inactive trigger (no live worker declares
  it) keeps its position, and its records wait for it (as long as the stream keeps them:
  ``changes_maxlen``). A trigger starts at the end of the records when first registered
  and keeps its position when its worker comes back.

A handler that raises is logged and not called again for that change.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .. import context as _context
from ..errors import (
    BrokerUnavailable,
    FunctionNotFound,
    IIIError,
    InvocationStopped,
    InvocationTimeout,
)
from ..observe import triggered_by
from ..store import RedisError
from ..tracing import SpanContext, ambient_span, continuing
from .hosts import EngineHost

log = logging.getLogger("iii.engine")

BATCH = 256
"""Change records read per trigger per round."""
LANES = 16
"""Keys called side by side."""
RETRY_S = 1.0
"""How long a trigger whose call failed for want of a worker waits before the next try."""
TRIGGERS_TTL_S = 0.5
IDLE_S = TRIGGERS_TTL_S
"""How long the feed sleeps while no trigger of its type is active (it looks again then)."""
TRANSIENT = (InvocationStopped, InvocationTimeout, FunctionNotFound, BrokerUnavailable)
TRACEPARENT = "traceparent"
"""The key of a change record's ``meta`` holding the writer's span."""


def traced(meta: dict[str, Any]) -> dict[str, Any]:
    """A change record's ``meta`` with the writer's span (the run's, when a handler wrote
    it), so the calls of the triggers it fires continue the writer's trace."""
    ctx = _context._peek()
    span = ctx.span if ctx is not None else ambient_span()
    return {**meta, TRACEPARENT: span.traceparent} if span is not None else meta


@dataclass(frozen=True)
class Change:
    """One change record."""

    id: str
    meta: dict[str, Any]
    key: str
    event: str
    """``created``, ``updated`` or ``deleted``."""
    old: str
    new: str
    """Packed values ('' when there is none)."""
    ts: int


class ChangeFeed:
    """Calls the triggers of one type for the records of one stream."""

    def __init__(self, engine: EngineHost, trigger_type: str, records: str, cursors: str, *,
                 matches: Callable[[dict[str, Any], Change], bool],
                 payload: Callable[[Change], Any], lane: Callable[[Change], str]) -> None:
        self.engine = engine
        self.type = trigger_type
        self.records = records
        self.cursors = cursors
        self.matches = matches
        self.payload = payload
        self.lane = lane
        self._pool: ThreadPoolExecutor | None = None
        self._triggers: list[dict[str, Any]] = []
        self._triggers_at = 0.0
        self._resting: dict[str, float] = {}
        self._trimmed_warned: set[str] = set()
        self._unsaved: dict[str, str] = {}
        """Positions a round could not write (Redis went away): written first next round,
        so the calls already answered are not made again."""

    @property
    def r(self) -> Any:
        return self.engine.registry.r

    def start_at_end(self, triggers: list[dict[str, Any]]) -> None:
        """Give newly registered triggers of this type a position at the end of the records
        (a trigger that had one keeps it: its worker came back)."""
        ids = [t["id"] for t in triggers if t["type"] == self.type and "id" in t]
        if not ids:
            return
        last = self._last_id()
        pipe = self.r.pipeline(transaction=False)
        for trigger_id in ids:
            pipe.hsetnx(self.cursors, trigger_id, last)
        pipe.execute()
        self._triggers_at = 0.0  # read the triggers again next round

    def run(self) -> float | None:
        """One round: up to :data:`BATCH` records for every active trigger. Returns 0 when
        some trigger has more waiting (run again at once), :data:`IDLE_S` when no trigger
        is active, else None (the duty's interval)."""
        if self._unsaved:
            self.r.hset(self.cursors, mapping=self._unsaved)
            self._unsaved.clear()
        triggers = self._active_triggers()
        if not triggers:
            return IDLE_S
        now = time.monotonic()
        plans = []
        more = False
        # one round trip for every position and one for the newest record: a trigger that
        # has read up to it costs nothing more (the usual case, 20 rounds a second)
        cursors = self.r.hmget(self.cursors, [t["id"] for t in triggers])
        last = self._last_id()
        for t, cursor in zip(triggers, cursors, strict=True):
            if self._resting.get(t["id"], 0.0) > now:
                continue
            if cursor is None:  # registered before this engine saw it: start at the end
                self.r.hsetnx(self.cursors, t["id"], last)
                continue
            if cursor == last:
                continue
            entries = self.r.xrange(self.records, min=f"({cursor}", count=BATCH)
            if not entries:
                continue
            self._check_trimmed(t, cursor)
            more = more or len(entries) == BATCH
            changes = [_change(i, fields) for i, fields in entries]
            plans.append((t, cursor, changes))
        if not plans:
            return None
        self._deliver(plans)
        return 0.0 if more else None

    def _deliver(self, plans: list[tuple[dict[str, Any], str, list[Change]]]) -> None:
        pool = self._pool or ThreadPoolExecutor(LANES, thread_name_prefix=f"iii-{self.type}")
        self._pool = pool
        jobs = []
        for t, _cursor, changes in plans:
            lanes: dict[str, list[Change]] = {}
            for c in changes:
                if self.matches(t["config"], c):
                    lanes.setdefault(self.lane(c), []).append(c)
            jobs.append([pool.submit(self._lane, t, lane) for lane in lanes.values()])
        positions = {}
        for (t, _cursor, changes), futures in zip(plans, jobs, strict=True):
            failed = [f.result() for f in futures]
            first = min((c for c in failed if c is not None), default=None,
                        key=lambda c: _order(c.id))
            if first is None:
                positions[t["id"]] = changes[-1].id
                continue
            self._resting[t["id"]] = time.monotonic() + RETRY_S
            before = [c.id for c in changes if _order(c.id) < _order(first.id)]
            if before:
                positions[t["id"]] = before[-1]
        if not positions:
            return
        try:
            self.r.hset(self.cursors, mapping=positions)
        except RedisError:
            self._unsaved.update(positions)
            raise

    def _lane(self, t: dict[str, Any], changes: list[Change]) -> Change | None:
        """Call ``t`` for each change in order; the change it stopped at, if a call could
        not be made (no worker, the worker died, no answer in time)."""
        config = t["config"]
        for c in changes:
            payload = self.payload(c)
            try:
                condition = config.get("condition_function_id")
                with triggered_by(self.type), continuing(SpanContext.parse(c.meta.get(TRACEPARENT))):
                    if condition and not self.engine.caller.call(condition, payload):
                        continue
                    self.engine.caller.call(t["function_id"], payload)
            except TRANSIENT as exc:
                log.warning("%s trigger %s of %s: %s; the change waits (%s)", self.type, t["id"],
                            t["function_id"], exc.message, c.id)
                return c
            except IIIError as exc:
                log.warning("%s trigger %s of %s failed on change %s: %s", self.type, t["id"],
                            t["function_id"], c.id, exc.message)
        return None

    def _active_triggers(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if now - self._triggers_at > TRIGGERS_TTL_S:
            everything = self.engine.registry.triggers()
            self._triggers = [t for t in everything if t["type"] == self.type]
            self._triggers_at = now
            self._forget_removed({t["id"] for t in self._triggers})
        return [t for t in self._triggers if t["active"]]

    def _forget_removed(self, known: set[str]) -> None:
        gone = [i for i in self.r.hkeys(self.cursors) if i not in known]
        if gone:
            self.r.hdel(self.cursors, *gone)

    def _last_id(self) -> str:
        last = self.r.xrevrange(self.records, count=1)
        return last[0][0] if last else "0-0"

    def _check_trimmed(self, t: dict[str, Any], cursor: str) -> None:
        """Log once when records a trigger had not read yet were trimmed away."""
        if t["id"] in self._trimmed_warned or cursor == "0-0":
            return
        first = self.r.xrange(self.records, count=1)
        if first and _order(first[0][0]) > _order(cursor) and self._trimmed_after(cursor):
            self._trimmed_warned.add(t["id"])
            log.error("%s trigger %s of %s missed changes: records after %s were trimmed "
                      "(raise changes_maxlen, or keep its worker up)", self.type, t["id"],
                      t["function_id"], cursor)

    def _trimmed_after(self, cursor: str) -> bool:
        try:
            info = self.r.xinfo_stream(self.records)
        except Exception:  # noqa: BLE001 - only a diagnosis
            return False
        deleted = info.get("max-deleted-entry-id")
        return bool(deleted) and _order(deleted) > _order(cursor)


def _change(record_id: str, fields: dict[str, str]) -> Change:
    return Change(id=record_id, meta=json.loads(fields.get("meta") or "{}"), key=fields["key"],
                  event=fields["event"], old=fields.get("old", ""), new=fields.get("new", ""),
                  ts=int(fields.get("ts", 0)))


def _order(record_id: str) -> tuple[int, int]:
    ms, _, seq = record_id.partition("-")
    return int(ms), int(seq or 0)
