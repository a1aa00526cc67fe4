"""``iii-broker queues`` and ``iii-broker dlq``: read the store directly, so they work
while no engine runs.

    iii-broker queues
    iii-broker queues purge orders.created --subscriber billing::charge --yes
    iii-broker dlq list payment --limit 20
    iii-broker dlq list orders.created                 # every subscriber of the topic
    iii-broker dlq list orders.created --subscriber billing::charge
    iii-broker dlq show payment 3f2a...
    iii-broker dlq redrive payment            # every dead letter of the queue
    iii-broker dlq redrive payment 3f2a...    # just these
    iii-broker dlq discard payment 3f2a...

A QUEUE argument is a named queue, or a durable topic (each ``durable:subscriber``
function has a queue of its own on it; ``--subscriber FUNCTION_ID`` picks one, and the
full name ``durable:<topic>:<function_id>`` that ``iii-broker queues`` lists works too).
A name that is none of these is an error naming the queues and topics there are.
"""

from __future__ import annotations

import argparse
import datetime
import json
from dataclasses import dataclass
from typing import Any

from ...console import fail, print_table
from ...queues.amqp import AmqpJobs
from ...queues.config import topic_queue_name
from ...queues.store import JobStore
from ...registry import Registry
from ...settings import Settings
from ...store import check_store, connect_store
from .topics import with_orphans

_NAME_HELP = ("a queue, or a durable topic (then --subscriber picks one subscribing function; "
              "without it, every subscriber)")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("queues", help="named queues and topic subscribers: depth, in flight, "
                       "delayed retries, dead letters; purge one")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    actions = p.add_subparsers(dest="queues_command", metavar="ACTION")
    q = actions.add_parser("purge", help="drop the jobs waiting in a queue (and its delayed "
                           "retries); prints how many")
    _queue_arguments(q)
    q.add_argument("--yes", action="store_true", help="really drop them (required)")

    p = sub.add_parser("dlq", help="dead letters: list, show, redrive, discard")
    dlq = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    q = dlq.add_parser("list", help="a queue's (or topic's) dead letters, newest first")
    _queue_arguments(q)
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--offset", type=int, default=0)
    q.add_argument("--json", action="store_true", help="print the raw JSON")
    q = dlq.add_parser("show", help="one dead letter in full (JSON)")
    _queue_arguments(q)
    q.add_argument("message_id")
    q = dlq.add_parser("redrive", help="put dead letters back on their queue, attempts reset "
                       "(all of the queue's when no id is given)")
    _queue_arguments(q)
    q.add_argument("message_ids", nargs="*", metavar="MESSAGE_ID")
    q = dlq.add_parser("discard", help="delete dead letters for good")
    _queue_arguments(q)
    q.add_argument("message_ids", nargs="+", metavar="MESSAGE_ID")


def _queue_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", metavar="QUEUE", help=_NAME_HELP)
    parser.add_argument("--subscriber", metavar="FUNCTION_ID",
                        help="with a topic: the subscribing function whose queue to use")


class UnknownQueue(Exception):
    """A QUEUE argument that names no queue or topic (the message says what there is)."""


@dataclass(frozen=True)
class Target:
    """What a QUEUE argument named: the queues it stands for, and how to call them."""

    queues: list[str]
    label: str


def resolve(jobs: JobStore, name: str, subscriber: str | None) -> Target:
    """The queues ``name`` (and ``--subscriber``) stand for; raises :class:`UnknownQueue`.

    A queue's name wins over a topic's; ``--subscriber`` always means a topic. A queue
    that is configured no more is still found while it holds dead letters (to discard)."""
    configs = jobs.configs(fresh=True)
    topics: dict[str, list[str]] = {}
    for queue, config in sorted(configs.items()):
        if config.topic is not None:
            topics.setdefault(config.topic, []).append(queue)
    if subscriber is None and (name in configs or jobs.holds_dead_letters(name)):
        return Target([name], repr(name))
    if name in topics:
        if subscriber is None:
            return Target(topics[name], f"topic {name!r}")
        queue = topic_queue_name(name, subscriber)
        if queue in topics[name]:
            return Target([queue], f"topic {name!r} subscriber {subscriber!r}")
        prefix = len(topic_queue_name(name, ""))
        raise UnknownQueue(f"{subscriber!r} does not subscribe to topic {name!r}; its "
                           f"subscribers: {', '.join(q[prefix:] for q in topics[name])}")
    named = sorted(q for q, c in configs.items() if c.topic is None)
    what = f"no queue or topic {name!r}" if subscriber is None else f"no topic {name!r}"
    raise UnknownQueue(f"{what}; queues: {', '.join(named)}; topics: "
                       f"{', '.join(sorted(topics)) or '(none)'}")


def run(settings: Settings, args: argparse.Namespace) -> int:
    store = connect_store(settings)
    try:
        check_store(store, settings)  # one line naming the URL, not a traceback
        jobs = JobStore(store, settings.namespace,
                        AmqpJobs(settings) if settings.uses_amqp else None)
        registry = Registry(store, settings.namespace)
        if args.command == "queues" and args.queues_command is None:
            return _overview(jobs, registry, args.json)
        try:
            target = resolve(jobs, args.queue, args.subscriber)
        except UnknownQueue as exc:
            return fail(str(exc))
        if args.command == "queues":
            return _purge(jobs, registry, target, args.yes)
        if args.dlq_command == "list":
            return _list(jobs, target, args.limit, args.offset, args.json)
        if args.dlq_command == "show":
            return _show(jobs, target, args.message_id)
        if args.dlq_command == "redrive":
            return _redrive(jobs, target, args.message_ids or None)
        return _discard(jobs, target, args.message_ids)
    finally:
        store.close()


