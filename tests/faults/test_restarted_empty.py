"""Redis restarted empty: the engine writes its seed again (the named queues of its settings
file), workers register again, and health says ``degraded`` until it has."""

from __future__ import annotations

import signal

from iii_broker import App, Enqueue
from tests.faults.support import ENGINE_CONFIG, assert_rode_it_out, recovery_s, report, timed
from tests.helpers import wait_for
from tests.web.conftest import start_web


def test_named_queues_and_registrations_come_back_after_redis_restarts_empty(
        cluster, fault_redis, store, settings):
    engine = cluster.engine(config=ENGINE_CONFIG)
    worker = cluster.worker()
    web = start_web(cluster)
    assert web.wait_status("/_iii/health", 200).json()["checks"]["seeded"]["ok"]
    assert "messageReceiptId" in cluster.trigger("test::record", {"id": "before"},
                                                 action=Enqueue(queue="payment"))

    engine.signal(signal.SIGSTOP)  # so health can be seen degraded before it re-seeds
    try:
        fault_redis.restart(empty=True)
        body = web.wait_status("/_iii/health", 503).json()
        assert body["status"] == "degraded"
        assert body["checks"]["seeded"]["ok"] is False
        assert "restarted empty" in body["checks"]["seeded"]["error"]
        fresh = App("fresh", settings=settings)  # no queue settings cached from before
        try:
            missing = timed(fresh.trigger, "test::record", {"id": "x"},
                            action=Enqueue(queue="payment"))
        finally:
            fresh.close()
        assert missing.code == "enqueue_error" and "does not exist" in missing.message
    finally:
        engine.signal(signal.SIGCONT)

    def enqueued() -> bool:
        fresh = App("fresh", settings=settings)
        try:
            return "messageReceiptId" in fresh.trigger("test::record", {"id": "after"},
                                                       action=Enqueue(queue="payment"))
        finally:
            fresh.close()
    recover = recovery_s(enqueued)
    registered = recovery_s(lambda: cluster.trigger("test::add", {"a": 1, "b": 2},
                                                    timeout_ms=1_000) == {"sum": 3})
    wait_for(lambda: "after" in store.lrange(f"{settings.namespace}:test:records", 0, -1),
             timeout=10, what="the job enqueued after the restart to run")
    assert web.wait_status("/_iii/health", 200).json()["status"] == "ok"
    pids = {w["pid"] for w in cluster.trigger("engine::workers::list", {})["workers"]}
    assert {engine.pid, worker.pid} <= pids
    assert_rode_it_out(engine, worker, web.proc)
    assert "registering again" in worker.output()
    report("Redis restarted empty (engine paused meanwhile, then resumed)",
           "enqueue to a configured queue: enqueue_error 'does not exist' until the engine "
           "re-seeds; health 503 degraded (seeded: false)",
           "what Redis held (the test's job enqueued before is gone with it)",
           recover + registered)
