"""OTLP over HTTP, sent by a thread of our own: the endpoint's settings and the batch queue.

:class:`Endpoint` reads the standard variables for one signal (``traces`` or ``logs``):
``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` (used as it is) else ``OTEL_EXPORTER_OTLP_ENDPOINT``
+ ``/v1/<signal>``, and ``..._HEADERS``, ``..._TIMEOUT`` (seconds, as the SDK reads it),
``..._COMPRESSION`` (``gzip`` or ``none``), ``..._CERTIFICATE``, ``..._CLIENT_CERTIFICATE``,
``..._CLIENT_KEY``.

:class:`Exporter` holds what the hot path notes in a bounded deque (past the bound an item
is dropped and counted: noting never blocks) and one daemon thread that wakes every
``schedule_delay_ms`` or when a batch is waiting, encodes batches and POSTs them. Network
I/O happens only there, with the timeout; a failed POST drops its batch, and an outage logs
one warning when it starts and one line when the endpoint answers again.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("iii.observability")

DEFAULT_ENDPOINT = "http://localhost:4318"
DEFAULT_TIMEOUT_S = 10.0
FULL_NOTE_S = 60.0
"""How often an export queue that keeps overflowing is mentioned in the log."""


def _env(name: str, signal: str, env: Any) -> str | None:
    """``OTEL_EXPORTER_OTLP_<SIGNAL>_<name>`` else ``OTEL_EXPORTER_OTLP_<name>``."""
    return (env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}")
            or env.get(f"OTEL_EXPORTER_OTLP_{name}") or None)


def env_int(name: str, default: int, env: Any = None) -> int:
    """A positive integer variable (an OTEL_BSP_* / OTEL_BLRP_* setting), else ``default``
    (with a warning when it is set but not one)."""
    raw = (os.environ if env is None else env).get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("%s=%r is not a positive integer: using %d", name, raw, default)
        return default
    return value


class Endpoint:
    """Where and how one signal's batches are POSTed."""

    def __init__(self, signal: str, env: Any = None) -> None:
        from opentelemetry.util.re import parse_env_headers

        env = os.environ if env is None else env
        self.signal = signal
        self.url = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or (
            (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT).removesuffix("/")
            + f"/v1/{signal}")
        self.headers = {"Content-Type": "application/x-protobuf",
                        **parse_env_headers(_env("HEADERS", signal, env) or "", liberal=True)}
        raw = _env("TIMEOUT", signal, env)
        try:
            self.timeout_s = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            log.warning("OTLP timeout %r is not a number of seconds: using %s", raw,
                        DEFAULT_TIMEOUT_S)
            self.timeout_s = DEFAULT_TIMEOUT_S
        compression = (_env("COMPRESSION", signal, env) or "none").strip().lower()
        if compression not in ("gzip", "none"):
            log.warning("OTLP compression %r is not supported: sending uncompressed",
                        compression)
            compression = "none"
        self.gzip = compression == "gzip"
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.verify: bool | str = _env("CERTIFICATE", signal, env) or True
        cert, key = _env("CLIENT_CERTIFICATE", signal, env), _env("CLIENT_KEY", signal, env)
        self.cert: Any = (cert, key) if cert and key else cert
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "localhost", parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxies = urllib.request.getproxies()
        self._proxied = bool(proxies.get(parts.scheme)) and not urllib.request.proxy_bypass(
            self._host)
        """A proxy variable (HTTPS_PROXY...) applies: requests, which honours it, posts."""
        self._conn: http.client.HTTPConnection | None = None
        self._session: Any = None

    def post(self, body: bytes) -> None:
        """POST one batch; raises when it was not accepted (any non-2xx answer). One
        kept-alive connection (http.client: requests cost ~1 ms of CPU a request)."""
        if self.gzip:
            body = gzip.compress(body, compresslevel=6)
        if self._proxied:
            self._post_proxied(body)
            return
        for fresh in (self._conn is None, True):
            conn = self._conn or self._connect()
            try:
                conn.request("POST", self._path, body=body, headers=self.headers)
                answer = conn.getresponse()
                data = answer.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh:  # not a kept-alive connection the endpoint had closed meanwhile
                    raise
                continue
            except BaseException:
                self.close()
                raise
            if answer.will_close:
                self.close()
            if not 200 <= answer.status < 300:
                raise OSError(f"HTTP {answer.status}: {data[:200]!r}")
            return

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            context = ssl.create_default_context(
                cafile=self.verify if isinstance(self.verify, str) else None)
            if self.cert:
                certfile, keyfile = self.cert if isinstance(self.cert, tuple) else (self.cert,
                                                                                    None)
                context.load_cert_chain(certfile, keyfile)
            self._conn = http.client.HTTPSConnection(self._host, self._port,
                                                     timeout=self.timeout_s, context=context)
        else:
            self._conn = http.client.HTTPConnection(self._host, self._port,
                                                    timeout=self.timeout_s)
        return self._conn

    def _post_proxied(self, body: bytes) -> None:
        if self._session is None:
            import requests
            self._session = requests.Session()
        answer = self._session.post(self.url, data=body, headers=self.headers,
                                    timeout=self.timeout_s, verify=self.verify, cert=self.cert)
        if not 200 <= answer.status_code < 300:
            raise OSError(f"HTTP {answer.status_code}: {answer.text[:200]!r}")

    def forget(self) -> None:
        """Drop the connection without closing it (a forked child: it is the parent's)."""
        self._conn = None
        self._session = None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self._session is not None:
            self._session.close()
            self._session = None


