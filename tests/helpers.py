"""Test helpers: waiting on conditions, and real processes started as users start them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from iii_broker import testing

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report at the end
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def writers_of(namespace: str) -> list[int]:
    """The pids of the telemetry writer processes (a worker's child) of ``namespace``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"observability.writer" not in (entry / "cmdline").read_bytes():
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"III_NAMESPACE={namespace}".encode() in environ:
            found.append(int(entry.name))
    return found


def delete_namespace(redis_url: str, namespace: str) -> int:
    """:func:`iii_broker.testing.delete_namespace`, once the namespace's telemetry writers
    have ended: a writer outlives its worker (a killed one too) to store what it holds, and
    would otherwise recreate keys of the namespace after the delete."""
    deadline = time.monotonic() + 15
    while writers_of(namespace) and time.monotonic() < deadline:
        time.sleep(0.05)
    return testing.delete_namespace(redis_url, namespace)


class Proc:
    """A child process whose combined output goes to a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self, *, signalled: bool = False) -> None:
        """SIGTERM (unless ``signalled`` already), then SIGKILL after 10 s."""
        if self.popen.poll() is None:
            if not signalled:
                self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait()
        self._log.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


def bin_cmd(name: str, *args: str) -> list[str]:
    """A console script of this environment (``iii-broker``, ``iii-worker``)."""
    path = Path(sys.executable).parent / name
    return [str(path), *args] if path.exists() else [sys.executable, "-m",
                                                     _MODULES[name], *args]


_MODULES = {"iii-broker": "iii_broker", "iii-worker": "iii_broker.worker"}


def dump(procs: list[Proc]) -> str:
    return "\n".join(f"----- {p.name} ({' '.join(p.cmd)})\n{p.output()}" for p in procs)


def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """Run ``fn`` in a daemon thread; the returned future holds its result or exception."""
    fut: Future[T] = Future()

    def run() -> None:
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
            fut.set_exception(exc)

    threading.Thread(target=run, name=f"in-thread-{getattr(fn, '__name__', 'call')}",
                     daemon=True).start()
    return fut


def call_add(settings: Any, proc: Proc) -> None:
    """Wait until ``math::add`` of the quickstart app, run by ``proc``, answers 2 + 3."""
    from iii_broker import App

    client = App("quickstart-test", settings=settings)
    try:
        def answered() -> bool:
            assert proc.popen.poll() is None, f"{proc.name} exited early:\n{proc.output()}"
            return client.trigger("math::add", {"a": 2, "b": 3}, timeout_ms=3000) == {"sum": 5}
        wait_for(answered, timeout=30, what=f"math::add to answer\n{proc.output()}")
    finally:
        client.close()
