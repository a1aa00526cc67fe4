"""``iii-broker invocations``: the invocation history, read from Redis directly (so it works
while no engine runs; ``rerun`` needs a live worker of the function).

    iii-broker invocations                                  # the newest 20
    iii-broker invocations --function orders::charge --status failed --since 10m
    iii-broker invocations --json
    iii-broker invocations show 3f2a...                     # every attempt, as JSON
    iii-broker invocations rerun 3f2a...                    # prints the new invocation id
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
from typing import Any

from ....client import Caller
from ....console import print_table
from ....errors import InvalidArgument
from ....message import now_ms
from ....settings import Settings
from ....store import Keys, check_store, connect_store
from .api import get_invocation, list_arguments, list_invocations, rerun
from .record import STATUSES
from .store import HistoryStore

UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_AGO = re.compile(r"^(\d+)(ms|s|m|h|d)$")


def when_ms(text: str, now: int | None = None) -> int:
    """``10m``, ``2h``, ``30s``, ``1d`` (that long ago) or a Unix time in ms, as Unix ms;
    raises :class:`InvalidArgument`."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = _AGO.match(text)
    if match is None:
        raise InvalidArgument(f"{text!r} is not a time: write a duration ago (30s, 10m, 2h, "
                              "1d) or a Unix time in milliseconds")
    return (now_ms() if now is None else now) - int(match[1]) * UNITS_MS[match[2]]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("invocations", help="the invocation history: list it, show one "
                       "invocation's attempts, run one again")
    p.add_argument("--function", metavar="ID", help="only this function's invocations")
    p.add_argument("--status", choices=STATUSES, help="only invocations with this status")
    p.add_argument("--since", metavar="WHEN", help="started at or after: 10m (ago), 2h, 1d, "
                   "or Unix ms")
    p.add_argument("--until", metavar="WHEN", help="started at or before (same forms)")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--offset", type=int, default=0, help="skip this many newest first")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    actions = p.add_subparsers(dest="invocations_command", metavar="ACTION")
    q = actions.add_parser("show", help="every attempt of one invocation (JSON)")
    q.add_argument("invocation_id", metavar="ID")
    q = actions.add_parser("rerun", help="run an invocation again with its original payload "
                           "(queued jobs go back to their queue); prints the new id")
    q.add_argument("invocation_id", metavar="ID")


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.1f}ms" if ms < 1000 else f"{ms / 1000:.2f}s"


def run(settings: Settings, args: argparse.Namespace) -> int:
    r = connect_store(settings)
    check_store(r, settings)
    store = HistoryStore(r, Keys(settings.namespace))
    action = getattr(args, "invocations_command", None)
    if action == "show":
        print(json.dumps(get_invocation(store, args.invocation_id), indent=2))
        return 0
    if action == "rerun":
        caller = Caller(settings)
        try:
            out = rerun(store, caller, args.invocation_id)
        finally:
            caller.close()
        print(json.dumps(out) if args.json else
              f"{out['invocation_id']} (a rerun of {args.invocation_id})")
        return 0
    payload: dict[str, Any] = {"limit": args.limit, "offset": args.offset}
    if args.function:
        payload["function_id"] = args.function
    if args.status:
        payload["status"] = args.status
    now = now_ms()
    if args.since:
        payload["since"] = when_ms(args.since, now)
    if args.until:
        payload["until"] = when_ms(args.until, now)
    list_arguments(payload)  # bad values fail here, naming the option's field
    found = list_invocations(store, payload)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    rows = found["invocations"]
    if not rows:
        print("no invocations recorded" + (" match" if len(payload) > 2 else ""))
        return 0
    print_table(["STARTED", "INVOCATION", "FUNCTION", "TRIGGER", "STATUS", "ATTEMPT",
                 "DURATION", "ERROR"],
                [[_time(x["started_at"]), x["invocation_id"], x["function_id"],
                  x["trigger_type"] + (f" ({x['queue']})" if x.get("queue") else ""),
                  x["status"] + (" (rerun)" if x.get("rerun_of") else ""), str(x["attempt"]),
                  _duration(x["duration_ms"]),
                  f"{x['error']['code']}: {x['error']['message']}"[:80] if x["error"] else ""]
                 for x in rows])
    print(f"({len(rows)} of {found['total']} invocation(s))")
    return 0


__all__ = ["add_parser", "run", "when_ms"]
