"""The gateway's settings, from the gateway module's ``[modules.gateway]`` table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...settings import Settings

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""iii's limit on one message each way (the SDKs refuse larger ones themselves)."""


@dataclass(frozen=True)
class GatewayOptions:
    """Where ``iii-broker gateway`` listens and what it allows its SDK workers."""

    host: str = "127.0.0.1"
    port: int = 49134
    token: str | None = None
    """Bearer token a connection must present; None: none is asked for."""
    max_message_bytes: int = MAX_MESSAGE_BYTES
    """Largest frame an SDK worker may send; a larger one closes its socket with 1009."""
    concurrency: int = 64
    """Calls one SDK worker is handed at once (its handlers run in its own process)."""
    ping_interval_s: float = 20.0
    """A WebSocket ping this often; a worker that has not answered within as long is closed."""

    @classmethod
    def of(cls, config: dict[str, Any], settings: Settings) -> GatewayOptions:
        """From the module's checked config; ``III_GATEWAY_HOST``/``III_GATEWAY_PORT`` win
        over ``host``/``port`` when set, and the token is ``III_GATEWAY_TOKEN``, else the
        table's ``token``, else ``III_API_TOKEN``."""
        host = settings.gateway_host if "gateway_host" in settings.explicit else \
            config.get("host", cls.host)
        port = settings.gateway_port if "gateway_port" in settings.explicit else \
            int(config.get("port", cls.port))
        token = settings.gateway_token or config.get("token") or settings.api_token
        return cls(host=host, port=port, token=token,
                   max_message_bytes=int(config.get("max_message_bytes", cls.max_message_bytes)),
                   concurrency=int(config.get("concurrency", cls.concurrency)),
                   ping_interval_s=float(config.get("ping_interval_s", cls.ping_interval_s)))
