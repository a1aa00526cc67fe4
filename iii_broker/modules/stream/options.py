"""The stream process's settings, from the stream module's ``[modules.stream]`` table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...settings import Settings


@dataclass(frozen=True)
class StreamOptions:
    """Where ``iii-broker stream`` listens and how it treats its sockets."""

    host: str = "127.0.0.1"
    port: int = 3112
    path: str = "/"
    """The WebSocket path; any other path is 404."""
    auth_function: str | None = None
    """Called before the upgrade with ``{headers, path, query_params, addr}``; a refusal is 401."""
    max_message_bytes: int = 64 * 1024
    """Largest frame a client may send; a larger one closes the socket with 1009."""
    ping_interval_s: float = 20.0
    """A ping this often; a client that has not answered by the next one is closed (1008)."""
    send_queue: int = 1024
    """Messages waiting to be written to one socket; one more drops that client (1008)."""
    max_connections: int = 10_000
    """Open sockets per process; past it the upgrade is answered 503."""
    compression: bool = False
    """Accept permessage-deflate when a client offers it (browsers always do). Off by
    default: a compressed socket needs its own encoding of every message, where plain
    sockets share one frame per message, and stream messages are small."""

    @classmethod
    def of(cls, config: dict[str, Any], settings: Settings) -> StreamOptions:
        """From the module's checked config (defaults filled in); ``III_STREAM_HOST`` and
        ``III_STREAM_PORT``, when set, override ``host`` and ``port``."""
        host = settings.stream_host if "stream_host" in settings.explicit else \
            config.get("host", cls.host)
        port = settings.stream_port if "stream_port" in settings.explicit else \
            int(config.get("port", cls.port))
        return cls(host=host, port=port,
                   path=config.get("path", cls.path), auth_function=config.get("auth_function"),
                   max_message_bytes=int(config.get("max_message_bytes", cls.max_message_bytes)),
                   ping_interval_s=float(config.get("ping_interval_s", cls.ping_interval_s)),
                   send_queue=int(config.get("send_queue", cls.send_queue)),
                   max_connections=int(config.get("max_connections", cls.max_connections)),
                   compression=bool(config.get("compression", cls.compression)))
