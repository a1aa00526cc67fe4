"""Failures against real engine and worker processes: dying workers, signals, engine
restarts, several engines, and messages that are not ours on a function queue."""

from __future__ import annotations

import json
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from iii_broker import FunctionNotFound, InvocationStopped, Void
from iii_broker.function import is_reserved
from iii_broker.transport import connection, function_exchange, function_queue
from tests.helpers import in_thread, wait_for

# The engine sweeps a worker 3 heartbeats (0.9 s in tests) after its last beat; a
# caller hears of a dead worker well within this.
STOPPED_WITHIN_S = 5.0


def _list(cluster: Any, what: str) -> list[dict[str, Any]]:
    return cluster.client.trigger(f"engine::{what}::list", {}, timeout_ms=5000)[what]


def _marks(store: Any, settings: Any, name: str) -> list[str]:
    return store.lrange(f"{settings.namespace}:test:{name}", 0, -1)


def _calls_in_flight(store: Any, settings: Any) -> int:
    """Calls the registry knows a worker is running (what the sweeper would stop)."""
    return sum(store.hlen(k) for k in store.scan_iter(f"{settings.namespace}:worker:*:inflight"))


def _running(store: Any, settings: Any, count: int) -> None:
    """Wait until ``count`` test::slow calls have started and are recorded in flight."""
    wait_for(lambda: len(_marks(store, settings, "started")) == count
             and _calls_in_flight(store, settings) == count,
             what=f"{count} slow call(s) to be running")


def _is_gone(cluster: Any, function_id: str) -> bool:
    return all(f["function_id"] != function_id for f in _list(cluster, "functions"))


# -- dying workers ------------------------------------------------------------------------


def test_a_worker_killed_mid_call_stops_the_call_within_a_few_heartbeats(cluster, store, settings):
    cluster.engine()
    worker = cluster.worker()
    call = in_thread(cluster.client.trigger, "test::slow", {"seconds": 60, "id": "k"},
                     timeout_ms=30_000)
    _running(store, settings, 1)

    killed_at = time.monotonic()
    worker.signal(signal.SIGKILL)
    with pytest.raises(InvocationStopped) as info:
        call.result(timeout=30)
    assert time.monotonic() - killed_at < STOPPED_WITHIN_S
    assert info.value.code == "invocation_stopped"
    assert info.value.function_id == "test::slow"
    assert worker.wait() == -signal.SIGKILL


def test_sigterm_finishes_running_calls_and_leaves_queued_ones_for_the_next_worker(
        cluster, store, settings):
    cluster.engine()
    first = cluster.worker(concurrency=2)
    slow = [in_thread(cluster.client.trigger, "test::slow", {"seconds": 1.5, "id": f"s{i}"},
                      timeout_ms=30_000) for i in range(2)]
    _running(store, settings, 2)
    # Both slots are busy: these wait in the function's queue.
    queued = [str(i) for i in range(5)]
    for i in queued:
        cluster.client.trigger("test::record", {"id": i}, action=Void)

    first.signal(signal.SIGTERM)
    results = [c.result(timeout=15) for c in slow]
    assert [r["pid"] for r in results] == [first.pid, first.pid]
    assert sorted(_marks(store, settings, "finished")) == ["s0", "s1"]
    assert first.wait(timeout=15) == 0
    assert _marks(store, settings, "records") == [], "a draining worker took new work"

    cluster.worker(concurrency=2)
    wait_for(lambda: sorted(_marks(store, settings, "records")) == queued,
             what="the queued calls to run on the second worker")


def test_a_second_sigint_exits_at_once(cluster, store, settings):
    cluster.engine()
    worker = cluster.worker(concurrency=1)
    call = in_thread(cluster.client.trigger, "test::slow", {"seconds": 60, "id": "long"},
                     timeout_ms=30_000)
    _running(store, settings, 1)

    worker.signal(signal.SIGINT)
    wait_for(lambda: "draining" in worker.output(), what="the worker to start draining")
    assert worker.popen.poll() is None, "the first SIGINT must drain, not exit"
    interrupted_at = time.monotonic()
    worker.signal(signal.SIGINT)
    code = worker.wait(timeout=10)
    assert time.monotonic() - interrupted_at < 2
    assert code == 130
    assert _marks(store, settings, "finished") == []
    # Its caller is not left waiting for the call that was cut short.
    with pytest.raises(InvocationStopped):
        call.result(timeout=STOPPED_WITHIN_S + 1)


