"""The gateway module: iii's own SDK workers (``iii-sdk`` for Python and Node.js, any SDK
speaking iii's worker protocol) as workers of the cluster.

The process that serves them is ``iii-broker gateway`` (:mod:`iii_broker.gateway`, a
process host beside the engine, worker and web): this module holds its settings
(``[modules.gateway]``) and names it as a process type, so ``iii-broker up`` starts one.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ...settings import Settings
from ..base import Field, Module, at_least, nonempty, port
from .options import MAX_MESSAGE_BYTES, GatewayOptions

MODULE = "gateway"


def _token(value: Any) -> str | None:
    if not value or any(c.isspace() for c in value):
        return "must be a non-empty token without whitespace"
    return None


class GatewayModule(Module):
    name = MODULE
    options: ClassVar[dict[str, Field]] = {
        "enabled": Field(bool, default=True),
        "host": Field(str, default="127.0.0.1", check=nonempty),
        "port": Field(int, default=49134, check=port),
        "token": Field(str, check=_token),
        "max_message_bytes": Field(int, default=MAX_MESSAGE_BYTES, check=at_least(1024)),
        "concurrency": Field(int, default=64, check=at_least(1)),
        "ping_interval_s": Field((int, float), default=20.0, check=lambda v: None if v > 0 else
                                 "must be positive"),
    }

    def gateway_options(self, settings: Settings) -> GatewayOptions:
        return GatewayOptions.of(self.config, settings)

    def processes(self) -> dict[str, list[str]]:
        return {"gateway": ["gateway"]}


__all__ = ["GatewayModule", "GatewayOptions"]
