"""The same calls with RabbitMQ carrying the invocations (III_BROKER_URL=amqp://...);
the registry stays in Redis."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from kombu import Connection

from iii_broker import InvocationFailed, InvocationStopped
from iii_broker.settings import mask_url
from tests.conftest import AMQP_URL
from tests.helpers import in_thread, wait_for

_ENGINE_FUNCTIONS = {"engine::functions::list", "engine::workers::list",
                     "engine::triggers::list", "engine::workers::register"}


@pytest.fixture(scope="session")
def rabbitmq_error() -> str | None:
    """Why RabbitMQ cannot be used, or None when it answers (asked once per session)."""
    conn = Connection(AMQP_URL, connect_timeout=3)
    try:
        conn.connect()
        return None
    except Exception as exc:  # noqa: BLE001 - whatever the client library raised
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.release()


@pytest.fixture
def function_ids(namespace: str, rabbitmq_error: str | None) -> Iterator[set[str]]:
    """Function ids whose RabbitMQ queues and exchanges to delete after the test (after
    its processes stopped, so no worker declares them again)."""
    ids: set[str] = set(_ENGINE_FUNCTIONS)
    yield ids
    if rabbitmq_error is not None:
        return
    with Connection(AMQP_URL, connect_timeout=3) as conn:
        channel = conn.channel()
        for fid in ids:
            channel.queue_delete(f"{namespace}.fn.{fid}")
            channel.exchange_delete(f"{namespace}.fn.{fid}")
        channel.queue_delete(f"{namespace}.deadletter")


@pytest.fixture
def broker_url(function_ids: set[str], rabbitmq_error: str | None) -> str:
    """Overrides conftest's: invocations go through RabbitMQ."""
    if rabbitmq_error is not None:
        message = (f"RabbitMQ is not reachable at {mask_url(AMQP_URL)} ({rabbitmq_error}). "
                   "Start it (e.g. `apt-get install -y rabbitmq-server && service "
                   "rabbitmq-server start`, or `docker run -d -p 5672:5672 rabbitmq:3`) or "
                   "point III_TEST_AMQP_URL at one.")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return AMQP_URL


@pytest.fixture
def running(cluster, store, settings, function_ids):
    cluster.engine()
    cluster.worker(concurrency=4)
    function_ids.update(store.smembers(f"{settings.namespace}:functions"))
    return cluster


def test_calls_go_through_rabbitmq_and_the_registry_stays_in_redis(running, store, settings):
    assert running.client.trigger("test::add", {"a": 2, "b": 3}) == {"sum": 5}
    assert "test::add" in store.smembers(f"{settings.namespace}:functions")
    # Kombu's Redis transport would have left its queues and bindings here.
    assert not store.exists(f"{settings.namespace}.fn.test::add")
    assert not list(store.scan_iter(f"_kombu.binding.{settings.namespace}.*"))


def test_a_nested_call_over_rabbitmq_continues_the_callers_trace(running):
    out = running.client.trigger("test::nested", {"a": 4, "b": 5})
    assert out["sum"] == 9
    assert out["trace_id"] == out["inner_trace_id"]


def test_a_handler_error_over_rabbitmq_reaches_the_caller_with_its_stacktrace(running):
    with pytest.raises(InvocationFailed) as info:
        running.client.trigger("test::fail", {"x": 1})
    assert info.value.code == "invocation_failed"
    assert "bad input" in info.value.message
    assert "raise ValueError" in info.value.stacktrace


def test_a_worker_killed_mid_call_over_rabbitmq_stops_the_call(running, store, settings):
    call = in_thread(running.client.trigger, "test::slow", {"seconds": 60, "id": "k"},
                     timeout_ms=30_000)
    wait_for(lambda: store.lrange(f"{settings.namespace}:test:started", 0, -1) == ["k"]
             and any(store.hlen(k) for k in
                     store.scan_iter(f"{settings.namespace}:worker:*:inflight")),
             what="the slow call to be running")

    killed_at = time.monotonic()
    [worker] = [p for p in running.procs if p.name == "worker"]
    worker.signal(signal.SIGKILL)
    with pytest.raises(InvocationStopped) as info:
        call.result(timeout=30)
    assert time.monotonic() - killed_at < 5
    assert info.value.code == "invocation_stopped"
    assert info.value.function_id == "test::slow"
