"""A durable subscription no worker declares (``engine::register_trigger``) is still served
by the workers of its function; it stops getting copies once unregistered."""

import iii_broker.testing
from tests.helpers import wait_for
from tests.queues.support import InProcessJobs


def test_an_engine_owned_durable_subscription_is_consumed_by_its_functions_workers(settings):
    jobs = InProcessJobs()
    with iii_broker.testing.run(jobs.app, config={}, settings=settings) as cluster:
        added = cluster.trigger("engine::register_trigger", {
            "type": "durable:subscriber", "function_id": "jobs::record",
            "config": {"topic": "audit"}})
        published = cluster.trigger("iii::durable::publish",
                                    {"topic": "audit", "data": {"id": "e1"}})
        assert published["subscribers"] == ["jobs::record"]
        wait_for(lambda: [r for r in jobs.runs if r["id"] == "e1"], timeout=10,
                 what="the engine-owned subscription's copy to run")
        cluster.wait_for_queues()
        assert cluster.trigger("engine::unregister_trigger", {"id": added["id"]})["removed"]
        again = cluster.trigger("iii::durable::publish", {"topic": "audit", "data": {"id": "e2"}})
        assert again["subscribers"] == []
