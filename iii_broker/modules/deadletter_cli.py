"""``iii-broker deadletters``: the messages workers refused to run (``NS:deadletter``: not
JSON, another content type, a pickle, an undecodable envelope, a payload over the limits),
listed and dropped. Reads the store directly, so it works while no engine runs.

    iii-broker deadletters                 # newest first: id, when, queue, reason, preview
    iii-broker deadletters --json
    iii-broker deadletters drop 3f2a9c01b7de [...]
    iii-broker deadletters drop --all --yes

A letter's id is derived from its stored record (the list keeps no ids of its own), so it
is the same in every listing until the letter is dropped.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
from typing import Any

from ..console import fail, print_table
from ..errors import BrokerUnavailable
from ..settings import Settings, mask_url
from ..store import Keys, RedisError, connect_store

_REASON_CHARS = 70
_PREVIEW_CHARS = 40


def add_parser(sub: Any) -> None:
    p = sub.add_parser("deadletters", help="messages workers refused to run (not JSON, a "
                       "pickle, over the payload limits, ...): list or drop them")
    p.add_argument("--limit", type=int, default=50, help="how many to list (default 50)")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    actions = p.add_subparsers(dest="deadletters_command", metavar="ACTION")
    q = actions.add_parser("drop", help="delete dead letters for good, by id or all of them")
    q.add_argument("ids", nargs="*", metavar="ID")
    q.add_argument("--all", action="store_true", help="every dead letter (needs --yes)")
    q.add_argument("--yes", action="store_true", help="really drop them all")


def letter_id(raw: str) -> str:
    """The id of a stored dead letter: a digest of its record."""
    return hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def run(settings: Settings, args: argparse.Namespace) -> int:
    key = Keys(settings.namespace).dead_letters
    store = connect_store(settings)
    try:
        if args.deadletters_command == "drop":
            return _drop(store, key, args)
        return _list(store, key, args)
    except RedisError as exc:
        raise BrokerUnavailable(
            f"cannot reach Redis at {mask_url(settings.redis_url)}: {exc}") from exc
    finally:
        store.close()


def _list(store: Any, key: str, args: argparse.Namespace) -> int:
    if args.limit < 1:
        return fail(f"--limit must be positive, not {args.limit}", 2)
    total = store.llen(key)
    letters = [(letter_id(raw), _record(raw)) for raw in store.lrange(key, 0, args.limit - 1)]
    if args.json:
        print(json.dumps({"total": total,
                          "letters": [{"id": i, **record} for i, record in letters]}, indent=2))
        return 0
    print_table(["ID", "WHEN", "QUEUE", "REASON", "PREVIEW"],
                [[i, _when(r.get("at")), str(r.get("queue") or "?"),
                  _cut(str(r.get("reason", "")), _REASON_CHARS), _preview(r)]
                 for i, r in letters])
    if total > len(letters):
        print(f"({len(letters)} of {total}; --limit shows more)")
    return 0


def _drop(store: Any, key: str, args: argparse.Namespace) -> int:
    if args.all:
        if args.ids:
            return fail("give ids or --all, not both", 2)
        if not args.yes:
            return fail("dropping every dead letter needs --yes", 2)
        count = store.llen(key)
        store.delete(key)
        print(f"dropped {count} dead letter(s)")
        return 0
    if not args.ids:
        return fail("name the dead letters to drop (ids from `iii-broker deadletters`), "
                    "or --all --yes", 2)
    wanted = set(args.ids)
    found = {letter_id(raw): raw for raw in store.lrange(key, 0, -1)
             if letter_id(raw) in wanted}
    for raw in found.values():
        store.lrem(key, 1, raw)
    missing = sorted(wanted - set(found))
    print(f"dropped {len(found)} dead letter(s)")
    if missing:
        return fail(f"no dead letter with id {', '.join(missing)}")
    return 0


def _record(raw: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return {"reason": "(unreadable record)", "body": raw}
    return record if isinstance(record, dict) else {"reason": "(unreadable record)", "body": raw}


def _when(at: Any) -> str:
    if not isinstance(at, int):
        return "?"
    moment = datetime.datetime.fromtimestamp(at / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _preview(record: dict[str, Any]) -> str:
    body = record.get("body")
    if not isinstance(body, str):
        return ""
    if record.get("body_encoding") == "base64":
        return f"(binary, base64) {_cut(body, _PREVIEW_CHARS)}"
    return _cut(body, _PREVIEW_CHARS)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
