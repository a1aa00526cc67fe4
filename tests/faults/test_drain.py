"""A function that loses its last worker: calls still queued for it are answered
``function_not_found`` at once (503 over HTTP) instead of waiting out their timeout."""

from __future__ import annotations

import signal

from tests.faults.support import report, timed
from tests.helpers import in_thread, wait_for
from tests.web.conftest import start_web


def _started(store, settings) -> list[str]:
    return store.lrange(f"{settings.namespace}:test:started", 0, -1)


def test_a_call_queued_behind_the_last_worker_as_it_drains_is_answered_at_once(
        cluster, store, settings):
    engine = cluster.engine()
    worker = cluster.worker(concurrency=1)
    busy = in_thread(cluster.trigger, "test::slow", {"seconds": 1.0, "id": "busy"},
                     timeout_ms=10_000)
    wait_for(lambda: _started(store, settings), timeout=5, what="the slow call to start")
    queued = in_thread(timed, cluster.trigger, "test::add", {"a": 1, "b": 2}, timeout_ms=10_000)
    key = f"{settings.namespace}.fn.test::add"
    wait_for(lambda: store.llen(key), timeout=5, what="the call to wait on the queue")
    worker.signal(signal.SIGTERM)  # drains: finishes the slow call, takes nothing new

    answer = queued.result(timeout=12)
    assert busy.result(timeout=5)["slept"] == 1.0  # the running call still finished
    assert answer.code == "function_not_found", answer
    assert answer.seconds < 4, answer  # not its 10 s timeout
    assert worker.wait(10) == 0
    # the draining worker answers it as it leaves, unless the elected engine's sweep (which
    # answers calls that reach a function after its last worker) got there first
    logs = worker.output() + engine.output()
    assert "answered 1 queued call(s) function_not_found" in logs, logs
    report("the last worker of a function drains with a call queued",
           f"function_not_found after {answer.seconds:.2f} s (timeout 10 s)",
           "nothing (the running call finished)", 0.0)


def test_calls_queued_for_a_dead_last_worker_are_answered_when_the_sweeper_removes_it(
        cluster, store, settings):
    cluster.engine()
    worker = cluster.worker(concurrency=1)
    in_thread(cluster.trigger, "test::slow", {"seconds": 30, "id": "busy"}, timeout_ms=10_000)
    wait_for(lambda: _started(store, settings), timeout=5, what="the slow call to start")
    queued = [in_thread(timed, cluster.trigger, "test::add", {"a": i, "b": 1}, timeout_ms=10_000)
              for i in range(3)]
    key = f"{settings.namespace}.fn.test::add"
    wait_for(lambda: store.llen(key) == 3, timeout=5, what="the calls to wait on the queue")
    worker.signal(signal.SIGKILL)

    answers = [q.result(timeout=12) for q in queued]
    assert [a.code for a in answers] == ["function_not_found"] * 3, answers
    assert max(a.seconds for a in answers) < 6, answers  # lease + grace, not 10 s
    report("the last worker of a function SIGKILLed with 3 calls queued",
           f"function_not_found after at most {max(a.seconds for a in answers):.2f} s "
           "(timeout 10 s)", "nothing acknowledged (sync calls are at most once)", 0.0)


def test_a_new_worker_of_the_function_keeps_the_calls_queued_for_it(cluster, store, settings):
    """The race the answering pass must lose: a worker registering again takes the calls."""
    cluster.engine()
    first = cluster.worker(concurrency=1)
    second = cluster.worker(concurrency=1)
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 0
    assert cluster.trigger("test::add", {"a": 1, "b": 2}) == {"sum": 3}  # served by the other
    assert "function_not_found" not in first.output()
    assert second.popen.poll() is None


def test_http_gets_503_for_a_call_queued_behind_the_draining_last_worker(cluster, store, settings):
    cluster.engine()
    worker = cluster.worker(concurrency=1)
    web = start_web(cluster)
    in_thread(cluster.trigger, "test::slow", {"seconds": 1.0, "id": "busy"}, timeout_ms=10_000)
    wait_for(lambda: _started(store, settings), timeout=5, what="the slow call to start")
    reply = in_thread(timed, web.request, "POST", "/add", body='{"a": 1, "b": 2}',
                      headers={"Content-Type": "application/json"})
    key = f"{settings.namespace}.fn.test::add"
    wait_for(lambda: store.llen(key), timeout=5, what="the request's call to wait on the queue")
    worker.signal(signal.SIGTERM)
    answer = reply.result(timeout=15)
    assert answer.result.status == 503, answer.result.body
    assert answer.result.json()["error"]["code"] == "function_not_found"
    assert answer.seconds < 4, answer




def test_a_call_sent_just_after_the_last_worker_left_fails_in_seconds_without_an_engine(
        cluster, store, settings):
    """The caller trusts a function it saw alive for a second, so it may publish after the
    last worker left and answered what was queued; with that worker the engine itself,
    nobody is left to answer late calls: the waiting caller finds the function gone."""
    engine = cluster.engine()
    assert cluster.trigger("engine::functions::list", {})["functions"]  # now trusted
    engine.signal(signal.SIGTERM)
    assert engine.wait(10) == 0
    late = timed(cluster.trigger, "engine::functions::list", {}, timeout_ms=10_000)
    assert late.code == "function_not_found", late
    assert late.seconds < 4, late  # not its 10 s timeout
    assert "lost its last worker" in late.message or "not registered" in late.message