def test_two_workers_of_one_function_both_get_work(cluster):
    cluster.engine()
    a = cluster.worker(concurrency=2)
    b = cluster.worker(concurrency=2)
    calls = [in_thread(cluster.client.trigger, "test::pid", {"seconds": 0.3}, timeout_ms=10_000)
             for _ in range(6)]
    pids = [c.result(timeout=15)["pid"] for c in calls]
    assert set(pids) == {a.pid, b.pid}


def test_when_the_last_worker_dies_its_function_goes_and_its_triggers_wait_inactive(cluster):
    cluster.engine()
    worker = cluster.worker()
    [trigger] = [t for t in _list(cluster, "triggers") if t["function_id"] == "test::add"]
    assert trigger["active"] is True

    killed_at = time.monotonic()
    worker.signal(signal.SIGKILL)
    wait_for(lambda: _is_gone(cluster, "test::add"), timeout=STOPPED_WITHIN_S,
             what="test::add to be removed with its only worker")
    assert time.monotonic() - killed_at < STOPPED_WITHIN_S
    with pytest.raises(FunctionNotFound):
        cluster.client.trigger("test::add", {"a": 1, "b": 2})
    assert [t for t in _list(cluster, "triggers") if t["function_id"] == "test::add"] == [
        dict(trigger, active=False)]
    assert all(w.get("pid") != worker.pid for w in _list(cluster, "workers"))

    cluster.worker()
    [again] = [t for t in _list(cluster, "triggers") if t["function_id"] == "test::add"]
    assert again["id"] == trigger["id"]
    assert again["active"] is True
    assert cluster.client.trigger("test::add", {"a": 1, "b": 2}) == {"sum": 3}


# -- engines ------------------------------------------------------------------------------


def _app_functions(cluster: Any) -> set[str]:
    return {f["function_id"] for f in _list(cluster, "functions")
            if not is_reserved(f["function_id"])}  # the engine's built-ins go with it


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_workers_outlive_an_engine_restart(cluster, store, settings, sig):
    engine = cluster.engine()
    worker = cluster.worker()
    functions = _app_functions(cluster)
    triggers = _list(cluster, "triggers")
    assert "test::add" in functions and triggers

    engine.signal(sig)
    code = engine.wait(timeout=15)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    # No engine: the registry is intact and calls between workers go on.
    assert functions <= store.smembers(f"{settings.namespace}:functions")
    assert cluster.client.trigger("test::add", {"a": 2, "b": 3}) == {"sum": 5}
    assert cluster.client.trigger("test::nested", {"a": 4, "b": 5})["sum"] == 9

    new = cluster.engine(wait=False)
    cluster.wait_registered(new)
    assert _app_functions(cluster) == functions
    assert any(w["pid"] == worker.pid for w in _list(cluster, "workers"))
    assert _list(cluster, "triggers") == triggers
    # A killed engine left its own registration behind: the new engine sweeps it.
    wait_for(lambda: all(w["pid"] != engine.pid for w in _list(cluster, "workers")),
             timeout=STOPPED_WITHIN_S, what="the old engine to leave the registry")
    assert cluster.client.trigger("test::add", {"a": 1, "b": 1}) == {"sum": 2}


def test_of_two_engines_one_sweeps_and_the_other_takes_over_when_it_dies(cluster, store, settings):
    lock = f"{settings.namespace}:lock:sweeper"
    engines = [cluster.engine(), cluster.engine(wait=False)]
    cluster.wait_registered(engines[1])
    ids = {w["id"]: w["pid"] for w in _list(cluster, "workers") if w["kind"] == "engine"}
    assert sorted(ids.values()) == sorted(e.pid for e in engines)

    holder_id = wait_for(lambda: store.get(lock), what="an engine to take the sweeper lock")
    [holder] = [e for e in engines if e.pid == ids[holder_id]]
    [other] = [e for e in engines if e is not holder]
    wait_for(lambda: "took the sweeper duty" in holder.output(), what="the holder to say so")
    assert "took the sweeper duty" not in other.output()

    holder.signal(signal.SIGKILL)
    holder.wait()
    wait_for(lambda: store.get(lock) not in (None, holder_id), timeout=STOPPED_WITHIN_S,
             what="the surviving engine to take the sweeper lock")
    assert ids[store.get(lock)] == other.pid

    worker = cluster.worker()
    worker.signal(signal.SIGKILL)
    wait_for(lambda: _is_gone(cluster, "test::add"), timeout=STOPPED_WITHIN_S,
             what="the surviving engine to sweep the killed worker")
    with pytest.raises(FunctionNotFound):
        cluster.client.trigger("test::add", {"a": 1, "b": 2})


