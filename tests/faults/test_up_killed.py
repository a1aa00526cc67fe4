"""``iii-broker up`` killed or hung up on: nothing it started may run on.

SIGKILL gives ``up`` no chance to stop its children: the kernel tells each one
(``PR_SET_PDEATHSIG``, Linux) and they stop as on Ctrl-C, gunicorn's worker processes
following their master. SIGHUP (a closed terminal) is handled like Ctrl-C.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from iii_broker.procs import GRACE_S
from tests.faults.support import report
from tests.helpers import Proc, bin_cmd, call_add, free_port, wait_for
from tests.test_up import _UP_WITHOUT_REDIS, base_env, child_pids

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="children die with `up` through prctl (Linux)")


@pytest.fixture
def up_proc(tmp_path):
    procs: list[Proc] = []

    def start(cmd: list[str], env: dict[str, str]) -> Proc:
        procs.append(proc := Proc("up", cmd, env, tmp_path))
        return proc
    yield start
    for proc in procs:
        proc.stop()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (gunicorn's workers too), from /proc."""
    out, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                found = [int(c) for c in task.read_text().split()]
            except FileNotFoundError:
                continue
            out += found
            todo += found
    return out


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent (or an init) to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_up(up_proc, settings, web_port: int):
    up = up_proc(bin_cmd("iii-broker", "up", "-A", "examples.quickstart", "--concurrency", "2"),
                 base_env(**settings.with_overrides(http_port=web_port).child_env()))
    child_pids(up)
    call_add(settings, up)
    wait_for(lambda: listening(web_port), timeout=20, what=f"web on {web_port}\n{up.output()}")
    # the engine, the worker, gunicorn's master and its worker process at least
    pids = wait_for(lambda: found if len(found := descendants(up.pid)) >= 4 else None,
                    timeout=20, what="up's processes")
    return up, pids


def test_up_killed_with_sigkill_takes_every_process_with_it(up_proc, settings, store):
    port = free_port()
    up, pids = start_up(up_proc, settings, port)

    killed = time.monotonic()
    up.signal(signal.SIGKILL)
    up.wait(timeout=5)

    def all_gone() -> bool:
        return not any(running(pid) for pid in pids) and not listening(port)
    wait_for(all_gone, timeout=GRACE_S, what=f"{[p for p in pids if running(p)]} to exit "
             f"and port {port} to be free\n{up.output()}")
    # they stopped as on Ctrl-C: the engine and the worker unregistered as they left
    wait_for(lambda: store.zcard(f"{settings.namespace}:workers") == 0, timeout=5,
             what="the workers to unregister")
    report("`iii-broker up` SIGKILLed", f"its {len(pids)} processes drained and exited; "
           "ports free; engine and worker unregistered", "nothing", time.monotonic() - killed)


def test_up_hung_up_on_stops_the_stack_like_ctrl_c(up_proc, settings, store):
    port = free_port()
    up, pids = start_up(up_proc, settings, port)

    started = time.monotonic()
    up.signal(signal.SIGHUP)
    code = up.wait(timeout=GRACE_S + 10)
    out = up.output()
    assert code == 0, out
    assert time.monotonic() - started < GRACE_S, "the children needed SIGKILL"
    assert "stopping all processes" in out and "killing" not in out
    assert not any(running(pid) for pid in pids)
    assert not listening(port)
    assert store.zcard(f"{settings.namespace}:workers") == 0


def test_up_killed_with_sigkill_takes_its_embedded_valkey_with_it(up_proc, namespace):
    env = base_env(III_NAMESPACE=namespace, III_HEARTBEAT_INTERVAL_S="0.3",
                   III_HTTP_PORT=str(free_port()))
    up = up_proc([sys.executable, "-c", _UP_WITHOUT_REDIS], env)
    match = wait_for(
        lambda: re.search(r"started an embedded Valkey server at redis://127.0.0.1:(\d+)",
                          up.output()),
        timeout=20, what=f"up to start the embedded server\n{up.output()}")
    valkey_port = int(match.group(1))
    child_pids(up)
    pids = descendants(up.pid)
    assert listening(valkey_port)

    up.signal(signal.SIGKILL)
    up.wait(timeout=5)
    wait_for(lambda: not any(running(pid) for pid in pids) and not listening(valkey_port),
             timeout=GRACE_S, what=f"{[p for p in pids if running(p)]} to exit and the "
             f"embedded Valkey on {valkey_port} to stop")