def _overview(jobs: JobStore, registry: Registry, as_json: bool) -> int:
    queues = with_orphans(registry, jobs)
    if as_json:
        print(json.dumps({"queues": queues}, indent=2))
        return 0
    # DEAD is the dead letters there are now; COMPLETED counts every job that ever did.
    print_table(["QUEUE", "TYPE", "DEPTH", "IN FLIGHT", "DELAYED", "DEAD", "CAP",
                 "RETRIES", "COMPLETED (TOTAL)", "STATUS"],
                [[q["queue"], q["type"], str(q["depth"]), str(q["in_flight"]),
                  str(q["delayed"]), str(q["dead"]), str(q["concurrency"]),
                  str(q["max_retries"]), str(q.get("completed", 0)),
                  "orphaned" if q["orphaned"] else ""] for q in queues])
    return 0


def _list(jobs: JobStore, target: Target, limit: int, offset: int, as_json: bool) -> int:
    if limit < 0 or offset < 0:
        return fail("--limit and --offset must be >= 0", 2)
    letters: list[dict[str, Any]] = []
    total = 0
    for queue in target.queues:  # merged newest first, as engine::queue::dlq_messages does
        found, count = jobs.dead_letters(queue, offset + limit)
        letters += found
        total += count
    letters.sort(key=lambda m: m.get("failed_at") or 0, reverse=True)
    letters = letters[offset:offset + limit]
    if as_json:
        print(json.dumps({"messages": letters, "total": total}, indent=2))
        return 0
    print_table(["MESSAGE ID", "FUNCTION", "ATTEMPTS", "FAILED AT", "ERROR"],
                [[m["message_id"], str(m.get("function_id")), str(m.get("attempts")),
                  _when(m.get("failed_at")), _one_line(m.get("error", {}).get("message"))]
                 for m in letters])
    print(f"({len(letters)} of {total} dead letter(s) on {target.label})")
    return 0


def _show(jobs: JobStore, target: Target, message_id: str) -> int:
    found = [(q, letter) for q in target.queues
             if (letter := jobs.dead_letter(q, message_id)) is not None]
    if not found:
        return fail(_missing(jobs, target, message_id))
    if len(found) > 1:  # one publish to a topic is one message id on each subscriber's queue
        return fail(f"dead letter {message_id!r} is on several subscribers' queues of "
                    f"{target.label} ({', '.join(str(letter.get('function_id')) for _, letter in found)}):"
                    " add --subscriber FUNCTION_ID")
    print(json.dumps(found[0][1], indent=2))
    return 0


def _redrive(jobs: JobStore, target: Target, wanted: list[str] | None) -> int:
    done: set[str] = set()
    count = 0
    for queue in target.queues:
        redriven = jobs.redrive(queue, wanted)
        done.update(redriven)
        count += len(redriven)
    print(f"redriven {count} dead letter(s) onto {target.label}")
    missing = sorted(set(wanted or []) - done)
    for mid in missing:
        fail(_missing(jobs, target, mid))
    return 1 if missing else 0


def _discard(jobs: JobStore, target: Target, message_ids: list[str]) -> int:
    missing = []
    count = 0
    for mid in message_ids:
        found = sum(jobs.discard(queue, mid) for queue in target.queues)
        count += found
        if not found:
            missing.append(mid)
    print(f"discarded {count} dead letter(s) from {target.label}")
    for mid in missing:
        fail(_missing(jobs, target, mid))
    return 1 if missing else 0


def _missing(jobs: JobStore, target: Target, message_id: str) -> str:
    if len(target.queues) == 1:
        return jobs.missing_letter(target.queues[0], message_id)
    total = sum(jobs.dead_letters(q, 0)[1] for q in target.queues)
    return (f"no dead letter {message_id!r} on {target.label} ({total} dead letter(s) there; "
            "it may have been redriven or discarded already)")


def _purge(jobs: JobStore, registry: Registry, target: Target, yes: bool) -> int:
    known = {q["queue"]: q for q in with_orphans(registry, jobs)}
    queues = [q for q in target.queues if q in known]
    if not queues:  # only dead letters left of it: nothing waits there
        return fail(f"{target.label} is not configured any more; nothing waits in it")
    waiting = sum(known[q]["depth"] for q in queues)
    if not yes:
        return fail(f"purging drops the {waiting} job(s) waiting in {target.label} "
                    "for good: add --yes to do it", 2)
    dropped = 0
    for queue in queues:
        dropped += jobs.purge(queue)
        if known[queue]["orphaned"] and not jobs.stats(queue)["in_flight"]:
            jobs.forget_queue(queue)  # nothing will ever fill it again
    print(f"purged {dropped} job(s) from {target.label}")
    return 0


def _when(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return "?"
    return datetime.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


def _one_line(text: Any, width: int = 80) -> str:
    line = str(text or "").splitlines()[0] if text else ""
    return line if len(line) <= width else line[:width - 1] + "…"
