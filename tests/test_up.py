"""``iii-broker up``: every process of an app in the foreground, stopped by Ctrl-C.

And the embedded Valkey server ``up`` starts on a machine without Redis.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from iii_broker import Settings
from iii_broker.embedded import redis_answers, start_embedded
from iii_broker.procs import GRACE_S
from tests.helpers import Proc, bin_cmd, call_add, free_port, wait_for


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def child_pids(up: Proc) -> dict[str, int]:
    """The pids ``up`` reports for its engine, worker and beat."""
    def found() -> dict[str, int]:
        pids = dict(re.findall(r"(engine|worker|beat)\s*\| started with pid (\d+)",
                               up.output()))
        return {k: int(v) for k, v in pids.items()} if len(pids) == 3 else {}
    return wait_for(found, timeout=20, what=f"up to start its processes\n{up.output()}")


def is_iii_process(pid: int) -> bool:
    try:
        return b"iii_broker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


@pytest.fixture
def up_proc(tmp_path):
    procs: list[Proc] = []

    def start(cmd: list[str], env: dict[str, str]) -> Proc:
        proc = Proc("up", cmd, env, tmp_path)
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        proc.stop()


def test_up_runs_the_app_until_ctrl_c_then_stops_every_process(up_proc, settings, store):
    up = up_proc(bin_cmd("iii-broker", "up", "-A", "examples.quickstart", "--concurrency", "2"),
                 base_env(**settings.child_env()))
    pids = child_pids(up)
    assert all(is_iii_process(pid) for pid in pids.values())
    call_add(settings, up)
    assert store.zcard(f"{settings.namespace}:workers") == 2  # the engine and the worker
    gateway = wait_for(lambda: re.search(r"gateway\s*\| started with pid (\d+)", up.output()),
                       what=f"up to start a gateway\n{up.output()}")
    pids["gateway"] = int(gateway.group(1))
    wait_for(lambda: listening(settings.gateway_port), what="the gateway to listen")

    started = time.monotonic()
    up.signal(signal.SIGINT)
    code = up.wait(timeout=GRACE_S + 10)
    out = up.output()
    assert code == 0, out
    assert time.monotonic() - started < GRACE_S, "the children needed SIGKILL"
    assert "stopping all processes" in out and "killing" not in out
    for name, pid in pids.items():
        assert not is_iii_process(pid), f"{name} (pid {pid}) is still running"
    assert store.zcard(f"{settings.namespace}:workers") == 0  # both unregistered as they left


def test_up_stops_everything_when_one_process_dies(up_proc, settings, store):
    up = up_proc(bin_cmd("iii-broker", "up", "-A", "examples.quickstart", "--concurrency", "2"),
                 base_env(**settings.child_env()))
    pids = child_pids(up)
    call_add(settings, up)
    os.kill(pids["worker"], signal.SIGKILL)
    code = up.wait(timeout=GRACE_S + 10)
    assert code != 0
    assert f"worker exited with code {-signal.SIGKILL}; stopping" in up.output()
    assert not is_iii_process(pids["engine"])


def test_up_with_an_app_that_does_not_load_exits_non_zero(up_proc, settings, store):
    up = up_proc(bin_cmd("iii-broker", "up", "-A", "nonexistent.module"),
                 base_env(**settings.child_env()))
    assert up.wait(timeout=30) != 0
    assert "no module named 'nonexistent'" in up.output()


def test_the_embedded_server_answers_ping_and_stops_cleanly():
    server = start_embedded(port=None)
    try:
        url = urlsplit(server.connection_url)
        pid = server.pid
        assert (url.hostname, url.scheme) == ("127.0.0.1", "redis")
        assert url.port != 6379  # port=None picks a free port
        assert redis_answers(url.hostname, url.port)
        client = redis.Redis.from_url(server.connection_url + "/0", decode_responses=True)
        assert client.ping() is True
        client.set("k", "v")
        assert client.get("k") == "v"
        client.close()
    finally:
        server.stop()
    assert not redis_answers(url.hostname, url.port)
    assert not Path(f"/proc/{pid}").exists()
    assert not server.data_dir.exists()  # no temporary files left behind


# ``up`` with no URL configured starts the embedded server only when nothing answers on
# 127.0.0.1:6379, and this machine's Redis does answer there. So the probe is replaced,
# and the embedded server takes a free port: the real ``up`` code runs from there on.
_UP_WITHOUT_REDIS = """
import sys
import iii_broker.procs as procs
from iii_broker.embedded import start_embedded
procs.redis_answers = lambda *args, **kwargs: False
procs.start_embedded = lambda: start_embedded(port=None)
from iii_broker.cli import main
sys.exit(main(["up", "-A", "examples.quickstart", "--concurrency", "2"]))
"""


def test_up_without_any_redis_runs_the_app_on_an_embedded_server(up_proc, namespace):
    env = base_env(III_NAMESPACE=namespace, III_HEARTBEAT_INTERVAL_S="0.3",
                   III_HTTP_PORT=str(free_port()), III_STREAM_PORT=str(free_port()),
                   III_GATEWAY_PORT=str(free_port()))
    up = up_proc([sys.executable, "-c", _UP_WITHOUT_REDIS], env)
    match = wait_for(
        lambda: re.search(r"started an embedded Valkey server at (redis://\S+)", up.output()),
        timeout=20, what=f"up to start the embedded server\n{up.output()}")
    url = match.group(1) + "/0"
    pids = child_pids(up)
    call_add(Settings(broker_url=url, redis_url=url, namespace=namespace), up)

    up.signal(signal.SIGINT)
    assert up.wait(timeout=GRACE_S + 10) == 0, up.output()
    assert not any(is_iii_process(pid) for pid in pids.values())
    parts = urlsplit(url)
    assert not redis_answers(parts.hostname, parts.port), "the embedded server was left running"
