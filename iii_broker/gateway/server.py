"""``iii-broker gateway``: iii's worker WebSocket (``/``, and ``/otel`` for telemetry)
for iii's own SDK workers, each one a worker of the cluster (:mod:`.connection`).

One thread per socket (the ``websockets`` library's threaded server), a shared
:class:`Caller` for the calls SDK workers make, and a small pool that publishes them.
Several gateways may run, on any hosts; an SDK worker may connect to any of them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from ..client import Caller
from ..errors import ConfigError
from ..httpapi import token_matches
from ..modules import EngineConfig, Module
from ..modules.gateway import GatewayModule, GatewayOptions
from ..modules.observability import process_started as observability_started
from ..outage import store_outage
from ..registry import Registry
from ..runtime.registration import remove_dead_worker
from ..settings import Settings
from ..store import RedisError, connect_store
from ..transport import check_servers
from .connection import Connection
from .frames import error_frame
from .socket import GatewaySocket
from .telemetry import TelemetrySink

log = logging.getLogger("iii.gateway")
# One line per socket opened and closed would drown the gateway's own; its warnings stay.
logging.getLogger("websockets").setLevel(logging.WARNING)

PATHS = ("/", "/otel")
RETIRED_TTL_S = 60
RETIRE_CHECK_S = 1.0


class Gateway:
    """Serves SDK workers until stopped."""

    def __init__(self, settings: Settings, config: EngineConfig | None = None) -> None:
        self.settings = settings
        self.config = config or EngineConfig.load(settings.config_path)
        module = self.config.module("gateway")
        if module is None:
            where = self.config.path or "the engine settings"
            raise ConfigError(f"the gateway module is disabled in {where} "
                              "([modules.gateway] enabled = false)")
        assert isinstance(module, GatewayModule)
        self.options: GatewayOptions = module.gateway_options(settings)
        self.modules: list[Module] = list(self.config.modules)
        self.gateway_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.store = connect_store(settings)
        self.registry = Registry(self.store, settings.namespace)
        self.caller = Caller(settings)
        self.calls = ThreadPoolExecutor(max_workers=32, thread_name_prefix="iii-gateway-call")
        self.telemetry = TelemetrySink(settings)
        self.connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._stop = threading.Event()

    # -- running --------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`stop`). Raises :class:`BrokerUnavailable`
        when Redis or the broker cannot be reached at start."""
        check_servers(self.settings, self.store)
        observability_started("gateway", self.settings)
        o = self.options
        try:
            server = serve(self._serve, o.host, o.port, process_request=self._check_path,
                           create_connection=GatewaySocket, max_size=o.max_message_bytes,
                           ping_interval=o.ping_interval_s, ping_timeout=o.ping_interval_s,
                           compression=None,
                           server_header=None)
        except OSError as exc:
            raise ConfigError(f"the gateway cannot listen on {o.host}:{o.port}: {exc.strerror} "
                              "(set [modules.gateway] port or III_GATEWAY_PORT)") from None
        self._server = server
        if install_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: threading.Thread(target=self.stop).start())
        threading.Thread(target=self._watch_retired, name="iii-gateway-retired",
                         daemon=True).start()
        log.info("gateway %s serving iii SDK workers on ws://%s:%d/%s", self.gateway_id,
                 o.host, o.port, " (token required)" if o.token else "")
        try:
            server.serve_forever()
        finally:
            self._close_all()
            self.calls.shutdown(wait=False, cancel_futures=True)
            self.telemetry.close()
            self.caller.close()
        return 0

    def stop(self) -> None:
        """Stop accepting sockets and close the open ones (1001: their SDKs reconnect,
        to another gateway if one serves the address)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()

    def _close_all(self) -> None:
        with self._lock:
            open_now = list(self.connections.values())
        for conn in open_now:
            try:
                conn.ws.close(1001, "the gateway is stopping")
            except Exception:  # noqa: BLE001
                pass
        for conn in open_now:
            if conn._thread is not None:
                conn._thread.join(15)

    # -- sockets --------------------------------------------------------------------

    def _check_path(self, connection: ServerConnection, request: Any) -> Any:
        path = request.path.split("?", 1)[0]
        if path not in PATHS:
            return connection.respond(404, f"no WebSocket at {path}: iii workers connect to / "
                                      "(telemetry to /otel)\n")
        return None

    def _serve(self, ws: ServerConnection) -> None:
        if self.options.token is not None and not token_matches(
                ws.request.headers.get("Authorization") if ws.request else None,
                self.options.token):
            given = "a wrong bearer token" if ws.request and \
                ws.request.headers.get("Authorization") else "no Authorization header"
            log.warning("refused a worker from %s: %s", ws.remote_address, given)
            try:
                ws.send(error_frame("UNAUTHORIZED", "this gateway needs 'Authorization: Bearer "
                                    f"<token>' (the SDKs send III_TOKEN); the request had {given}"))
                ws.close(1008, "unauthorized")
            except ConnectionClosed:
                pass
            return
        path = ws.request.path.split("?", 1)[0] if ws.request else "/"
        if path == "/otel":
            self._serve_telemetry(ws)
            return
        conn = Connection(self, ws)
        with self._lock:
            self.connections[conn.worker_id] = conn
        log.info("worker %s connected from %s", conn.worker_id, conn.remote)
        conn.serve()

    def _serve_telemetry(self, ws: ServerConnection) -> None:
        try:
            for message in ws:
                if isinstance(message, bytes):
                    self.telemetry.take(message, None)
        except ConnectionClosed:
            pass

    def forget(self, conn: Connection) -> None:
        with self._lock:
            self.connections.pop(conn.worker_id, None)

    # -- reattach -------------------------------------------------------------------

    def retire(self, worker_id: str, *, by: Connection) -> None:
        """A reconnected SDK worker replaces ``worker_id``: close that connection if it is
        still open here, and tell every other gateway to (``NS:gateway:retired:<id>``);
        its registry entry goes at once rather than when its lease lapses."""
        log.info("%s reattached: %s is retired", by.who(), worker_id)
        with self._lock:
            old = self.connections.get(worker_id)
        if old is not None:
            old.ws.close(1000, "replaced by a reattached connection")
            return
        try:
            self.store.set(self.registry.keys.gateway_retired(worker_id), by.worker_id,
                           ex=RETIRED_TTL_S)
            if self.registry.worker_exists(worker_id):
                remove_dead_worker(self.settings, self.registry, self.caller.publisher,
                                   worker_id, "reconnected as " + by.worker_id)
        except RedisError as exc:
            store_outage(self.settings).failed(exc)

    def _watch_retired(self) -> None:
        """Close this gateway's connections another gateway retired (their SDK worker came
        back through it)."""
        while not self._stop.wait(RETIRE_CHECK_S):
            with self._lock:
                ids = list(self.connections)
            if not ids:
                continue
            try:
                pipe = self.store.pipeline(transaction=False)
                for worker_id in ids:
                    pipe.exists(self.registry.keys.gateway_retired(worker_id))
                found = pipe.execute()
            except RedisError:
                continue
            for worker_id, retired in zip(ids, found, strict=True):
                conn = self.connections.get(worker_id)
                if retired and conn is not None:
                    conn.ws.close(1000, "replaced by a reattached connection")
