"""``iii-broker queues`` and ``iii-broker dlq``: read the store directly, so they work
while no engine runs.

    iii-broker queues
    iii-broker queues purge durable:orders:billing::charge --yes
    iii-broker dlq list payment --limit 20
    iii-broker dlq show payment 3f2a...
    iii-broker dlq redrive payment            # every dead letter of the queue
    iii-broker dlq redrive payment 3f2a...    # just these
    iii-broker dlq discard payment 3f2a...
"""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from ...console import fail, print_table
from ...queues.amqp import AmqpJobs
from ...queues.store import JobStore
from ...registry import Registry
from ...settings import Settings
from ...store import connect_store
from .topics import with_orphans


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("queues", help="named queues and topic subscribers: depth, in flight, "
                       "delayed retries, dead letters; purge one")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    actions = p.add_subparsers(dest="queues_command", metavar="ACTION")
    q = actions.add_parser("purge", help="drop the jobs waiting in a queue (and its delayed "
                           "retries); prints how many")
    q.add_argument("queue")
    q.add_argument("--yes", action="store_true", help="really drop them (required)")

    p = sub.add_parser("dlq", help="dead letters: list, show, redrive, discard")
    dlq = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    q = dlq.add_parser("list", help="a queue's dead letters, newest first")
    q.add_argument("queue")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--offset", type=int, default=0)
    q.add_argument("--json", action="store_true", help="print the raw JSON")
    q = dlq.add_parser("show", help="one dead letter in full (JSON)")
    q.add_argument("queue")
    q.add_argument("message_id")
    q = dlq.add_parser("redrive", help="put dead letters back on their queue, attempts reset "
                       "(all of the queue's when no id is given)")
    q.add_argument("queue")
    q.add_argument("message_ids", nargs="*", metavar="MESSAGE_ID")
    q = dlq.add_parser("discard", help="delete dead letters for good")
    q.add_argument("queue")
    q.add_argument("message_ids", nargs="+", metavar="MESSAGE_ID")


def run(settings: Settings, args: argparse.Namespace) -> int:
    store = connect_store(settings)
    try:
        jobs = JobStore(store, settings.namespace,
                        AmqpJobs(settings) if settings.uses_amqp else None)
        registry = Registry(store, settings.namespace)
        if args.command == "queues" and args.queues_command == "purge":
            return _purge(jobs, registry, args.queue, args.yes)
        if args.command == "queues":
            queues = with_orphans(registry, jobs)
            if args.json:
                print(json.dumps({"queues": queues}, indent=2))
                return 0
            print_table(["QUEUE", "TYPE", "DEPTH", "IN FLIGHT", "DELAYED", "DEAD", "CAP",
                         "RETRIES", "COMPLETED", "STATUS"],
                        [[q["queue"], q["type"], str(q["depth"]), str(q["in_flight"]),
                          str(q["delayed"]), str(q["dead"]), str(q["concurrency"]),
                          str(q["max_retries"]), str(q.get("completed", 0)),
                          "orphaned" if q["orphaned"] else ""] for q in queues])
            return 0
        queue = args.queue
        if args.dlq_command == "list":
            letters, total = jobs.dead_letters(queue, args.limit, args.offset)
            if args.json:
                print(json.dumps({"messages": letters, "total": total}, indent=2))
                return 0
            print_table(["MESSAGE ID", "FUNCTION", "ATTEMPTS", "FAILED AT", "ERROR"],
                        [[m["message_id"], str(m.get("function_id")), str(m.get("attempts")),
                          _when(m.get("failed_at")), _one_line(m.get("error", {}).get("message"))]
                         for m in letters])
            print(f"({len(letters)} of {total} dead letter(s) on {queue!r})")
            return 0
        if args.dlq_command == "show":
            letter = jobs.dead_letter(queue, args.message_id)
            if letter is None:
                return fail(jobs.missing_letter(queue, args.message_id))
            print(json.dumps(letter, indent=2))
            return 0
        if args.dlq_command == "redrive":
            wanted = args.message_ids or None
            done = jobs.redrive(queue, wanted)
            print(f"redriven {len(done)} dead letter(s) onto {queue!r}")
            missing = sorted(set(wanted or []) - set(done))
            for mid in missing:
                fail(jobs.missing_letter(queue, mid))
            return 1 if missing else 0
        missing = [mid for mid in args.message_ids if not jobs.discard(queue, mid)]
        print(f"discarded {len(args.message_ids) - len(missing)} dead letter(s) from {queue!r}")
        for mid in missing:
            fail(jobs.missing_letter(queue, mid))
        return 1 if missing else 0
    finally:
        store.close()


def _purge(jobs: JobStore, registry: Registry, queue: str, yes: bool) -> int:
    known = {q["queue"]: q for q in with_orphans(registry, jobs)}
    if queue not in known:
        return fail(f"no queue {queue!r}; queues: {', '.join(sorted(known))}", 1)
    if not yes:
        return fail(f"purging drops the {known[queue]['depth']} job(s) waiting in {queue!r} "
                    "for good: add --yes to do it", 2)
    dropped = jobs.purge(queue)
    if known[queue]["orphaned"] and not jobs.stats(queue)["in_flight"]:
        jobs.forget_queue(queue)  # nothing will ever fill it again
    print(f"purged {dropped} job(s) from {queue}")
    return 0


def _when(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return "?"
    return datetime.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


def _one_line(text: Any, width: int = 80) -> str:
    line = str(text or "").splitlines()[0] if text else ""
    return line if len(line) <= width else line[:width - 1] + "…"
