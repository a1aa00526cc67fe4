"""``iii-broker cron list`` and ``iii-broker cron run JOB_ID``: read the registry and the
beat's store directly, so they work while no engine or beat runs.

    iii-broker cron list            # schedules, zones, next 3 fires, last fire and outcome
    iii-broker cron list --json
    iii-broker cron run JOB_ID      # fire now (condition and overlap rules apply)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ...client import Caller
from ...console import fail, print_table
from ...registry import Registry
from ...settings import Settings
from ...store import check_store, connect_store
from .codec import utcnow
from .entries import CRON, Entries, Job
from .fire import Fire, Firing, rfc3339

STATUS_FIELDS = ("last_scheduled_time", "last_actual_time", "last_outcome", "last_error",
                 "last_duration_ms", "last_detail")
COUNTS = ("runs", "skipped_misfire", "skipped_overlap", "skipped_condition")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("cron", help="cron schedules: list them, or fire one now")
    actions = p.add_subparsers(dest="cron_command", required=True, metavar="ACTION")
    q = actions.add_parser("list", help="each schedule: time zone, next 3 fire times, last "
                           "fire and outcome, skipped counts")
    q.add_argument("--json", action="store_true", help="print the raw JSON")
    q = actions.add_parser("run", help="fire a cron job now, as its schedule would (prints "
                           "the outcome)")
    q.add_argument("job_id", metavar="JOB_ID", help="the cron trigger's id (see cron list)")


def schedules(settings: Settings) -> list[dict[str, Any]]:
    """Every cron trigger with its schedule and status, as ``cron list --json`` prints it."""
    store = connect_store(settings)
    check_store(store, settings)
    registry = Registry(store, settings.namespace)
    entries = Entries(store, registry.keys)
    triggers = [t for t in registry.triggers() if t["type"] == CRON]
    pipe = store.pipeline(transaction=False)
    for t in triggers:
        pipe.hgetall(registry.keys.cron_status(t["id"]))
    statuses = pipe.execute() if triggers else []
    loaded = {e.job.job_id: e for e in entries.load([registry.keys.beat_entry(t["id"])
                                                       for t in triggers])}
    now = utcnow()
    out = []
    for t, status in zip(triggers, statuses, strict=True):
        job = Job.of(t)
        entry = loaded.get(job.job_id)
        after = now if entry is None or entry.last_run_at is None else max(entry.last_run_at, now)
        row: dict[str, Any] = {
            "job_id": job.job_id, "function_id": job.function_id,
            "expression": job.config["expression"], "timezone": job.config.get("timezone") or "UTC",
            "active": t["active"], "scheduled": entry is not None and entry.enabled,
            "next": [rfc3339(s) for s in job.cron.upcoming(after, 3)] if t["active"] else [],
        }
        row.update({k: status.get(k) or None for k in STATUS_FIELDS})
        row.update({k: int(status.get(k) or 0) for k in COUNTS})
        out.append(row)
    return out


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.cron_command == "list":
        rows = schedules(settings)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        if not rows:
            print("no cron triggers are registered")
            return 0
        print_table(["JOB", "FUNCTION", "SCHEDULE", "ZONE", "NEXT", "LAST", "OUTCOME",
                     "RUNS", "SKIPPED"],
                    [[r["job_id"], r["function_id"], r["expression"], r["timezone"],
                      ", ".join(r["next"]) if r["active"] else "(inactive: no live worker)",
                      r["last_scheduled_time"] or "-",
                      (r["last_outcome"] or "-") + (f" ({r['last_error']})" if r["last_error"]
                                                    else ""),
                      str(r["runs"]),
                      f"misfire {r['skipped_misfire']}, overlap {r['skipped_overlap']}, "
                      f"condition {r['skipped_condition']}"] for r in rows])
        return 0
    return _run_now(settings, args.job_id)


def _run_now(settings: Settings, job_id: str) -> int:
    store = connect_store(settings)
    check_store(store, settings)
    registry = Registry(store, settings.namespace)
    trigger = registry.trigger(job_id)
    if trigger is None or trigger.get("type") != CRON:
        known = sorted(t["id"] for t in registry.triggers() if t["type"] == CRON)
        return fail(f"no cron job {job_id!r}; " + (f"there are: {', '.join(known)}" if known
                                                    else "no cron triggers are registered"))
    caller = Caller(settings)
    firing = Firing(settings, caller)
    try:
        job = Job.of(trigger)
        timeout_s = int(job.config.get("timeout_ms") or settings.default_timeout_ms) / 1000
        outcome = firing.fire(Fire(job, utcnow())).result(timeout=timeout_s + 5)
        firing.flush()
    finally:
        caller.close()
    print(json.dumps(outcome))
    return 0 if outcome["outcome"] in ("ok", "enqueued") else 1
