"""RabbitMQ as the broker cut and restored (and Redis, the store, killed while RabbitMQ stays
up): the engine and the worker reconnect their consumers, reply queues are declared again,
callers get ``broker_unavailable`` quickly meanwhile, and calls work again once it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from iii_broker import Enqueue, Settings
from tests.conftest import AMQP_URL, Cluster
from tests.faults.support import assert_rode_it_out, recovery_s, report, timed
from tests.helpers import in_thread, wait_for
from tests.queues.support import runs
from tests.web.conftest import start_web


@pytest.fixture
def broker_url(amqp_fault_url: str, namespace: str) -> Iterator[str]:
    """Overrides conftest's: invocations go through RabbitMQ, by way of the cut-able proxy."""
    yield amqp_fault_url
    with Connection(AMQP_URL, connect_timeout=3) as conn:  # the test's queues, not the proxy's
        channel = conn.channel()
        for name in [f"{namespace}.fn.test::add", f"{namespace}.fn.test::slow"]:
            channel.queue_delete(name)
            channel.exchange_delete(name)


def test_engine_and_worker_ride_out_rabbitmq_cut_and_restored(cluster, rabbit_proxy, store,
                                                              settings):
    engine = cluster.engine()
    worker = cluster.worker()
    assert cluster.trigger("test::add", {"a": 1, "b": 2}) == {"sum": 3}
    inflight = in_thread(timed, cluster.trigger, "test::slow", {"seconds": 0.5, "id": "x"},
                         timeout_ms=5_000)
    wait_for(lambda: store.lrange(f"{settings.namespace}:test:started", 0, -1), timeout=5,
             what="the slow call to start")

    rabbit_proxy.cut()
    during = timed(cluster.trigger, "test::add", {"a": 1, "b": 2}, timeout_ms=10_000)
    stopped = inflight.result(timeout=6)
    time.sleep(2)  # the outage itself
    rabbit_proxy.restore()
    recover = recovery_s(lambda: cluster.trigger("test::add", {"a": 2, "b": 3},
                                                 timeout_ms=1_000) == {"sum": 5})

    assert during.code == "broker_unavailable" and during.seconds < 2, during
    assert stopped.code in ("broker_unavailable", "timeout") or stopped.result["slept"] == 0.5
    assert stopped.seconds < 5.5, stopped
    assert_rode_it_out(engine, worker)
    report("RabbitMQ (broker) cut for 2 s", f"trigger: {during.code} in {during.seconds:.2f} s; "
           f"in-flight call: {stopped.code or 'its result'} after {stopped.seconds:.2f} s",
           "nothing acknowledged (calls are at most once)", recover)


def test_redis_as_the_store_going_away_while_rabbitmq_is_up(cluster, fault_redis):
    engine = cluster.engine()
    worker = cluster.worker()
    assert cluster.trigger("test::add", {"a": 1, "b": 2}) == {"sum": 3}
    fault_redis.kill()
    # Within the caller's one-second trust in a function it saw alive, a call still goes
    # out on RabbitMQ: the worker runs it without its in-flight record (no Redis) and
    # answers, rather than mistaking the store's outage for a lost broker.
    assert cluster.trigger("test::add", {"a": 4, "b": 4}, timeout_ms=3_000) == {"sum": 8}
    assert "lost the connection to RabbitMQ" not in worker.output(), worker.output()
    time.sleep(1.1)  # past the caller's one-second trust in a function it saw alive
    during = timed(cluster.trigger, "test::add", {"a": 1, "b": 2}, timeout_ms=10_000)
    time.sleep(1)  # the outage itself
    fault_redis.start()
    recover = recovery_s(lambda: cluster.trigger("test::add", {"a": 2, "b": 3},
                                                 timeout_ms=1_000) == {"sum": 5})
    assert during.code == "broker_unavailable" and during.seconds < 2, during
    assert_rode_it_out(engine, worker)
    report("Redis (store) killed for 2 s, RabbitMQ up",
           f"trigger: {during.code} in {during.seconds:.2f} s", "nothing", recover)


def test_every_process_rides_out_rabbitmq_stopped_and_started_and_its_jobs_survive(
        tmp_path, rabbit_server, fault_redis, namespace):
    """A real broker restart: a RabbitMQ node of the test's own is stopped (SIGTERM, as a
    service manager does) with durable jobs waiting in it, and started again."""
    settings = Settings(broker_url=rabbit_server.url, redis_url=fault_redis.url,
                        namespace=namespace, heartbeat_interval_s=0.3,
                        default_timeout_ms=10_000)
    store = redis.Redis.from_url(fault_redis.url, decode_responses=True)
    cluster = Cluster(settings, tmp_path)
    try:
        engine = cluster.engine(config=WORK_QUEUE)
        staying = cluster.worker()  # tests.apps.basic: runs through the restart
        worker = cluster.worker("tests.apps.jobs")
        web = start_web(cluster)
        assert cluster.trigger("jobs::echo", {"id": "before"}) == {"id": "before"}
        worker.stop()  # the jobs wait in RabbitMQ while it goes down and comes back
        for i in range(10):
            cluster.trigger("jobs::record", {"id": f"j{i}"}, action=Enqueue(queue="work"))

        rabbit_server.stop()
        during = timed(cluster.trigger, "engine::functions::list", {}, timeout_ms=10_000)
        http = web.request("POST", "/_iii/invoke/test::add", body='{"a": 1, "b": 2}')
        rabbit_server.start()
        cluster.worker("tests.apps.jobs")
        recover = recovery_s(lambda: cluster.trigger("jobs::echo", {"id": "after"},
                                                     timeout_ms=1_000) == {"id": "after"})

        assert during.code == "broker_unavailable" and during.seconds < 2, during
        assert http.status == 503 and http.json()["error"]["code"] == "broker_unavailable"
        wait_for(lambda: web.request("POST", "/_iii/invoke/test::add",
                                     body='{"a": 1, "b": 2}').status == 200, timeout=10,
                 what="the web process to call through RabbitMQ again")
        wait_for(lambda: {r["id"] for r in runs(store, settings, "record")}
                 >= {f"j{i}" for i in range(10)}, timeout=20,
                 what="every job enqueued before the restart to run")
        assert cluster.trigger("test::add", {"a": 2, "b": 3}, timeout_ms=5_000) == {"sum": 5}
        assert_rode_it_out(engine, staying)
        assert web.proc.popen.poll() is None and "Traceback" not in web.proc.output()
        report("RabbitMQ (broker) stopped with 10 durable jobs in it, then started",
               f"trigger: {during.code} in {during.seconds:.2f} s; HTTP 503 {during.code}",
               "nothing (10/10 jobs ran)", recover)
    finally:
        cluster.close()
        store.close()


WORK_QUEUE = """
[modules.queue.queues.work]
max_retries = 2
"""