# -- messages that are not ours -------------------------------------------------------------


class _CreatesFileWhenUnpickled:
    """Unpickling this runs ``open(path, "w")``: any unpickling worker leaves the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _publish(settings: Any, body: Any, **options: Any) -> None:
    """Publish straight to test::add's queue with Kombu, as any other client could."""
    with connection(settings) as conn:
        conn.Producer().publish(
            body, exchange=function_exchange(settings, "test::add"), routing_key="test::add",
            declare=[function_queue(settings, "test::add")], **options)


def _dead_letters(store: Any, settings: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in store.lrange(f"{settings.namespace}:deadletter", 0, -1)]


POISON = {
    "pickle": lambda s, store, path: _publish(s, _CreatesFileWhenUnpickled(path),
                                              serializer="pickle"),
    "text_plain": lambda s, store, path: _publish(s, "add 1 and 2", content_type="text/plain",
                                                  content_encoding="utf-8"),
    "invalid_json": lambda s, store, path: _publish(s, '{"function_id": "test::add", ',
                                                    content_type="application/json",
                                                    content_encoding="utf-8"),
    "raw_garbage_on_the_redis_list": lambda s, store, path: store.lpush(
        function_queue(s, "test::add").name, "<<garbage, not a kombu envelope>>"),
}


@pytest.mark.parametrize("kind", list(POISON))
def test_a_poison_message_is_dead_lettered_and_the_worker_keeps_serving(
        cluster, store, settings, tmp_path, kind):
    cluster.engine()
    worker = cluster.worker()
    witness = tmp_path / "unpickled"
    POISON[kind](settings, store, witness)

    [record] = wait_for(lambda: _dead_letters(store, settings), what="a dead letter")
    assert record["reason"]
    if kind == "pickle":
        assert "application/x-python-serialize" in record["reason"]
        assert not witness.exists(), "the worker unpickled a message"
    assert worker.popen.poll() is None
    assert cluster.client.trigger("test::add", {"a": 1, "b": 2}, timeout_ms=5000) == {"sum": 3}
    assert len(_dead_letters(store, settings)) == 1
    # Set aside in stride: no reconnect, which would hand back every call in flight.
    assert "connection lost" not in worker.output()


def test_the_pickle_witness_really_creates_its_file_when_unpickled(tmp_path):
    witness = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(_CreatesFileWhenUnpickled(witness)))  # noqa: S301 - the point
    assert witness.exists()


def test_a_json_item_that_is_not_a_kombu_envelope_is_dead_lettered_without_rerunning_calls(
        cluster, store, settings):
    cluster.engine()
    cluster.worker()
    call = in_thread(cluster.client.trigger, "test::slow", {"seconds": 1.5, "id": "once"},
                     timeout_ms=30_000)
    _running(store, settings, 1)
    store.lpush(function_queue(settings, "test::slow").name, '{"hello": 1}')

    assert call.result(timeout=15)["slept"] == 1.5
    assert _marks(store, settings, "started") == ["once"], "the running call ran again"
    [record] = wait_for(lambda: _dead_letters(store, settings), timeout=3, what="a dead letter")
    assert record["body"] == '{"hello": 1}'


def test_a_stall_that_lapses_every_lease_at_once_does_not_unregister_live_workers(
        cluster, store, settings):
    engine = cluster.engine()
    worker = cluster.worker()
    workers = f"{settings.namespace}:workers"
    store.zadd(workers, dict.fromkeys(store.zrange(workers, 0, -1), 0), xx=True)  # all lapsed
    # The live workers (the engine too) beat again within an interval: nobody is removed, and
    # calls keep finding their functions meanwhile.
    deadline = time.monotonic() + 4 * settings.heartbeat_interval_s
    while time.monotonic() < deadline:
        assert cluster.client.trigger("test::add", {"a": 1, "b": 2}) == {"sum": 3}
    assert store.zcard(workers) == 2
    assert "missed its heartbeats" not in engine.output()
    assert "dropped from the registry" not in worker.output() + engine.output()
    assert all(score > time.time() * 1000 for _, score in store.zrange(workers, 0, -1,
                                                                        withscores=True))
