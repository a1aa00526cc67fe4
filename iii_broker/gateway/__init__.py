"""The gateway process host: iii's worker WebSocket for iii's own SDK workers
(``iii-broker gateway``; see :mod:`.server`)."""

from .server import Gateway

__all__ = ["Gateway"]
