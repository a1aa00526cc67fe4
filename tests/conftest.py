"""Fixtures: a real Redis (the machine's, or an embedded Valkey when none answers),
a fresh namespace per test, and real engine/worker processes."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from iii_broker import App, Settings
from iii_broker.embedded import redis_answers, start_embedded
from tests.helpers import Proc, bin_cmd, delete_namespace, dump, free_port, wait_for

AMQP_URL = os.environ.get("III_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("III_TEST_REDIS_URL")
    if url:
        yield url
        return
    if redis_answers():
        yield "redis://127.0.0.1:6379/0"
        return
    server = start_embedded(port=None)  # a fresh machine: bring our own server
    try:
        yield server.connection_url + "/0"
    finally:
        server.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def broker_url(redis_url: str) -> str:
    return redis_url


@pytest.fixture
def settings(redis_url: str, broker_url: str, namespace: str) -> Settings:
    return Settings(broker_url=broker_url, redis_url=redis_url, namespace=namespace,
                    heartbeat_interval_s=0.3, default_timeout_ms=10_000, http_port=free_port(),
                    stream_port=free_port(), gateway_port=free_port())


@pytest.fixture
def store(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    client.close()
    delete_namespace(settings.redis_url, settings.namespace)


class Cluster:
    """Real ``iii-broker engine`` and ``iii-worker`` processes for one test."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
        self.env.update(settings.child_env(), PYTHONUNBUFFERED="1")
        self.client = App("test-client", settings=settings)

    def trigger(self, function_id: str, payload: Any = None, **kwargs: Any) -> Any:
        """``self.client.trigger``: the same call as ``iii_broker.testing.Cluster.trigger``,
        so helpers serve both kinds of cluster."""
        return self.client.trigger(function_id, payload, **kwargs)

    def spawn(self, name: str, cmd: list[str], **extra_env: str) -> Proc:
        proc = Proc(name, cmd, {**self.env, **extra_env}, self.log_dir)
        self.procs.append(proc)
        return proc

    def engine(self, wait: bool = True, config: str | None = None) -> Proc:
        """Start an engine; ``config`` is the text of its settings file (TOML)."""
        extra = {}
        if config is not None:
            path = self.log_dir / f"iii-{time.monotonic_ns()}.toml"
            path.write_text(config)
            extra["III_CONFIG_PATH"] = str(path)
        proc = self.spawn("engine", bin_cmd("iii-broker", "engine"), **extra)
        if wait:
            self.wait_function("engine::workers::register", proc)
        return proc

    def worker(self, app: str = "tests.apps.basic", concurrency: int = 4, wait: bool = True,
               **extra_env: str) -> Proc:
        proc = self.spawn("worker", bin_cmd("iii-worker", "-A", app, "--concurrency",
                                            str(concurrency)), **extra_env)
        if wait:
            self.wait_registered(proc)
        return proc

    def gateway(self, port: int | None = None, wait: bool = True, **extra_env: str) -> Proc:
        """Start ``iii-broker gateway`` on a free port (``proc.url`` is its ws:// address)."""
        port = port or free_port()
        proc = self.spawn("gateway", bin_cmd("iii-broker", "gateway"),
                          III_GATEWAY_PORT=str(port), **extra_env)
        proc.url = f"ws://127.0.0.1:{port}"  # type: ignore[attr-defined]
        if wait:
            def listening() -> bool:
                assert proc.popen.poll() is None, f"gateway exited early:\n{dump([proc])}"
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", port)) == 0
            wait_for(listening, timeout=20, what=f"the gateway to listen on {port}")
        return proc

    def wait_registered(self, proc: Proc, timeout: float = 20) -> None:
        """Wait until ``engine::workers::list`` lists the process (a worker or an engine)."""
        try:
            wait_for(lambda: self._worker_registered(proc), timeout=timeout,
                     what=f"{proc.name} pid {proc.pid} to register")
        except AssertionError as exc:  # the logs as they are now, not when the wait began
            raise AssertionError(f"{exc}\n{dump(self.procs)}") from None

    def _worker_registered(self, proc: Proc) -> bool:
        assert proc.popen.poll() is None, f"worker exited early:\n{dump([proc])}"
        workers = self.client.trigger("engine::workers::list", {}, timeout_ms=2000)["workers"]
        return any(w.get("pid") == proc.pid for w in workers)

    def wait_function(self, function_id: str, proc: Proc | None = None, timeout: float = 20) -> None:
        r = redis.Redis.from_url(self.settings.redis_url, decode_responses=True)

        def live() -> bool:
            if proc is not None:
                assert proc.popen.poll() is None, f"process exited early:\n{dump([proc])}"
            return bool(r.sismember(f"{self.settings.namespace}:functions", function_id))
        try:
            wait_for(live, timeout=timeout, what=f"{function_id} to be live")
        finally:
            r.close()

    def close(self) -> None:
        self.client.close()
        for proc in self.procs:  # all drain at once, not one after the other
            proc.signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.stop(signalled=True)


@pytest.fixture
def cluster(settings: Settings, store: redis.Redis, tmp_path: Path,
            request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(settings, tmp_path)
    yield c
    c.close()
    reps = [getattr(request.node, f"rep_{when}", None) for when in ("setup", "call")]
    if any(rep is not None and rep.failed for rep in reps):
        print(dump(c.procs))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
