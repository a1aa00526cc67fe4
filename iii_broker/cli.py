"""``iii-broker``: run the engine, call functions, list the registry, run an app.

    iii-broker engine
    iii-broker web
    iii-broker trigger math::add '{"a": 2, "b": 3}'
    iii-broker functions | workers | triggers
    iii-broker queues
    iii-broker dlq list payment | show payment ID | redrive payment [ID] | discard payment ID
    iii-broker up -A examples.quickstart
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from .errors import IIIError
from .settings import Settings, mask_url

log = logging.getLogger("iii.cli")


def setup_logging(settings: Settings | None = None) -> None:
    level = (settings.log_level if settings else os.environ.get("III_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kombu", "amqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = 1, prog: str = "iii-broker") -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iii-broker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("engine", help="run an engine process (registry, liveness, built-ins)")
    p.add_argument("--concurrency", type=int, default=8)

    p = sub.add_parser("web", help="serve http triggers on III_HTTP_HOST:III_HTTP_PORT "
                       "(gunicorn, threaded workers)")
    p.add_argument("--workers", type=_positive_int, default=1, help="processes (default 1)")
    p.add_argument("--threads", type=_positive_int, default=16,
                   help="requests each process serves at once (default 16)")

    p = sub.add_parser("trigger", help="call a function and print its result as JSON")
    p.add_argument("function_id")
    p.add_argument("payload", nargs="?", default="null", help="JSON payload (default null)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--void", action="store_true", help="fire and forget")
    group.add_argument("--enqueue", metavar="QUEUE", help="hand the call to a named queue")
    p.add_argument("--timeout-ms", type=_positive_int, default=None)

    for name, what in (("functions", "live functions"), ("workers", "registered workers"),
                       ("triggers", "triggers and whether they are active")):
        p = sub.add_parser(name, help=f"list {what}")
        p.add_argument("--json", action="store_true", help="print the raw JSON")

    from .queues import cli as queues_cli
    queues_cli.add_parsers(sub)

    for name in ("up", "dev"):
        p = sub.add_parser(name, help="run every process of an app (engine, worker, web) until Ctrl-C")
        p.add_argument("-A", "--app", required=True, metavar="MODULE[:ATTR]")
        p.add_argument("--concurrency", type=int, default=8)
        p.add_argument("--no-embedded", action="store_true",
                       help="never start the embedded Valkey server")

    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except IIIError as exc:
        return fail(exc.message, 2)
    setup_logging(settings)
    try:
        if args.command == "engine":
            from .engine import Engine
            return Engine(settings, concurrency=args.concurrency).run()
        if args.command == "web":
            from .web.server import serve
            return serve(settings, workers=args.workers, threads=args.threads)
        if args.command == "trigger":
            return _trigger(settings, args)
        if args.command in ("functions", "workers", "triggers"):
            return _listing(settings, args.command, args.json)
        if args.command in ("queues", "dlq"):
            return queues_cli.run(settings, args)
        if args.command in ("up", "dev"):
            from .procs import run_up
            return run_up(args.app, concurrency=args.concurrency, embedded=not args.no_embedded)
    except IIIError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return 2


def _call(settings: Settings, function_id: str, payload: Any, **kwargs: Any) -> Any:
    from .app import App
    app = App("cli", settings=settings)
    try:
        return app.trigger(function_id, payload, **kwargs)
    finally:
        app.close()


def _trigger(settings: Settings, args: argparse.Namespace) -> int:
    from .client import Enqueue, Void
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        return fail(f"payload is not valid JSON: {exc}", 2)
    action: Any = Void if args.void else Enqueue(args.enqueue) if args.enqueue else None
    try:
        result = _call(settings, args.function_id, payload, action=action,
                       timeout_ms=args.timeout_ms)
    except IIIError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        if exc.stacktrace:
            print(exc.stacktrace.rstrip(), file=sys.stderr)
        return 1
    if not args.void:
        print(json.dumps(result))
    return 0


def _listing(settings: Settings, what: str, raw: bool) -> int:
    from .errors import FunctionNotFound
    try:
        data = _call(settings, f"engine::{what}::list", {}, timeout_ms=10_000)
    except FunctionNotFound:
        return fail(f"no engine is running in namespace {settings.namespace!r} "
                    f"(Redis at {mask_url(settings.redis_url)}); start one with: iii-broker engine")
    if raw:
        print(json.dumps(data, indent=2))
        return 0
    rows: list[list[str]]
    if what == "functions":
        header = ["FUNCTION", "WORKERS", "DESCRIPTION"]
        rows = [[f["function_id"], str(len(f.get("workers", []))), f.get("description") or ""]
                for f in data["functions"]]
    elif what == "workers":
        header = ["WORKER", "APP", "KIND", "PID", "CONCURRENCY", "IN FLIGHT", "FUNCTIONS"]
        rows = [[w["id"], str(w.get("name")), str(w.get("kind")), str(w.get("pid")),
                 str(w.get("concurrency")), str(w.get("in_flight")),
                 ", ".join(w.get("functions") or [])] for w in data["workers"]]
    else:
        header = ["TRIGGER", "TYPE", "FUNCTION", "ACTIVE", "CONFIG"]
        rows = [[t["id"], t["type"], t["function_id"], "yes" if t["active"] else "no",
                 json.dumps(t["config"], sort_keys=True)] for t in data["triggers"]]
    print_table(header, rows)
    return 0


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
