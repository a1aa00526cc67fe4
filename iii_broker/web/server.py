"""``iii-broker web``: the web app under gunicorn, with threaded workers that read each
request whole before a thread serves it.

Gunicorn rather than werkzeug's development server: it is the same server the Procfile
runs, its threaded worker serves many requests at once (each one mostly waits on a
function's reply), and on SIGTERM it stops accepting and lets running requests finish.
The worker class is :class:`~iii_broker.web.buffering.BufferingWorker`, gthread reading
requests in its event loop, so slow clients cost no thread (see that module).
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from ..errors import ConfigError
from ..modules import EngineConfig, default_modules
from ..settings import Settings
from ..transport import check_servers
from .app import create_app
from .buffering import BufferingWorker, RequestLimits


class WebServer(BaseApplication):  # type: ignore[misc]  # gunicorn has no type hints
    """Gunicorn configured from code: no config file, no command-line parsing."""

    def __init__(self, settings: Settings, *, workers: int = 1, threads: int = 16) -> None:
        self.settings = settings
        self.request_limits = RequestLimits(header_timeout_s=settings.http_header_timeout_s,
                                            body_timeout_s=settings.http_body_timeout_s,
                                            body_limit=settings.http_body_limit)
        self.options: dict[str, Any] = {
            "bind": f"{_host(settings.http_host)}:{settings.http_port}",
            "worker_class": BufferingWorker,
            "workers": workers,
            "threads": threads,
            # a request may wait this long for its function, plus a margin
            "timeout": max(30, settings.http_timeout_ms // 1000 + 10),
            "graceful_timeout": 10,
            "loglevel": settings.log_level.lower(),
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 27: one shared path
            self.cfg.set("control_socket_disable", True)  # per user would clash between servers

    def load(self) -> Any:
        return create_app(self.settings)


def serve(settings: Settings, *, workers: int = 1, threads: int = 16) -> int:
    """Serve the web process until SIGTERM or Ctrl-C; raises ConfigError when the http module
    (whose ``[modules.http]`` table says where to listen) is disabled, and
    :class:`BrokerUnavailable` when Redis or the broker does not answer at start (once
    serving, requests get ``broker_unavailable`` while either is down)."""
    check_servers(settings)
    WebServer(web_settings(settings), workers=workers, threads=threads).run()
    return 0


def web_settings(settings: Settings) -> Settings:
    """Where to listen, as the first enabled module that serves the web process says (the
    http module: ``III_HTTP_HOST``/``III_HTTP_PORT`` when set, else ``host`` and ``port`` of
    ``[modules.http]``, default 127.0.0.1:3111). Raises :class:`ConfigError` when no enabled
    module serves anything here."""
    config = EngineConfig.load(settings.config_path)
    address = next((a for m in config.modules if (a := m.web_address(settings))), None)
    if address is None:
        servers = " or ".join(m.name for m in default_modules() if m.web_address(settings))
        raise ConfigError(f"the {servers} module is disabled in {config.path}: nothing to serve")
    return settings.with_overrides(http_host=address[0], http_port=address[1])


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host  # IPv6