class Exporter:
    """A bounded queue of noted items and the thread that sends them in batches."""

    def __init__(self, endpoint: Endpoint, encode: Callable[[list[Any]], bytes], *,
                 max_queue: int, batch: int, schedule_delay_ms: int) -> None:
        self.endpoint = endpoint
        self.encode = encode
        self.max_queue = max_queue
        self.batch = min(batch, max_queue)
        self.delay_s = schedule_delay_ms / 1000
        self.queue: deque[Any] = deque()
        self.dropped = 0
        """Items dropped: the queue was full, or their batch could not be sent."""
        self.sent = 0
        self.requests = 0
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._asked = 0  # flushes asked for ...
        self._done = 0   # ... and done (everything noted before the ask was handled)
        self._stopping = False
        self._down = False  # the endpoint failed last time (one warning per outage)
        self._full = False  # the queue overflowed since the thread last looked
        self._full_noted = -FULL_NOTE_S
        self._thread: threading.Thread | None = None
        self._start_thread()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forked)

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"iii-otlp-{self.endpoint.signal}")
        self._thread.start()

    def _forked(self) -> None:
        """In a forked child: what the parent held is the parent's; a thread of its own."""
        self.queue.clear()
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._asked = self._done = 0
        self.endpoint.forget()
        if not self._stopping:
            self._start_thread()

    # -- the calling thread: take note only ----------------------------------------------

    def put(self, item: Any) -> None:
        """Note ``item`` for the next batch; never blocks (full: dropped and counted)."""
        q = self.queue
        if len(q) >= self.max_queue:
            self.dropped += 1
            if not self._full:
                self._full = True
                self._wake.set()  # the thread says so (never log on a handler's thread)
            return
        q.append(item)
        if len(q) >= self.batch and not self._wake.is_set():
            self._wake.set()

    # -- the export thread ---------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            woken = self._wake.wait(self.delay_s)
            self._wake.clear()
            with self._cond:
                asked, stopping = self._asked, self._stopping
            try:
                # woken by a full batch: full batches only (the rest waits for the next
                # one or the delay: sending what trickles in meanwhile would make a
                # request of a few items each time); else everything
                self._send_all(everything=not woken or asked > self._done or stopping)
            except Exception:  # noqa: BLE001 - the thread goes on whatever happened
                log.exception("tracing: exporting %s failed", self.endpoint.signal)
            with self._cond:
                self._done = asked
                self._cond.notify_all()
            if stopping:
                self.endpoint.close()
                return

    def _send_all(self, everything: bool) -> None:
        q = self.queue
        if self._full:
            self._full = False
            if not self._down and time.monotonic() - self._full_noted >= FULL_NOTE_S:
                self._full_noted = time.monotonic()
                log.warning("tracing: the %s export queue is full (%d): %s dropped so far "
                            "(is the OTLP endpoint keeping up?)", self.endpoint.signal,
                            self.max_queue, self.dropped)
        left = len(q)  # what was noted before now: what arrives meanwhile waits
        while left >= self.batch or (everything and left > 0):
            batch = [q.popleft() for _ in range(min(left, self.batch))]
            left -= len(batch)
            try:
                body = self.encode(batch)
            except Exception as exc:  # noqa: BLE001 - a bug here never stops the thread
                self.dropped += len(batch)
                log.warning("tracing: a batch of %d %s could not be encoded (%s: %s)",
                            len(batch), self.endpoint.signal, type(exc).__name__, exc)
                continue
            self.requests += 1
            try:
                self.endpoint.post(body)
            except Exception as exc:  # noqa: BLE001 - unreachable, stalled, refused
                self.dropped += len(batch)
                if not self._down:
                    self._down = True
                    log.warning("tracing: cannot send %s to %s (%s: %s); dropping them "
                                "until it answers", self.endpoint.signal, self.endpoint.url,
                                type(exc).__name__, exc)
                continue
            self.sent += len(batch)
            if self._down:
                self._down = False
                log.warning("tracing: %s reach %s again (%d dropped so far)",
                            self.endpoint.signal, self.endpoint.url, self.dropped)

    # -- life ----------------------------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Send everything noted so far, waiting at most ``timeout_s``; False when the
        thread did not get through in time (it goes on in the background)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self.queue
        with self._cond:
            self._asked += 1
            target = self._asked
            self._wake.set()
            return self._cond.wait_for(lambda: self._done >= target, timeout_s)

    def shutdown(self, timeout_s: float) -> bool:
        """Send what is left and stop the thread, waiting at most ``timeout_s``."""
        with self._cond:
            self._stopping = True
        return self.flush(timeout_s)
