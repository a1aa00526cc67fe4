"""The broker floor of the web bench: the least a web process with a separate worker can do.

    python -m bench.web_floor --workers 2 --threads 16     # the web side, like bench.web_ceiling
    python -m bench.web_floor echo --threads 16            # the worker side

Each request LPUSHes a small JSON request naming the thread's own reply list onto one
Redis list and BRPOPs its reply; the echo process (one BRPOP loop per thread, raw
redis-py) answers every request with ``bench.web_apps.RESPONSE`` as JSON. No Kombu,
no envelope, no registry, no tracing: whatever a design that runs functions in another
process over Redis adds, it adds on top of this. Keys live under ``III_NAMESPACE``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import redis
from flask import Flask

from iii_broker.settings import Settings
from iii_broker.web.server import WebServer

from .web_apps import PATH, RESPONSE
from .web_ceiling import main as serve


def request_key(ns: str) -> str:
    return f"{ns}:floor:requests"


def create_app(redis_url: str, ns: str) -> Flask:
    app = Flask("bench.web_floor", static_folder=None)
    local = threading.local()
    requests = request_key(ns)

    @app.get(PATH)
    def ok() -> tuple[Any, int]:
        if not hasattr(local, "r"):  # one connection and one reply list per thread
            local.r = redis.Redis.from_url(redis_url, single_connection_client=True)
            local.reply, local.n = f"{ns}:floor:reply:{os.getpid()}:{threading.get_ident()}", 0
        local.n += 1
        local.r.lpush(requests, json.dumps({"id": local.n, "reply_to": local.reply}))
        while (item := local.r.brpop([local.reply], timeout=10)) is not None:
            reply = json.loads(item[1])
            if reply["id"] == local.n:  # an older one timed out: skip it
                return reply["result"]["body"], reply["result"]["status_code"]
        return {"error": "no reply"}, 504

    return app


class FloorServer(WebServer):  # type: ignore[misc]
    def load(self) -> Any:
        return create_app(self.settings.redis_url, self.settings.namespace)


def echo(settings: Settings, threads: int) -> None:
    """Answer requests in ``threads`` BRPOP loops until SIGTERM (or the parent is gone)."""
    requests, parent = request_key(settings.namespace), os.getppid()

    def loop() -> None:
        r = redis.Redis.from_url(settings.redis_url, single_connection_client=True)
        while True:
            item = r.brpop([requests], timeout=1)
            if item is not None:
                req = json.loads(item[1])
                r.lpush(req["reply_to"], json.dumps({"id": req["id"], "result": RESPONSE}))

    for _ in range(threads):
        threading.Thread(target=loop, daemon=True).start()
    while os.getppid() == parent:
        time.sleep(1)


def main(argv: list[str]) -> int:
    if argv[:1] == ["echo"]:
        threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 16
        echo(Settings.from_env(), threads)
        return 0
    return serve(argv, FloorServer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
