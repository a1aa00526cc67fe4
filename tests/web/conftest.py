"""A real web process (``iii-broker web``) in front of a real engine and worker."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from iii_broker import Settings
from tests.conftest import Cluster
from tests.helpers import Proc, bin_cmd, delete_namespace, dump, free_port, wait_for


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class Web:
    """A running web process and a small HTTP client for it."""

    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.port = port

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 15) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def wait_status(self, path: str, status: int, timeout: float = 10) -> Reply:
        """Poll ``GET path`` until it answers ``status``."""
        def answered() -> Reply | None:
            assert self.proc.popen.poll() is None, f"web exited early:\n{self.proc.output()}"
            reply = self.get(path, timeout=5)
            return reply if reply.status == status else None
        return wait_for(answered, timeout=timeout, what=f"GET {path} to answer {status}")


def start_web(cluster: Cluster, **extra_env: str) -> Web:
    """``iii-broker web`` on a free port, started as a user would; waits until it answers."""
    port = free_port()
    proc = cluster.spawn("web", bin_cmd("iii-broker", "web", "--threads", "8"),
                         III_HTTP_PORT=str(port), **extra_env)
    web = Web(proc, port)
    try:
        web.wait_status("/--web-is-up--", 404, timeout=20)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{dump(cluster.procs)}") from None
    return web


@contextmanager
def serving(redis_url: str, log_dir: Path, app: str, ready_path: str,
            **web_env: str) -> Iterator[tuple[Cluster, Web]]:
    """An engine, a worker of ``app`` and a web process in a namespace of their own, for a
    module's tests; ready once ``GET ready_path`` answers 200. Cleaned up afterwards."""
    settings = Settings(broker_url=redis_url, redis_url=redis_url,
                        namespace=f"t{uuid.uuid4().hex[:10]}", heartbeat_interval_s=0.3,
                        default_timeout_ms=10_000)
    cluster = Cluster(settings, log_dir)
    try:
        cluster.engine()
        cluster.worker(app)
        web = start_web(cluster, **web_env)
        web.wait_status(ready_path, 200)
        yield cluster, web
    finally:
        cluster.close()
        delete_namespace(redis_url, settings.namespace)


def recorded_calls(cluster: Cluster) -> list[dict[str, Any]]:
    """The payloads a test app's recording functions received (``NS:test:calls``)."""
    r = redis.Redis.from_url(cluster.settings.redis_url)
    try:
        return [json.loads(c) for c in r.lrange(f"{cluster.settings.namespace}:test:calls", 0, -1)]
    finally:
        r.close()


@pytest.fixture(scope="module")
def shared(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Web]]:
    """One engine, one worker of tests.apps.http_app and one web process for a module's
    read-only tests (a 1 s function timeout and a 1 KiB body limit keep them quick)."""
    with serving(redis_url, tmp_path_factory.mktemp("web"), "tests.apps.http_app", "/plain",
                 III_HTTP_TIMEOUT_MS="1000", III_HTTP_BODY_LIMIT="1024") as running:
        yield running


@pytest.fixture
def web(shared: tuple[Cluster, Web]) -> Web:
    return shared[1]
