"""``iii-broker logs``: handlers' log records, read from Redis directly (no engine needed).

    iii-broker logs                          # the last 100 records, oldest first
    iii-broker logs --trace 4bf92f3577b34da6a3ce929d0e0e4736
    iii-broker logs --level warn --function orders::create --since 10m
    iii-broker logs --follow                 # then every new record until Ctrl-C
    iii-broker logs --json                   # one JSON record per line
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from ....console import fail
from ....errors import InvalidArgument
from ....settings import Settings
from ....store import Keys, check_store, connect_store
from .record import SEVERITIES
from .store import LogQuery, LogStore

FOLLOW_BLOCK_MS = 1000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("logs", help="handlers' log records (newest last); --follow for more")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new records until Ctrl-C")
    p.add_argument("--trace", metavar="TRACE_ID", help="only the records of one trace")
    p.add_argument("--level", metavar="LEVEL",
                   help=f"only records at or above LEVEL ({', '.join(SEVERITIES)})")
    p.add_argument("--function", metavar="FUNCTION_ID", help="only what one function logged")
    p.add_argument("--since", metavar="DURATION",
                   help="only records of the last DURATION (30s, 10m, 2h, 1d)")
    p.add_argument("--limit", type=int, default=100, metavar="N",
                   help="print at most the last N records (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON record per line")


def since_ms(text: str) -> int:
    """Unix ms ``text`` (``30s``, ``10m``, ``2h``, ``1d``; bare numbers are seconds) ago;
    raises :class:`InvalidArgument`."""
    m = _DURATION.match(text)
    if not m:
        raise InvalidArgument(f"--since {text!r} is not a duration; write it like 30s, 10m, "
                              "2h or 1d")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    return int((time.time() - seconds) * 1000)


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        q = LogQuery.of({
            "trace_id": args.trace, "function_id": args.function,
            "severity_min": args.level,
            "start_time": since_ms(args.since) if args.since else None,
            "limit": args.limit,
        })
    except InvalidArgument as exc:
        message = exc.message.replace("severity_min", "--level").replace("limit", "--limit") \
            .replace("trace_id", "--trace")
        return fail(message, 2)
    store = connect_store(settings)
    check_store(store, settings)
    logs = LogStore(store, Keys(settings.namespace))
    last = logs.last_id()  # records stored after this are --follow's
    found = logs.find(q)["logs"]
    for rec in reversed(found):
        _print(rec, args.json)
    if not found and not args.json:
        print("no log records" + (" match" if (args.trace or args.function or args.level
                                               or args.since) else " stored yet")
              + (" (following: new ones appear here)" if args.follow else ""),
              file=sys.stderr)
    sys.stdout.flush()
    if not args.follow:
        return 0
    while True:
        last, records = logs.read_after(last, FOLLOW_BLOCK_MS)
        for rec in records:
            if q.matches(rec):
                _print(rec, args.json)
        sys.stdout.flush()


def _print(rec: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rec, sort_keys=True))
        return
    at = datetime.fromtimestamp(rec.get("timestamp_unix_nano", 0) / 1e9, UTC)
    when = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    print(f"{when} {rec.get('severity_text', '?'):<5} {rec.get('function_id', '-')} "
          f"trace={rec.get('trace_id', '-')} {rec.get('body', '')}")
    stack = (rec.get("attributes") or {}).get("exception.stacktrace")
    if stack:
        print("    " + str(stack).replace("\n", "\n    "))
