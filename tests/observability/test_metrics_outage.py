"""Metrics through a Redis outage: what a worker counts while Redis is away waits in its
memory and reaches the cluster's figures once, when Redis is back; the page says the store
is away rather than failing. A Redis server of the test's own (tests/faults), killed and
started again with its data."""

from __future__ import annotations

from typing import Any

from tests.faults.conftest import fault_redis, redis_url  # noqa: F401 - the fixtures
from tests.helpers import free_port, in_thread, wait_for
from tests.observability.test_metrics import own_page, value, wait_value
from tests.web.conftest import start_web


def test_counts_made_during_a_redis_outage_arrive_once_it_is_back(
        cluster, fault_redis):  # noqa: F811 - the fixture imported above
    cluster.engine()
    port = free_port()
    cluster.worker(III_METRICS_PORT=str(port))
    web = start_web(cluster)
    call = in_thread(cluster.trigger, "test::pid", {"seconds": 2.0}, timeout_ms=20_000)
    wait_for(lambda: value(own_page(port), "iii_worker_slots", state="busy") == 1,
             what="the call to be running")

    fault_redis.kill()
    # The run ends while Redis is away: counted by the worker (its own page), not stored.
    def counted() -> dict[Any, float] | None:
        samples = own_page(port)
        return samples if value(samples, "iii_invocations_total", function="test::pid",
                                status="succeeded") == 1 else None
    wait_for(counted, timeout=10, what="the worker to count the run")
    reply = web.get("/_iii/metrics")
    assert reply.status == 503 and reply.json()["error"]["code"] == "STORE_UNAVAILABLE"
    fault_redis.start()

    wait_value(web, "iii_invocations_total", 1, timeout=20, function="test::pid",
               status="succeeded")
    call.exception(timeout=20)  # answered or not: the reply crossed the outage
    assert cluster.trigger("test::pid", {"seconds": 0})["pid"]
    samples = wait_value(web, "iii_invocations_total", 2, timeout=20, function="test::pid",
                         status="succeeded")
    assert value(samples, "iii_invocation_duration_seconds_count", function="test::pid") == 2
