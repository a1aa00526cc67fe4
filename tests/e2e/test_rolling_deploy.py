"""A rolling deploy with real processes: two v1 workers, then two v2 workers whose
``orders::create`` moved from ``POST /v1/orders`` to ``POST /v2/orders`` and whose
``orders::on_event`` moved from topic ``a`` to ``b``; ``GET /orders/health`` is in both.
The old workers get SIGTERM one by one while a client keeps calling the shared route."""

from __future__ import annotations

import signal
import threading
import time

from tests.helpers import in_thread, wait_for
from tests.queues.support import runs, start_workers
from tests.triggers_support import V1, V2, bindings, call, triggers, wait_answer
from tests.web.conftest import start_web

LOOP_LIMIT_S = 30
LOOP_LIMIT_CALLS = 5000


def test_a_rolling_deploy_serves_the_shared_route_throughout_and_leaves_no_stale_trigger(
        cluster, store, settings):
    cluster.engine()
    old = start_workers(cluster, "tests.apps.deploy_v1", n=2, concurrency=2)
    web = start_web(cluster)
    wait_answer(web, "GET", "/orders/health", 200)
    wait_answer(web, "POST", "/v1/orders", 201)

    start_workers(cluster, "tests.apps.deploy_v2", n=2, concurrency=2)
    # Old and new overlap: both routes are served (by a worker of either version: the
    # function is the same).
    wait_answer(web, "POST", "/v2/orders", 201)
    assert call(web, "POST", "/v1/orders").status == 201
    assert bindings(cluster) == V1 | V2

    stop = threading.Event()
    hits: list[tuple[float, int, str | None]] = []  # (when, status, version)

    def keep_calling() -> None:
        deadline = time.monotonic() + LOOP_LIMIT_S
        while not stop.is_set() and time.monotonic() < deadline and len(hits) < LOOP_LIMIT_CALLS:
            reply = call(web, "GET", "/orders/health")
            hits.append((time.monotonic(), reply.status,
                         reply.json().get("version") if reply.status == 200 else reply.text))
    loop = in_thread(keep_calling)
    wait_for(lambda: len(hits) >= 10, what="the client loop to get going")

    first_term = time.monotonic()
    old[0].signal(signal.SIGTERM)
    assert old[0].wait() == 0
    # One old worker still declares /v1/orders: it stays, active.
    assert call(web, "POST", "/v1/orders").status == 201
    assert ("http", "orders::create", "POST /v1/orders") in bindings(cluster)
    old[1].signal(signal.SIGTERM)
    assert old[1].wait() == 0
    last_exit = time.monotonic()
    wait_for(lambda: sum(h[0] > last_exit for h in hits) >= 10,
             what="the client loop to go on after the last old worker stopped")
    stop.set()
    loop.result(timeout=10)

    failed = [h for h in hits if h[1] != 200]
    assert not failed, f"{len(failed)} of {len(hits)} calls failed, first: {failed[:3]}"
    assert sum(first_term <= h[0] <= last_exit for h in hits) >= 10, "no calls during the deploy"
    assert {h[2] for h in hits if h[0] > last_exit} == {"v2"}

    # The old route and topic went with the last old worker; nothing stale is left.
    reply = wait_answer(web, "POST", "/v1/orders", 404)
    assert "orders::create" not in reply.text
    assert call(web, "POST", "/v2/orders").json()["version"] == "v2"
    assert bindings(cluster) == V2
    assert all(t["active"] for t in triggers(cluster))
    assert not [t for t in triggers(cluster)
                if "/v1/" in str(t["config"].get("api_path")) or t["config"].get("topic") == "a"]

    assert cluster.client.trigger("iii::durable::publish", {"topic": "a", "data": 1})[
        "subscribers"] == []
    assert cluster.client.trigger("iii::durable::publish", {"topic": "b", "data": 2})[
        "subscribers"] == ["orders::on_event"]
    wait_for(lambda: [(r["version"], r["payload"]) for r in runs(store, settings)] == [("v2", 2)],
             what="topic b's message to run on v2")
