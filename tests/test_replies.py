"""The reply consumer: many threads and coroutines waiting at once share one consumer."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from iii_broker import InvocationTimeout
from tests.helpers import in_thread, wait_for


@pytest.fixture
def running(cluster):
    cluster.engine()
    cluster.worker(concurrency=8)
    return cluster


def test_many_threads_calling_at_once_each_get_their_own_answer(running):
    client = running.client

    def calls(n: int) -> list[int]:
        return [client.trigger("test::add", {"a": n, "b": i})["sum"] - n for i in range(25)]

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(calls, range(12)))
    assert results == [list(range(25))] * 12


def test_coroutines_and_threads_waiting_together_each_get_their_own_answer(running):
    client = running.client
    errors: list[BaseException] = []

    def sync_caller() -> None:
        try:
            for i in range(30):
                assert client.trigger("test::add", {"a": i, "b": 1}) == {"sum": i + 1}
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sync_caller) for _ in range(3)]
    for t in threads:
        t.start()

    async def async_callers() -> list[dict]:
        return await asyncio.gather(*(client.atrigger("test::async_add", {"a": i, "b": 2})
                                      for i in range(40)))

    results = asyncio.run(async_callers())
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert [r["sum"] for r in results] == [i + 2 for i in range(40)]


def test_an_async_call_times_out_without_blocking_its_event_loop(running):
    async def main() -> tuple[str, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            await running.client.atrigger("test::slow", {"seconds": 2}, timeout_ms=300)
        except InvocationTimeout as exc:
            return exc.code, ticks
        finally:
            task.cancel()
        return "no timeout", ticks

    code, ticks = asyncio.run(main())
    assert code == "TIMEOUT"
    assert ticks >= 10  # the loop kept running while the call waited


def test_a_short_call_leaves_no_in_flight_record_and_a_long_one_has_one(running, store, settings):
    pattern = f"{settings.namespace}:worker:*:inflight"
    for _ in range(20):
        running.client.trigger("test::add", {"a": 1, "b": 1})
    assert list(store.scan_iter(pattern)) == []
    call = in_thread(running.client.trigger, "test::slow", {"seconds": 0.5, "id": "x"})
    records = wait_for(lambda: [store.hvals(k) for k in store.scan_iter(pattern)],
                       what="the long call's in-flight record")
    assert '"function_id": "test::slow"' in records[0][0]
    assert call.result(timeout=10)["slept"] == 0.5
    wait_for(lambda: list(store.scan_iter(pattern)) == [], what="the record to go with the ack")
