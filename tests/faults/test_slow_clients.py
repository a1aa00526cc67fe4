"""Slow and hostile HTTP clients: hundreds of them must not starve the others.

A real ``iii-broker web`` (8 threads) in front of a real engine and worker. The slow
clients are raw sockets: slowloris (a header line now and then, never the blank line),
slow bodies (headers, then a byte now and then) and idle connections (nothing at all).
While they hang on, ordinary requests keep being answered quickly; once the header and
body deadlines pass, the slow clients are cut off with 408 (or closed, when they never
sent anything).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass, field

from tests.faults.support import report
from tests.helpers import in_thread
from tests.web.conftest import start_web

SLOW_CLIENTS = 300  # a third of each kind
KINDS = ("slowloris", "slow-body", "idle")


@dataclass
class SlowClient:
    kind: str
    sock: socket.socket
    cut_at: float | None = None
    answer: bytes = b""

    @classmethod
    def open(cls, port: int, kind: str) -> SlowClient:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if kind == "slowloris":
            sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n")
        elif kind == "slow-body":
            sock.sendall(b"POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 100\r\n\r\na")
        sock.setblocking(False)
        return cls(kind, sock)

    def trickle(self) -> None:
        """One more piece, as a slow client sends it; notes when the server cut it off."""
        if self.cut_at is not None:
            return
        try:
            self.answer += self.sock.recv(4096)  # an answer (408) or the end of the stream
            self.cut_at = time.monotonic()
            return
        except BlockingIOError:
            pass  # nothing from the server: still hanging on
        except OSError:
            self.cut_at = time.monotonic()
            return
        try:
            if self.kind == "slowloris":
                self.sock.send(b"X-Slow: yes\r\n")
            elif self.kind == "slow-body":
                self.sock.send(b"a")
        except OSError:
            self.cut_at = time.monotonic()


@dataclass
class SlowCrowd:
    """Slow clients trickling every ``interval_s`` in a thread of their own."""

    port: int
    interval_s: float = 0.5
    clients: list[SlowClient] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> SlowCrowd:
        self.opened_at = time.monotonic()
        self.clients = [SlowClient.open(self.port, KINDS[i % 3]) for i in range(SLOW_CLIENTS)]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            for client in self.clients:
                client.trickle()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        for client in self.clients:
            client.sock.close()

    def hanging_on(self) -> int:
        return sum(c.cut_at is None for c in self.clients)


def normal_requests(port: int, seconds: float) -> list[float]:
    """GET /plain on a fresh connection, over and over; each one's latency in seconds.
    Raises on any failure or any status other than 200."""
    latencies: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/plain")
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 200, (response.status, body)
        latencies.append(time.monotonic() - started)
    return latencies


def p99(latencies: list[float]) -> float:
    return sorted(latencies)[int(len(latencies) * 0.99)]


def test_hundreds_of_slow_clients_do_not_starve_normal_requests(cluster):
    cluster.engine()
    cluster.worker("tests.apps.http_app")
    web = start_web(cluster, III_HTTP_HEADER_TIMEOUT_S="60", III_HTTP_BODY_TIMEOUT_S="60")
    web.wait_status("/plain", 200)

    with SlowCrowd(web.port) as crowd:
        runs = [in_thread(normal_requests, web.port, 6) for _ in range(4)]
        latencies = [lat for run in runs for lat in run.result(timeout=60)]
        still_there = crowd.hanging_on()

    assert still_there == SLOW_CLIENTS, "the slow clients were cut off before their deadlines"
    assert len(latencies) > 100
    assert p99(latencies) < 1.0, f"p99 {p99(latencies):.3f}s over {len(latencies)} requests"
    report(f"{SLOW_CLIENTS} slow HTTP clients hanging on (trickled heads, trickled bodies, idle)",
           f"{len(latencies)} normal requests all 200, p99 {p99(latencies) * 1000:.0f} ms",
           "nothing", 0.0)


def test_slow_clients_are_cut_off_after_the_header_and_body_deadlines(cluster):
    cluster.engine()
    cluster.worker("tests.apps.http_app")
    web = start_web(cluster, III_HTTP_HEADER_TIMEOUT_S="2", III_HTTP_BODY_TIMEOUT_S="4")
    web.wait_status("/plain", 200)

    with SlowCrowd(web.port, interval_s=0.2) as crowd:
        deadline = time.monotonic() + 20
        while crowd.hanging_on() and time.monotonic() < deadline:
            time.sleep(0.2)  # the deadlines under test are time itself
        clients = list(crowd.clients)
        opened_at = crowd.opened_at

    assert all(c.cut_at is not None for c in clients), "slow clients still connected after 20 s"
    for kind, timeout_s in (("slowloris", 2), ("slow-body", 4), ("idle", 2)):
        cut = [c for c in clients if c.kind == kind]
        waited = [c.cut_at - opened_at for c in cut if c.cut_at is not None]
        # deadlines are checked every 0.25 s within a 1 s poll: at most ~1.3 s late
        assert min(waited) >= timeout_s - 0.5, f"{kind} cut off early: {min(waited):.2f}s"
        assert max(waited) <= timeout_s + 3, f"{kind} cut off late: {max(waited):.2f}s"
        if kind == "idle":  # sent nothing: closed without an answer, like a kept-alive one
            assert all(c.answer == b"" for c in cut)
        else:
            assert all(c.answer.startswith(b"HTTP/1.1 408 ") for c in cut), \
                {c.answer[:40] for c in cut}
