"""What the stream tests share: real ``iii-broker stream`` processes started as users start
them, stream changes written (and custom events published) straight to Redis, and a
WebSocket client (the ``websockets`` library) that waits on messages with deadlines.

Starting a process costs about a second, so each test module shares its processes
(module-scoped fixtures) and keeps tests apart by stream and group names.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from iii_broker import Settings
from iii_broker.documents import Collection, DocumentStore
from iii_broker.documents.live import event_message
from iii_broker.store import Keys
from tests.helpers import Proc, bin_cmd, delete_namespace, free_port, wait_for


def start_stream(settings: Settings, log_dir: Path, config: str = "", name: str = "stream",
                 **env: str) -> Proc:
    """``iii-broker stream`` with ``config`` as its ``[modules.stream]`` settings (TOML
    body), listening on ``settings.stream_port``; returns once it serves."""
    path = log_dir / f"iii-{time.monotonic_ns()}.toml"
    path.write_text(f"[modules.stream]\n{config}\n")
    child = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    child.update(settings.child_env(), PYTHONUNBUFFERED="1", III_CONFIG_PATH=str(path), **env)
    proc = Proc(name, bin_cmd("iii-broker", "stream"), child, log_dir)

    def serving() -> bool:
        assert proc.popen.poll() is None, f"{name} exited early:\n{proc.output()}"
        return "stream process serving" in proc.output() and _listening(settings.stream_port)
    wait_for(serving, timeout=20, what=f"{name} to serve\n{proc.output()}")
    return proc


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def module_settings(redis_url: str, **overrides: Any) -> Settings:
    return Settings(broker_url=redis_url, redis_url=redis_url,
                    namespace=f"t{uuid.uuid4().hex[:10]}", heartbeat_interval_s=0.3,
                    default_timeout_ms=10_000, http_port=free_port(), stream_port=free_port(),
                    **overrides)


@pytest.fixture(scope="module")
def mod_settings(redis_url: str) -> Settings:
    return module_settings(redis_url)


@pytest.fixture(scope="module")
def mod_store(mod_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(mod_settings.redis_url, decode_responses=True)
    yield client
    client.close()
    delete_namespace(mod_settings.redis_url, mod_settings.namespace)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stream")


class Streams:
    """Stream items written as ``stream::set``/``delete``/``update`` write them (the shared
    documents store: hash, change record and live message in one script), and custom
    events published as ``stream::send`` publishes them."""

    def __init__(self, store: redis.Redis, namespace: str) -> None:
        self.r = store
        self.keys = Keys(namespace)
        self.docs = DocumentStore(store)

    def group(self, stream: str, group: str) -> Collection:
        return Collection(key=self.keys.stream_group(stream, group),
                          index=self.keys.stream_groups(stream), member=group,
                          live=self.keys.stream_live,
                          meta={"stream_name": stream, "group_id": group})

    def set(self, stream: str, group: str, item: str, value: Any) -> None:
        self.docs.set(self.group(stream, group), item, value)

    def update(self, stream: str, group: str, item: str, ops: list[dict[str, Any]]) -> None:
        self.docs.update(self.group(stream, group), item, ops)

    def delete(self, stream: str, group: str, item: str) -> None:
        self.docs.delete(self.group(stream, group), item)

    def send(self, stream: str, group: str, name: str, data: Any, item: str | None = None) -> int:
        """Publish a custom event; returns how many stream processes got it."""
        return int(self.r.publish(self.keys.stream_live, event_message(
            stream, group, item, name, data, int(time.time() * 1000))))


class Client:
    """A browser-like client: one socket, many subscriptions."""

    def __init__(self, port: int, query: str = "", **kwargs: Any) -> None:
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{port}/{query}", open_timeout=10, **kwargs))
        self.received: list[dict[str, Any]] = []

    def send(self, frame: Any) -> None:
        self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    def join(self, sub: str, stream: str, group: str, item: str | None = None) -> None:
        data = {"subscriptionId": sub, "streamName": stream, "groupId": group}
        if item is not None:
            data["id"] = item
        self.send({"type": "join", "data": data})

    def leave(self, sub: str) -> None:
        self.send({"type": "leave", "data": {"subscriptionId": sub}})

    def next(self, match: Callable[[dict[str, Any]], bool] = lambda m: True,
             timeout: float = 5.0) -> dict[str, Any]:
        """The next message that ``match``es (those before it are kept in ``received``)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching message within {timeout}s; got "
                                     f"{self.received[-5:]}")
            try:
                raw = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            message = json.loads(raw)
            self.received.append(message)
            if match(message):
                return message

    def event(self, kind: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """The next stream message whose event type is ``kind`` (and wrapper fields match)."""
        return self.next(lambda m: m.get("type") == "stream" and m["event"]["type"] == kind
                         and all(m.get(k) == v for k, v in fields.items()), timeout)

    def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Whatever arrives within ``seconds`` (a span in which nothing is expected)."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                break
        return got

    def close(self) -> None:
        self._stack.close()
