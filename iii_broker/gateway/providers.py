"""Custom trigger types provided by SDK workers (``registertriggertype``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Gateway

log = logging.getLogger("iii.gateway")


class Providers:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def start(self) -> None:
        pass

    def provide(self, conn: Connection, frame: dict[str, Any]) -> None:
        pass

    def withdraw(self, conn: Connection, type_id: str) -> None:
        pass

    def result(self, conn: Connection, frame: dict[str, Any]) -> None:
        pass

    def gone(self, conn: Connection) -> None:
        pass
