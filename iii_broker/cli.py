"""``iii-broker``: run the engine, call functions, list the registry, run an app.

    iii-broker engine
    iii-broker web
    iii-broker gateway
    iii-broker trigger math::add '{"a": 2, "b": 3}'
    iii-broker functions | workers | triggers
    iii-broker triggers add http reports::daily '{"api_path": "/reports", "http_method": "GET"}'
    iii-broker triggers remove TRIGGER_ID
    iii-broker queues
    iii-broker queues purge QUEUE --yes
    iii-broker dlq list payment | show payment ID | redrive payment [ID] | discard payment ID
    iii-broker logs --trace TRACE_ID | --follow | --level warn --function orders::create
    iii-broker invocations --status failed --since 10m | show ID | rerun ID
    iii-broker up -A examples.quickstart
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .app import App
from .client import Enqueue, Void
from .console import ArgumentParser, fail, setup_logging
from .engine import Engine
from .errors import IIIError
from .modules import default_modules
from .procs import run_up
from .settings import Settings, mask_url
from .store import RedisError

log = logging.getLogger("iii.cli")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="iii-broker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("engine", help="run an engine process (registry, liveness, built-ins)")
    p.add_argument("--concurrency", type=int, default=8)

    p = sub.add_parser("web", help="serve http triggers on III_HTTP_HOST:III_HTTP_PORT "
                       "(gunicorn, threaded workers)")
    p.add_argument("--workers", type=_positive_int, default=1, help="processes (default 1)")
    p.add_argument("--threads", type=_positive_int, default=16,
                   help="requests each process serves at once (default 16)")

    sub.add_parser("gateway", help="serve iii's own SDK workers (Python, Node.js) on iii's "
                   "worker port (III_GATEWAY_HOST:III_GATEWAY_PORT, default 127.0.0.1:49134)")

    p = sub.add_parser("trigger", help="call a function and print its result as JSON")
    p.add_argument("function_id")
    p.add_argument("payload", nargs="?", default="null",
                   help="JSON payload (default null); - reads it from stdin, @FILE from a file")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--void", action="store_true", help="fire and forget")
    group.add_argument("--enqueue", metavar="QUEUE", help="hand the call to a named queue")
    p.add_argument("--timeout-ms", type=_positive_int, default=None)

    commands: dict[str, Callable[[Settings, argparse.Namespace], int]] = {}
    for module in default_modules():
        commands.update(module.cli_commands(sub))

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
            return Engine(settings, concurrency=args.concurrency).run()
        if args.command == "web":
            # gunicorn and Flask load for the web process only (every other command would pay
            # ~200 ms for them).
            server = importlib.import_module("iii_broker.web.server")
            return int(server.serve(settings, workers=args.workers, threads=args.threads))
        if args.command == "gateway":
            # websockets loads for the gateway only.
            gateway = importlib.import_module("iii_broker.gateway")
            return int(gateway.Gateway(settings).run())
        if args.command == "trigger":
            return _trigger(settings, args)
        if args.command in commands:
            return commands[args.command](settings, args)
        if args.command in ("up", "dev"):
            return run_up(args.app, concurrency=args.concurrency, embedded=not args.no_embedded)
    except IIIError as exc:
        return fail(str(exc))
    except RedisError as exc:  # Redis went away in the middle of a command
        return fail(f"broker_unavailable: Redis at {mask_url(settings.redis_url)} failed: {exc}")
    except KeyboardInterrupt:
        return 130
    return 2


def _call(settings: Settings, function_id: str, payload: Any, **kwargs: Any) -> Any:
    app = App("cli", settings=settings)
    try:
        return app.trigger(function_id, payload, **kwargs)
    finally:
        app.close()


def _read_payload(arg: str) -> str:
    """The payload text: the argument itself, stdin for ``-``, a file for ``@PATH``;
    raises OSError when the file cannot be read."""
    if arg == "-":
        return sys.stdin.read()
    if arg.startswith("@"):
        with open(arg[1:], encoding="utf-8") as f:
            return f.read()
    return arg


def _trigger(settings: Settings, args: argparse.Namespace) -> int:
    try:
        text = _read_payload(args.payload)
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"cannot read the payload from {args.payload[1:]}: {exc}", 2)
    try:
        payload = json.loads(text)
    except RecursionError:
        return fail("payload is nested too deeply to be decoded as JSON (the limit is "
                    f"{settings.payload_max_depth} levels, III_PAYLOAD_MAX_DEPTH)", 2)
    except ValueError as exc:
        return fail(f"payload is not valid JSON: {exc}", 2)
    action: Any = Void if args.void else Enqueue(args.enqueue) if args.enqueue else None
    try:
        result = _call(settings, args.function_id, payload, action=action,
                       timeout_ms=args.timeout_ms)
    except IIIError as exc:
        fail(str(exc))  # code: message
        if exc.stacktrace:
            print(exc.stacktrace.rstrip(), file=sys.stderr)
        return 1
    if not args.void:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
