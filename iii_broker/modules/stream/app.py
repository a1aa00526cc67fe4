"""The stream process's Flask app (flask-sock): one WebSocket view at ``[modules.stream]
path``, and the ``auth_function`` in a ``before_request`` hook.

flask-sock completes the WebSocket handshake inside the view, so anything that must be able
to refuse the connection with an HTTP status (401 from ``auth_function``, 503 past
``max_connections``) runs before it, in ``before_request``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask, Response, g, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from ...errors import BrokerUnavailable
from ...httpapi.responses import error_response
from ...observe import METRICS
from ...outage import store_outage
from ...settings import Settings
from ...store import connect_store
from ..observability import process_started as observability_started
from . import protocol, wire
from .hooks import Hooks, JoinFailed, Refused
from .hub import Hub
from .options import StreamOptions
from .peer import Peer
from .protocol import Join, ProtocolError

log = logging.getLogger("iii.stream")

MESSAGE_TOO_BIG = 1009
POOL_SIZE = 64
"""Redis connections of a stream process (a join's sync read takes one for a moment)."""
START_WAIT_S = 5.0
"""How long the app waits at start for its subscription to be confirmed."""


class StreamServer:
    """What one stream process (gunicorn worker) holds: the hub, the hooks, its options."""

    def __init__(self, settings: Settings, options: StreamOptions) -> None:
        self.settings = settings
        self.options = options
        # thousands of sockets' greenlets share it: past POOL_SIZE they wait their turn
        self.store = connect_store(settings, pool_size=POOL_SIZE)
        self.hooks = Hooks(settings, self.store, options.auth_function)
        self.hub = Hub(self.store, settings.namespace, store_outage(settings), self.hooks,
                       compression=options.compression)
        self._lock = threading.Lock()

    def shutdown(self) -> None:
        """Close every socket (1001) so that the worker can exit."""
        self.hub.stop()

    # -- before the upgrade ---------------------------------------------------------

    def before_request(self) -> Response | None:
        if request.path != self.options.path:
            return None  # Flask's 404
        if len(self.hub.peers) >= self.options.max_connections:
            return error_response(503, "TOO_MANY_CONNECTIONS",
                                  f"this stream process holds {self.options.max_connections} "
                                  "sockets (max_connections); try another or later")
        g.stream_context = None
        if not self.options.compression:
            # simple-websocket accepts whatever permessage-deflate offer it sees (browsers
            # always make one); without the offer, sockets stay plain and share frames
            request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        if self.options.auth_function is None:
            return None
        info = {"headers": {k.lower(): v for k, v in request.headers.items()},
                "path": request.path, "query_params": request.args.to_dict(),
                "addr": request.remote_addr}
        try:
            g.stream_context = self.hooks.authenticate(info)
        except Refused as exc:
            return error_response(401, "UNAUTHORIZED", str(exc))
        return None

    # -- the socket -------------------------------------------------------------------

    def serve(self, ws: Any) -> None:
        """The life of one socket: its frames in, until it closes."""
        sock = ws.sock
        assert isinstance(sock, wire.GuardedSocket), "SOCK_SERVER_OPTIONS lost thread_class"
        addr = f"{request.remote_addr}:{request.environ.get('REMOTE_PORT', '?')}"
        peer = Peer(ws, sock, addr, self.options.send_queue, g.get("stream_context"))
        self.hub.add(peer)
        try:
            while peer.open:
                frame = ws.receive()
                if frame is None:
                    continue
                self._frame(peer, frame)
        except ConnectionClosed:
            pass
        finally:
            left = self.hub.remove(peer)
            peer.stop()
            self.hooks.leave(peer, left)
            ws.thread.join(wire.LINGER_S + 1)  # its lingering close, before gunicorn's close

    def _frame(self, peer: Peer, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            peer.push(protocol.error(protocol.INVALID_FRAME, "binary frames are not part of "
                                     "the protocol; send JSON text frames"))
            return
        if len(frame) * 4 > self.options.max_message_bytes and \
                len(frame.encode("utf-8", "surrogatepass")) > self.options.max_message_bytes:
            # simple-websocket counts characters; the limit is in bytes
            peer.close(MESSAGE_TOO_BIG, "message is too big")
            return
        try:
            command = protocol.parse_frame(frame)
        except ProtocolError as exc:
            peer.push(protocol.error(exc.code, exc.message))
            return
        if isinstance(command, Join):
            self._join(peer, command)
            return
        left = self.hub.unsubscribe(peer, command.subscription_id)
        if left is None:
            peer.push(protocol.error(protocol.NOT_SUBSCRIBED, "no subscription "
                                     f"{command.subscription_id!r} on this socket",
                                     command.subscription_id))
            return
        self.hooks.leave(peer, [left])

    def _join(self, peer: Peer, join: Join) -> None:
        sub = join.subscription
        try:
            allowed = self.hooks.join(peer, sub)
        except JoinFailed as exc:
            peer.push(protocol.error(exc.error.code, f"stream:join function {exc.function_id}"
                                     f" failed: {exc.error.message}", sub.subscription_id))
            return
        except BrokerUnavailable as exc:
            peer.push(protocol.error(exc.code, exc.message, sub.subscription_id))
            return
        if not allowed:
            peer.push(protocol.unauthorized(sub, int(time.time() * 1000)))
            return
        if not peer.open:
            return
        self.hub.subscribe(peer, sub)  # first, so that no change after the read is missed
        try:
            peer.push(self.hub.sync(sub))
        except BrokerUnavailable as exc:
            # subscribed all the same: the sync follows once Redis is back (Hub.resync)
            peer.push(protocol.error(exc.code, f"{exc.message}; a sync follows when Redis "
                                     "is back", sub.subscription_id))


def create_app(settings: Settings, options: StreamOptions) -> Flask:
    """The stream process's app; starts its listener and waits (up to
    :data:`START_WAIT_S`) for its subscription, so the first joins miss nothing."""
    server = StreamServer(settings, options)
    app = Flask("iii_broker.stream")
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": options.ping_interval_s,
        "max_message_size": options.max_message_bytes,
        "thread_class": wire.reader_thread,  # every write a whole frame under one lock
    }
    app.extensions["iii_stream"] = server
    app.before_request(server.before_request)
    Sock(app).route(options.path)(server.serve)
    METRICS.gauge_source("iii_stream_connections", lambda: len(server.hub.peers))
    observability_started("stream", settings)
    server.hub.start()
    if not server.hub.subscribed.wait(START_WAIT_S):
        log.warning("not subscribed to %s yet; serving anyway (joins get an error until "
                    "Redis answers, then a sync)", server.hub.keys.stream_live)
    log.info("stream process serving ws://%s:%d%s (ping every %ss, at most %d sockets)",
             options.host, options.port, options.path, options.ping_interval_s,
             options.max_connections)
    return app
