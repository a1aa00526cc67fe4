"""The ceiling of the web bench: a plain Flask route, no broker, same gunicorn settings.

    python -m bench.web_ceiling --workers 2 --threads 16     # listens on III_HTTP_HOST:III_HTTP_PORT

It reuses ``iii_broker.web.server.WebServer`` (the class behind ``iii-broker web``) with
only ``load()`` replaced, so bind, worker class, workers, threads, timeouts and log level
are exactly those of the web process it is compared with.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flask import Flask

from iii_broker.settings import Settings
from iii_broker.web.server import WebServer

from .web_apps import PATH


def create_app() -> Flask:
    app = Flask("bench.web_ceiling", static_folder=None)

    @app.get(PATH)
    def ok() -> tuple[dict[str, Any], int]:
        return {"ok": True}, 200

    return app


class CeilingServer(WebServer):  # type: ignore[misc]
    def load(self) -> Any:
        return create_app()


def main(argv: list[str] | None = None, server: type[WebServer] = CeilingServer) -> int:
    """Serve ``server``'s app (the ceiling's by default) with the given workers and threads."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    server(Settings.from_env(), workers=args.workers, threads=args.threads).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
