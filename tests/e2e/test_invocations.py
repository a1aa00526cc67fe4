"""Calls through real engine and worker processes over real Redis."""

from __future__ import annotations

import time

import pytest

from iii_broker import (
    FunctionNotFound,
    InvocationFailed,
    InvocationTimeout,
    PayloadError,
    Void,
)
from tests.helpers import wait_for


@pytest.fixture
def running(cluster):
    cluster.engine()
    cluster.worker(concurrency=4)
    return cluster


def test_a_sync_call_returns_the_handlers_result(running):
    assert running.client.trigger("test::add", {"a": 2, "b": 3}) == {"sum": 5}


def test_the_handler_sees_its_context_and_metadata(running):
    out = running.client.trigger("test::echo", {"k": [1, "two"]}, metadata={"tenant": "acme"})
    assert out["payload"] == {"k": [1, "two"]}
    assert out["function_id"] == "test::echo"
    assert out["attempt"] == 1
    assert len(out["trace_id"]) == 32 and len(out["invocation_id"]) == 32
    assert out["metadata"] == {"tenant": "acme"}


def test_async_handlers_are_called_like_sync_ones(running):
    assert running.client.trigger("test::async_add", {"a": 1, "b": 1}) == {"sum": 2}


def test_a_nested_call_continues_the_callers_trace(running):
    out = running.client.trigger("test::nested", {"a": 4, "b": 5})
    assert out["sum"] == 9
    assert out["trace_id"] == out["inner_trace_id"]


def test_nested_calls_do_not_deadlock_a_worker_at_concurrency_1(cluster):
    cluster.engine()
    cluster.worker(concurrency=1)
    assert cluster.client.trigger("test::nested", {"a": 1, "b": 2}, timeout_ms=5000)["sum"] == 3
    assert cluster.client.trigger("test::async_nested", {"a": 1, "b": 2}, timeout_ms=5000) == {"sum": 3}


def test_void_returns_at_once_and_the_function_still_runs(running, store, settings):
    started = time.monotonic()
    assert running.client.trigger("test::record", {"id": 7}, action=Void) is None
    assert time.monotonic() - started < 1
    key = f"{settings.namespace}:test:records"
    wait_for(lambda: store.lrange(key, 0, -1) == ["7"], what="the void call to run")


def test_a_handler_error_reaches_the_caller_with_its_stacktrace(running):
    with pytest.raises(InvocationFailed) as info:
        running.client.trigger("test::fail", {"x": 1})
    err = info.value
    assert err.code == "invocation_failed"
    assert "bad input" in err.message and "ValueError" in err.message
    assert err.function_id == "test::fail"
    assert "raise ValueError" in err.stacktrace


def test_a_result_that_is_not_json_is_a_handler_failure(running):
    with pytest.raises(InvocationFailed, match="not JSON"):
        running.client.trigger("test::bad_result", {})


def test_an_unknown_function_fails_at_once(running):
    started = time.monotonic()
    with pytest.raises(FunctionNotFound) as info:
        running.client.trigger("test::missing", {}, timeout_ms=20_000)
    assert info.value.code == "function_not_found"
    assert time.monotonic() - started < 1


def test_no_reply_in_time_is_a_timeout_and_the_late_reply_is_dropped(running):
    started = time.monotonic()
    with pytest.raises(InvocationTimeout) as info:
        running.client.trigger("test::slow", {"seconds": 1.0}, timeout_ms=300)
    assert info.value.code == "TIMEOUT"
    assert 0.25 < time.monotonic() - started < 1.0
    pending = running.client.caller.replies._pending
    assert info.value.invocation_id not in pending
    # The late reply arrives and is dropped; the next call gets its own answer.
    time.sleep(0)  # no sleep needed: the next call is answered only by its own reply
    assert running.client.trigger("test::add", {"a": 1, "b": 1}, timeout_ms=5000) == {"sum": 2}


def test_payloads_that_are_not_json_are_refused_before_publishing(running):
    for bad in ({"s": {1, 2}}, {"b": b"bytes"}, {"n": float("nan")}):
        with pytest.raises(PayloadError, match="not JSON-serializable"):
            running.client.trigger("test::echo", bad)
