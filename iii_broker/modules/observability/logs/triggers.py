"""``log`` triggers: the elected :class:`~...changes.ChangeFeed` over ``NS:logs`` calls each
trigger's function with every record at or above its ``level`` (all records without one).

Records of a *quiet* run never fire a log trigger. A run made by a log trigger is quiet, and
so is every call it makes (the ``iii-quiet`` header), so a log handler that logs, or calls a
function that logs, never triggers itself, however long the chain.
"""

from __future__ import annotations

import weakref
from typing import Any

from ...changes import Change, ChangeFeed
from ...hosts import EngineHost
from .record import SEVERITIES

LOG = "log"
FEED_INTERVAL_S = 0.05

_feeds: weakref.WeakKeyDictionary[Any, ChangeFeed] = weakref.WeakKeyDictionary()


def feed(engine: EngineHost) -> ChangeFeed:
    """The log-trigger feed of ``engine`` (one per engine)."""
    found = _feeds.get(engine)
    if found is None:
        keys = engine.registry.keys
        found = _feeds[engine] = ChangeFeed(engine, LOG, keys.logs, keys.log_cursors,
                                            matches=matches, payload=payload,
                                            lane=lambda c: c.key)
    return found


def matches(config: dict[str, Any], change: Change) -> bool:
    record = change.meta
    if record.get("quiet"):
        return False
    level = config.get("level")
    return level is None or record.get("severity_number", 0) >= SEVERITIES[level]


def payload(change: Change) -> dict[str, Any]:
    """What a ``log`` trigger's function receives: the record (reference §3 log)."""
    return change.meta
