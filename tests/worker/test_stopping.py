"""A worker told to stop ends its blocking pops at once instead of waiting out their
timeouts: the call fetcher's BLMPOP and the job fetcher's wait for work each also read a
wake list of the worker's own, which stopping pushes to."""

from __future__ import annotations

import time

from iii_broker.message import Invocation
from iii_broker.queues.store import JobStore
from iii_broker.redis_transport import RedisFetcher
from iii_broker.store import Keys
from iii_broker.transport import Publisher, connect, function_exchange, function_queue
from tests.helpers import in_thread


def test_waking_the_call_fetcher_ends_its_pop_at_once_and_loses_no_message(settings, store):
    conn = connect(settings)
    channel = conn.channel()
    queue = function_queue(settings, "wake::me")
    queue.bind(channel).declare()
    got: list[object] = []
    fetcher = RedisFetcher(channel, [queue.name], settings.broker_url, got.append,
                           lambda *_: None, Keys(settings.namespace).worker_wake("w1", "calls"))
    try:
        started = time.monotonic()
        fetching = in_thread(fetcher.fetch, 10.0, 4)
        fetcher.wake()  # during the pop, or just before it: either way it returns at once
        assert fetching.result(timeout=5) == 0
        assert time.monotonic() - started < 2, "the pop waited for its 10 s timeout"
        assert got == []

        Publisher(settings).publish(Invocation("wake::me", {}).to_json(),
                                    exchange=function_exchange(settings, "wake::me"),
                                    routing_key="wake::me", declare=queue)
        assert fetcher.fetch(5.0, 4) == 1 and len(got) == 1  # messages still come through
    finally:
        fetcher.close()
        conn.release()
    assert not store.exists(Keys(settings.namespace).worker_wake("w1", "calls"))


def test_ending_the_job_fetchers_wait_returns_false_at_once(settings, store):
    jobs = JobStore(store, settings.namespace)
    stop_key = jobs.keys.worker_wake("w1", "jobs")
    started = time.monotonic()
    waiting = in_thread(jobs.wait_for_work, ["wake::me"], 10.0, stop_key)
    jobs.end_wait(stop_key)  # during the wait, or just before it
    assert waiting.result(timeout=5) is False  # no work: woken to stop
    assert time.monotonic() - started < 2
    store.lpush(jobs.wake_key("wake::me"), 1)
    assert jobs.wait_for_work(["wake::me"], 5.0, stop_key) is True
