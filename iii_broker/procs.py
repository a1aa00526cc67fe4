"""``iii-broker up``: run every process an app needs in the foreground.

Starts the embedded Valkey server when no broker is configured and nothing
answers on 127.0.0.1:6379, then the engine, a worker, the web process and the process
types of the enabled modules (the cron module's ``beat``), prefixes their output like
honcho, and on Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops them all: SIGTERM
first (workers drain), SIGKILL for any still running after the grace period. If one
process exits on its own, the others are stopped too. If ``up`` is killed outright, every
child gets SIGTERM from the kernel (:mod:`.lifeline`) and stops the same way.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import Any, TextIO

from .embedded import redis_answers, start_embedded
from .errors import ConfigError
from .lifeline import die_with_parent
from .modules import EngineConfig, Module, default_modules

GRACE_S = 20.0
_COLORS = ("36", "33", "32", "35", "34")


def process_commands(app_spec: str, concurrency: int,
                     modules: list[Module] | None = None) -> dict[str, list[str]]:
    """The process types of an app and the command of each: engine, worker and web, then
    those of the enabled modules (the cron module's ``beat``)."""
    py = sys.executable
    commands = {
        "engine": [py, "-m", "iii_broker", "engine"],
        "worker": [py, "-m", "iii_broker.worker", "-A", app_spec, "--concurrency",
                   str(concurrency)],
        "web": [py, "-m", "iii_broker", "web"],
    }
    for module in default_modules() if modules is None else modules:
        for name, args in module.processes().items():
            commands[name] = [py, "-m", "iii_broker", *args]
    return commands


def run_up(app_spec: str, *, concurrency: int = 8, embedded: bool = True,
           out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        modules = EngineConfig.load(os.environ.get("III_CONFIG_PATH")).modules
    except ConfigError as exc:
        print(f"up: {exc.message}", file=out)
        return 1
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if os.getcwd() not in env.get("PYTHONPATH", "").split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH")) if p)
    server = None
    configured = env.get("III_BROKER_URL") or env.get("III_REDIS_URL")
    if not configured and not redis_answers():
        if not embedded:
            print("up: nothing answers on 127.0.0.1:6379 and --no-embedded was given", file=out)
            return 1
        try:
            server = start_embedded()
        except RuntimeError as exc:
            print(f"up: {exc}", file=out)
            return 1
        _say(out, "up", "0", f"no Redis on 127.0.0.1:6379: started an embedded Valkey "
             f"server at {server.connection_url}")
        env["III_BROKER_URL"] = env["III_REDIS_URL"] = f"{server.connection_url}/0"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    output = _Output(out)
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        if stopping.is_set():  # second Ctrl-C: no more waiting
            for p in procs.values():
                _kill(p, signal.SIGKILL)
        stopping.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    code = 0
    try:
        for i, (name, cmd) in enumerate(process_commands(app_spec, concurrency, modules).items()):
            # A session of its own: Ctrl-C and a closed terminal reach ``up`` alone, which
            # stops the children in order. ``up`` has a single thread: the kernel sends a
            # parent-death signal again each time a thread of the parent exits, and a
            # second SIGTERM tells a worker to stop draining and exit at once.
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=die_with_parent())
            procs[name] = proc
            color = _COLORS[i % len(_COLORS)]
            output.add(proc, name, color)
            _say(out, name, color, f"started with pid {proc.pid}")
        while not stopping.is_set():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    _say(out, "up", "0", f"{name} exited with code {proc.returncode}; stopping")
                    code = proc.returncode or 1
                    stopping.set()
                    break
            output.pump(0.2)
        _say(out, "up", "0", "stopping all processes")
        for proc in procs.values():
            _kill(proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
            output.pump(0.1)  # their last words while they drain
        for name, proc in procs.items():
            if proc.poll() is None:
                _say(out, "up", "0", f"{name} still running after {GRACE_S:.0f}s: killing")
                _kill(proc, signal.SIGKILL)
                proc.wait()
        output.pump(0.1)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if server is not None:
            server.stop()
        output.close()
    return code


class _Output:
    """The children's output, prefixed line by line like honcho, read in ``up``'s one
    thread (no pump threads: see the comment where children are started)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.selector = selectors.DefaultSelector()

    def add(self, proc: subprocess.Popen[bytes], name: str, color: str) -> None:
        assert proc.stdout is not None
        self.selector.register(proc.stdout, selectors.EVENT_READ, [name, color, b""])

    def pump(self, timeout_s: float) -> None:
        """Print what the children wrote, waiting up to ``timeout_s`` for something."""
        if not self.selector.get_map():
            time.sleep(timeout_s)  # every child closed its output: only time to pass
            return
        for key, _ in self.selector.select(timeout_s):
            name, color, pending = key.data
            chunk = os.read(key.fd, 65536)
            lines = (pending + chunk).split(b"\n")
            key.data[2] = lines.pop() if chunk else b""
            if not chunk:  # the child is gone
                self.selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
            for line in lines:
                if line or chunk:
                    _say(self.out, name, color, line.decode(errors="replace").rstrip("\r"))

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()


def _kill(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def _say(out: TextIO, name: str, color: str, line: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    try:
        if out.isatty():
            print(f"\033[{color}m{stamp} {name:<7}|\033[0m {line}", file=out, flush=True)
        else:
            print(f"{stamp} {name:<7}| {line}", file=out, flush=True)
    except (OSError, ValueError):  # the terminal is gone (SIGHUP): stopping matters more
        pass

