"""Live streams: ``stream``, ``stream:join`` and ``stream:leave`` triggers, and the
``stream`` process that serves iii's browser WebSocket protocol (iii-reference §3, streams).

=================  ===========================================================================
``options``        the stream process's settings (``[modules.stream]``)
``protocol``       client frames (join, leave) and the messages the server sends
``wire``           one writer per socket: whole frames under one lock (simple-websocket, wsproto)
``peer``           one open socket: its subscriptions, its bounded send queue and writer
``hub``            the process's one Redis subscription, fanned out to the subscribed sockets
``builtins``       the ``stream::*`` built-ins and the ``stream`` change triggers (engine)
``hooks``          ``auth_function``, ``stream:join`` and ``stream:leave`` calls
``app``            the Flask app (flask-sock): the auth hook and the socket's view
``server``         ``iii-broker stream``: gunicorn with the gevent worker
=================  ===========================================================================

    [modules.stream]
    port = 3112                  # where iii-broker stream listens (host 127.0.0.1, path "/")
    auth_function = "auth::ws"   # optional: called before each upgrade; a refusal is 401
    max_message_bytes = 65536    # larger client frames close the socket with 1009
    ping_interval_s = 20         # unanswered by the next ping: closed
    send_queue = 1024            # messages queued per socket; overflow drops the client
    max_connections = 10000      # open sockets per process
    compression = false          # permessage-deflate for clients that offer it
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any, ClassVar

from ...documents import DocumentStore, Limits
from ...errors import ConfigError
from ...settings import Settings
from ..base import (
    CONDITION,
    LIMITS,
    Builtin,
    Duty,
    Field,
    Module,
    TriggerType,
    function_id,
    nonempty,
    port,
)
from ..changes import ChangeFeed
from ..hosts import EngineHost
from . import builtins
from .hooks import JOIN, LEAVE
from .options import StreamOptions

STREAM = builtins.STREAM
FEED_INTERVAL_S = 0.05


def _positive(value: Any) -> str | None:
    return None if value > 0 else f"is {value}; use a positive number"


def _path(value: str) -> str | None:
    if not value.startswith("/"):
        return f"is {value!r}; a path starts with '/' (the default is \"/\")"
    return None


def at_least(minimum: int, unit: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value >= minimum else f"is {value}; use at least {minimum} {unit}"
    return check


class StreamModule(Module):
    name = "stream"
    trigger_types: ClassVar[tuple[TriggerType, ...]] = (
        TriggerType(STREAM, {
            "stream_name": Field(str, required=True, check=nonempty),
            "group_id": Field(str),
            "item_id": Field(str),
            "condition_function_id": CONDITION,
        }, "fires when a stream item changes"),
        TriggerType(JOIN, {"condition_function_id": CONDITION},
                    "a client subscribes to a stream"),
        TriggerType(LEAVE, {"condition_function_id": CONDITION},
                    "a client leaves a stream"),
    )
    options: ClassVar[dict[str, Field]] = {
        "enabled": Field(bool, default=True),
        "host": Field(str, default=StreamOptions.host, check=nonempty),
        "port": Field(int, default=StreamOptions.port, check=port),
        "path": Field(str, default=StreamOptions.path, check=_path),
        "auth_function": Field(str, check=function_id),
        "max_message_bytes": Field(int, default=StreamOptions.max_message_bytes,
                                   check=at_least(256, "bytes")),
        "ping_interval_s": Field((int, float), default=StreamOptions.ping_interval_s,
                                 check=_positive),
        "send_queue": Field(int, default=StreamOptions.send_queue,
                            check=at_least(1, "message")),
        "max_connections": Field(int, default=StreamOptions.max_connections,
                                 check=at_least(1, "connection")),
        "compression": Field(bool, default=StreamOptions.compression),
        **LIMITS,
    }

    def stream_options(self, settings: Settings) -> StreamOptions:
        return StreamOptions.of(self.config, settings)

    # -- engine ---------------------------------------------------------------------

    def builtins(self, engine: EngineHost) -> list[Builtin]:
        store = DocumentStore(engine.registry.r, Limits.of(self.config))
        return builtins.StreamBuiltins(store, engine.registry.keys).builtins()

    def _feed(self, engine: EngineHost) -> ChangeFeed:
        feed: ChangeFeed | None = getattr(self, "_stream_feed", None)
        if feed is None:  # one per engine process
            keys = engine.registry.keys
            feed = self._stream_feed = ChangeFeed(
                engine, builtins.STREAM, keys.stream_changes, keys.stream_cursors,
                matches=builtins.matches, payload=builtins.change_payload, lane=builtins.lane)
        return feed

    def duties(self, engine: EngineHost) -> list[Duty]:
        return [Duty("stream-triggers", self._feed(engine).run, FEED_INTERVAL_S)]

    def triggers_registered(self, engine: EngineHost, triggers: list[dict[str, Any]]) -> None:
        self._feed(engine).start_at_end(triggers)

    # -- processes and CLI -------------------------------------------------------------

    def processes(self) -> dict[str, list[str]]:
        return {"stream": ["stream"]}

    def cli_commands(self, sub: argparse._SubParsersAction[Any]
                     ) -> dict[str, Callable[[Settings, argparse.Namespace], int]]:
        sub.add_parser("stream", help="serve stream WebSockets for browsers ([modules.stream] "
                       "host:port, default 127.0.0.1:3112; gunicorn, gevent worker)")
        return {"stream": _serve}


def configured(settings: Settings) -> StreamModule | None:
    """The stream module as the settings file configures it; None when it is disabled."""
    module = StreamModule.configured(settings)
    assert module is None or isinstance(module, StreamModule)
    return module


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    module = configured(settings)
    if module is None:
        raise ConfigError("the stream module is disabled ([modules.stream] enabled = false): "
                          "iii-broker stream has nothing to serve")
    # gunicorn, gevent and Flask load in the stream process only; gevent's monkey-patching
    # happens in gunicorn's worker, before the app (and anything that holds a lock) is built.
    server = importlib.import_module(f"{__name__}.server")
    return int(server.serve(settings, module.stream_options(settings)))


__all__ = ["JOIN", "LEAVE", "STREAM", "StreamModule"]
