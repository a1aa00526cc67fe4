"""``iii-broker up``: run every process an app needs in the foreground.

Starts the embedded Valkey server when no broker is configured and nothing
answers on 127.0.0.1:6379, then the engine, a worker and the web process (beat
joins when it arrives), prefixes their output like honcho, and on Ctrl-C or SIGTERM stops
them all: SIGTERM first (workers drain), SIGKILL for any still running after the
grace period. If one process exits on its own, the others are stopped too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, TextIO

from .embedded import redis_answers, start_embedded

GRACE_S = 20.0
_COLORS = ("36", "33", "32", "35", "34")


def process_commands(app_spec: str, concurrency: int) -> dict[str, list[str]]:
    """The process types of an app and the command of each."""
    py = sys.executable
    return {
        "engine": [py, "-m", "iii_broker", "engine"],
        "worker": [py, "-m", "iii_broker.worker", "-A", app_spec, "--concurrency",
                   str(concurrency)],
        "web": [py, "-m", "iii_broker", "web"],
    }


def run_up(app_spec: str, *, concurrency: int = 8, embedded: bool = True,
           out: TextIO | None = None) -> int:
    out = out or sys.stdout
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
    procs: dict[str, subprocess.Popen[str]] = {}
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        if stopping.is_set():  # second Ctrl-C: no more waiting
            for p in procs.values():
                _kill(p, signal.SIGKILL)
        stopping.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        for i, (name, cmd) in enumerate(process_commands(app_spec, concurrency).items()):
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1, start_new_session=True)
            procs[name] = proc
            color = _COLORS[i % len(_COLORS)]
            threading.Thread(target=_pump, args=(proc, name, color, out), daemon=True).start()
            _say(out, name, color, f"started with pid {proc.pid}")
        while not stopping.is_set():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    _say(out, "up", "0", f"{name} exited with code {proc.returncode}; stopping")
                    code = proc.returncode or 1
                    stopping.set()
                    break
            stopping.wait(0.2)
        _say(out, "up", "0", "stopping all processes")
        for proc in procs.values():
            _kill(proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say(out, "up", "0", f"{name} still running after {GRACE_S:.0f}s: killing")
                _kill(proc, signal.SIGKILL)
                proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if server is not None:
            server.stop()
    return code


def _kill(proc: subprocess.Popen[str], sig: int) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def _say(out: TextIO, name: str, color: str, line: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    if out.isatty():
        print(f"\033[{color}m{stamp} {name:<7}|\033[0m {line}", file=out, flush=True)
    else:
        print(f"{stamp} {name:<7}| {line}", file=out, flush=True)


def _pump(proc: subprocess.Popen[str], name: str, color: str, out: TextIO) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        _say(out, name, color, line.rstrip("\n"))
