"""``iii-broker stream``: the stream app under gunicorn's gevent worker.

Why gevent and a process of its own (docs/architecture.md, "Serving streams"): an open
WebSocket holds whatever serves it for as long as it is open. Under gunicorn's gthread
worker that is a thread per socket (threads = maximum clients, each with its own stack),
and it would take the web process's threads from HTTP triggers. Under the gevent worker,
flask-sock's per-socket threads (simple-websocket's reader, our writer) are greenlets:
thousands of sockets in one process for a few KiB each.

Monkey-patching happens in gunicorn's worker (``GeventWorker.init_process`` patches, then
loads the app), and the app is not preloaded: the Caller, the Redis clients, the hub's
threads and every lock the serving code uses are created after the patch, in the worker.
What the master imported before (``iii_broker.cli`` and what it imports) holds no thread,
and its module-level locks are only taken for moments that never wait on I/O.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import gevent
from gevent import monkey
from gunicorn.app.base import BaseApplication
from gunicorn.workers.ggevent import GeventWorker

from ...settings import Settings
from ...transport import check_servers
from .app import create_app
from .options import StreamOptions

log = logging.getLogger("iii.stream")

CONNECTION_MARGIN = 100
"""gunicorn connections above ``max_connections``, so that the ones past it reach the app
and get a 503 instead of waiting in the listen backlog."""


class StreamWorker(GeventWorker):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's gevent worker that closes its sockets (1001) on SIGTERM, so a
    graceful stop does not wait ``graceful_timeout`` for clients that never leave."""

    def patch(self) -> None:
        # ssl is imported before the patch (redis-py and Kombu import it in the master), and
        # gevent warns about it. Its own check names the modules that bound ssl's names
        # directly (and so stay unpatched): only redis.asyncio, which this process never
        # uses; anything else is let through.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            super().patch()
        for w in caught:
            text = str(w.message)
            if "ssl" in text and text.count(".py)") == text.count("redis/asyncio/"):
                log.debug("gevent: %s", text)
                continue
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def load_wsgi(self) -> None:
        if not monkey.is_module_patched("threading"):  # pragma: no cover - a broken setup
            raise RuntimeError("the stream app must load after gevent's monkey-patching")
        super().load_wsgi()

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        gevent.spawn(self._close_sockets)

    def _close_sockets(self) -> None:
        server = getattr(self.wsgi, "extensions", {}).get("iii_stream")
        if server is not None:
            server.shutdown()


class StreamApplication(BaseApplication):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn configured from code: one gevent worker process."""

    def __init__(self, settings: Settings, options: StreamOptions) -> None:
        self.settings = settings
        self.stream_options = options
        host = f"[{options.host}]" if ":" in options.host and not options.host.startswith("[") \
            else options.host
        self.options: dict[str, Any] = {
            "bind": f"{host}:{options.port}",
            "worker_class": StreamWorker,
            "workers": 1,
            "worker_connections": options.max_connections + CONNECTION_MARGIN,
            "preload_app": False,  # the app is built after the worker's monkey-patching
            "timeout": 30,
            # on SIGTERM every socket is closed (1001) at once: little is left to wait for
            "graceful_timeout": 5,
            "keepalive": 5,
            "loglevel": settings.log_level.lower(),
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 27
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        return create_app(self.settings, self.stream_options)


def serve(settings: Settings, options: StreamOptions) -> int:
    """Serve streams until SIGTERM or Ctrl-C; raises :class:`BrokerUnavailable` when Redis
    or the broker does not answer at start (once serving, outages are ridden out)."""
    check_servers(settings)
    StreamApplication(settings, options).run()
    return 0
