"""Writing telemetry off the calling thread: a bounded buffer and a thread that empties it.

A handler's thread only appends to a deque (no lock, no I/O). A thread of the batcher's own
takes everything buffered every ``interval_s`` (or sooner, once ``batch`` items wait) and
hands it to ``write`` in one go. While ``write`` fails (Redis away), the items are kept and
retried with a capped backoff; past ``max_items`` the oldest are dropped and counted, so an
outage costs telemetry, never memory or a blocked call. A crash loses what was buffered: at
most one interval's worth, plus whatever an outage had held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import redis

from ...outage import Backoff, is_outage, store_outage
from ...settings import Settings

log = logging.getLogger("iii.observability")

T = TypeVar("T")

RECORDS_LUA = """
-- records(blob, n): the records of a batch joined by \\30, each as its first n fields
-- (a table; fields are joined by \\31) and the rest, its JSON (which never holds \\30 or
-- \\31: JSON escapes control characters). Plain string.find (C): a pattern would walk
-- the JSON a character at a time.
local function records(blob, n)
  local pos, size = 1, #blob
  return function()
    if pos > size then return nil end
    local stop = string.find(blob, '\\30', pos, true) or size + 1
    local m, p = {}, pos
    for i = 1, n do
      local q = string.find(blob, '\\31', p, true)
      m[i] = string.sub(blob, p, q - 1)
      p = q + 1
    end
    local json = string.sub(blob, p, stop - 1)
    pos = stop + 1
    return m, json
  end
end
"""
"""Prepended to the scripts that store a batch passed as one argument (history, logs)."""

MAX_REFUSALS = 3
"""A batch Redis refuses this many times in a row (not an outage: a bad item) is dropped."""


_PASSING = ("READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "OOM")
"""Replies of a Redis that will take the batch later (a fail-over, a restart loading its
data, a busy script, memory full): waited out like an outage, never counted as refusals."""


_PASSING_TYPES = (redis.exceptions.ReadOnlyError, redis.exceptions.BusyLoadingError,
                  redis.exceptions.OutOfMemoryError, redis.exceptions.TryAgainError,
                  redis.exceptions.MasterDownError, redis.exceptions.ClusterDownError)


class Unavailable(OSError):
    """Where the batch goes is not there just now (the telemetry writer process is
    restarting): the batch is kept and tried again, as in an outage, without saying that
    Redis is away."""


def _passing(exc: BaseException) -> bool:
    return isinstance(exc, _PASSING_TYPES) or (isinstance(exc, redis.ResponseError)
                                              and str(exc).startswith(_PASSING))


class Batcher(Generic[T]):
    """A bounded buffer of ``T`` written in batches by a daemon thread."""

    def __init__(self, name: str, write: Callable[[list[T]], None], settings: Settings, *,
                 interval_s: float = 0.2, batch: int = 500, max_items: int = 20_000,
                 to_redis: bool = True) -> None:
        """``to_redis``: ``write`` talks to Redis, so its failures and successes tell of a
        Redis outage (False: it hands the batch to the telemetry writer process)."""
        self.name = name
        self._write = write
        self._settings = settings
        self.interval_s = interval_s
        self.batch = batch
        self.max_items = max_items
        self._items: deque[T] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0
        """Items dropped because the buffer was full (Redis away for long)."""
        self.written = 0
        self.to_redis = to_redis

    def add(self, item: T) -> None:
        """Buffer ``item`` (from any thread; never blocks)."""
        items = self._items
        items.append(item)
        if len(items) > self.max_items:
            try:
                items.popleft()
                self.dropped += 1
            except IndexError:
                pass
        if len(items) >= self.batch:
            self._wake.set()
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"iii-{self.name}",
                                                daemon=True)
                self._thread.start()

    def flush(self, timeout_s: float) -> bool:
        """Write what is buffered now; True when it was all written within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        if self._thread is None:
            if not self._items:
                return True
            self._start()
        while time.monotonic() < deadline:
            if not self._items and self._idle.is_set():
                return True
            self._wake.set()
            time.sleep(0.01)
        return not self._items

    def close(self, timeout_s: float = 2.0) -> None:
        """Write what is left (up to ``timeout_s``), then stop the thread."""
        self.flush(timeout_s)
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        backoff = Backoff()
        outage = store_outage(self._settings) if self.to_redis else None
        refused = 0
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if not self._items:
                if self._stop.is_set():
                    return
                continue
            self._idle.clear()
            taken: list[T] = []
            items = self._items
            try:
                while items and len(taken) < self.batch * 4:
                    taken.append(items.popleft())
            except IndexError:
                pass
            try:
                self._write(taken)
                refused = 0
                self.written += len(taken)
                if outage is not None:
                    outage.recovered()
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - telemetry waits; calls never do
                if isinstance(exc, Unavailable):
                    pass  # the writer says so itself
                elif is_outage(exc) or _passing(exc):
                    if outage is not None:
                        outage.failed(exc)
                else:
                    refused += 1
                    if refused >= MAX_REFUSALS:  # not an outage: the batch itself is bad
                        log.error("%s: dropped %d item(s) that could not be written %d times "
                                  "(%s: %s)", self.name, len(taken), refused,
                                  type(exc).__name__, exc)
                        self.dropped += len(taken)
                        refused = 0
                        continue
                    log.warning("%s: writing %d item(s) failed (%s: %s); retrying", self.name,
                                len(taken), type(exc).__name__, exc)
                items.extendleft(reversed(taken))  # the oldest first again
                while len(items) > self.max_items:
                    items.popleft()
                    self.dropped += 1
                self._idle.set()
                if self._stop.wait(backoff.next()):
                    return
                continue
            finally:
                if not items:
                    self._idle.set()
            if items:
                self._wake.set()  # more than one batch was waiting
