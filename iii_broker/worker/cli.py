"""``iii-worker -A module[:attr] [--concurrency N]``: serve an app's functions."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..console import ArgumentParser, fail, setup_logging
from ..errors import IIIError
from ..runtime import Worker
from ..settings import Settings
from .loader import load_app

PROG = "iii-worker"


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog=PROG,
        description="Serve the functions of an iii_broker.App. SIGTERM drains: running "
                    "calls finish, prefetched ones go back to their queues. A second "
                    "SIGINT exits at once.")
    parser.add_argument("-A", "--app", required=True, metavar="MODULE[:ATTR]",
                        help="where the App is, e.g. examples.quickstart or shop:app")
    parser.add_argument("-c", "--concurrency", type=int, default=8,
                        help="handlers run at once, and messages prefetched (default 8)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        return fail("--concurrency must be at least 1", 2, PROG)
    try:
        settings = Settings.from_env()
    except IIIError as exc:
        return fail(exc.message, 2, PROG)
    setup_logging(settings)
    try:
        app = load_app(args.app)
        app.configure(settings)
        if not app.functions and not app.trigger_types:
            return fail(f"-A {args.app}: app {app.name!r} defines no functions (and provides "
                        "no trigger type)", 2, PROG)
        return Worker(app, settings, concurrency=args.concurrency).run()
    except IIIError as exc:
        code = 2 if exc.code == "app_not_found" else 1
        return fail(str(exc.message if code == 2 else exc), code, PROG)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
