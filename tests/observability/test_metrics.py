"""Cluster metrics: every process adds its counts to Redis, each web process's
``/_iii/metrics`` serves the sums (parsed here with prometheus-client's own parser), and a
process may serve its own figures on a port of its own. Real engine, worker and web
processes throughout."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from iii_broker import Enqueue, IIIError
from iii_broker.modules.observability.metrics import duties
from iii_broker.modules.observability.options import ObservabilityOptions
from iii_broker.registry import Registry
from tests.helpers import free_port, wait_for
from tests.web.conftest import Web, start_web

QUEUES = """
[modules.queue.queues.payment]
max_retries = 1
backoff_ms = 50

[modules.queue.queues.slowq]
concurrency = 1
"""


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page: (name, labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def page(web: Web) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = web.get("/_iii/metrics")
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain; version=")
    return parse(reply.text)


def own_page(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        return parse(response.read().decode())
    finally:
        conn.close()


def wait_value(web: Web, name: str, expected: float, timeout: float = 15, **labels: str
               ) -> dict[Any, float]:
    """Poll the page until the sample ``name{labels}`` equals ``expected``; the page then."""
    def shown() -> dict[Any, float] | None:
        samples = page(web)
        return samples if value(samples, name, **labels) == expected else None
    return wait_for(shown, timeout=timeout, what=f"{name}{labels} == {expected} on :{web.port}")


def test_figures_from_two_workers_add_up_on_both_web_pages(cluster):
    cluster.engine()
    own_port = free_port()
    first = cluster.worker(concurrency=2, III_METRICS_PORT=str(own_port))
    second = cluster.worker(concurrency=2, III_METRICS_PORT=str(own_port))  # in use: a warning
    webs = [start_web(cluster), start_web(cluster)]
    calls = 12
    with ThreadPoolExecutor(calls) as pool:  # two slots per worker: both must take some
        pids = list(pool.map(lambda _: cluster.trigger("test::pid", {"seconds": 0.3})["pid"],
                             range(calls)))
    assert set(pids) == {first.pid, second.pid}
    with pytest.raises(IIIError) as failed:
        cluster.trigger("test::fail", {"x": 1})
    assert failed.value.code == "invocation_failed"

    for web in webs:  # each web process serves the whole cluster's sums
        samples = wait_value(web, "iii_invocations_total", calls, function="test::pid",
                             status="succeeded")
        samples = wait_value(web, "iii_invocation_errors_total", 1, function="test::fail",
                             code="invocation_failed")
        assert value(samples, "iii_invocations_total", function="test::fail",
                     status="failed") == 1
        assert value(samples, "iii_invocation_duration_seconds_count",
                     function="test::pid") == calls
        # Buckets are cumulative: none of the 0.3 s runs fits under 0.25 s, all under 2.5 s.
        assert value(samples, "iii_invocation_duration_seconds_bucket", function="test::pid",
                     le="0.25") == 0
        assert value(samples, "iii_invocation_duration_seconds_bucket", function="test::pid",
                     le="2.5") == calls
        assert value(samples, "iii_invocation_duration_seconds_bucket", function="test::pid",
                     le="+Inf") == calls
        assert value(samples, "iii_invocation_duration_seconds_sum",
                     function="test::pid") >= calls * 0.3
        assert value(samples, "iii_workers_live") == 2
        assert value(samples, "iii_worker_slots", state="idle") \
            + value(samples, "iii_worker_slots", state="busy") == 4
        assert value(samples, "iii_stream_connections") == 0

    # The first worker's own port serves its own share; the second's could not bind it.
    def own_share() -> dict[Any, float] | None:
        samples = own_page(own_port)
        return samples if value(samples, "iii_invocations_total", function="test::pid",
                                status="succeeded") == pids.count(first.pid) else None
    mine = wait_for(own_share, what="the first worker's own figures")
    assert value(mine, "iii_invocation_duration_seconds_count",
                 function="test::pid") == pids.count(first.pid)
    assert "cannot serve this process's figures" in second.output()
    assert second.popen.poll() is None


def test_busy_slots_follow_running_handlers(cluster):
    cluster.engine()
    cluster.worker(concurrency=3)
    web = start_web(cluster)
    wait_value(web, "iii_worker_slots", 3, state="idle")
    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(cluster.trigger, "test::pid", {"seconds": 3}) for _ in range(2)]
        samples = wait_value(web, "iii_worker_slots", 2, timeout=3, state="busy")
        assert value(samples, "iii_worker_slots", state="idle") == 1
        for future in running:
            future.result()
    wait_value(web, "iii_worker_slots", 0, state="busy")


def test_queue_depth_dead_letters_and_retries(cluster):
    cluster.engine(config=QUEUES)
    cluster.worker("tests.apps.jobs")
    web = start_web(cluster)
    for i in ("a", "b"):
        cluster.trigger("jobs::fail", {"id": i}, action=Enqueue(queue="payment"))
    for i in range(3):  # one runs at a time: two wait
        cluster.trigger("jobs::slow", {"id": i, "s": 2.0}, action=Enqueue(queue="slowq"))
    samples = wait_value(web, "iii_queue_depth", 2, queue="slowq")
    samples = wait_value(web, "iii_queue_dead_letters", 2, queue="payment")
    assert value(samples, "iii_queue_depth", queue="payment") == 0
    assert value(samples, "iii_queue_dead_letters", queue="slowq") == 0
    samples = wait_value(web, "iii_retries_total", 2, queue="payment")
    # Two jobs, two attempts each: four failed runs, and each job waited once in its queue.
    # (the runs' counts come with the worker's next report, up to a second after the letters)
    samples = wait_value(web, "iii_invocations_total", 4, function="jobs::fail", status="failed")
    assert value(samples, "iii_queued_to_started_seconds_count", queue="payment") == 2
    samples = wait_value(web, "iii_queued_to_started_seconds_count", 1, queue="slowq")


def test_the_page_sits_behind_the_management_access_check(cluster):
    cluster.engine()
    web = start_web(cluster, III_API_TOKEN="s3cret")
    assert web.get("/_iii/metrics").status == 401
    reply = web.get("/_iii/metrics", headers={"Authorization": "Bearer s3cret"})
    assert reply.status == 200
    assert value(parse(reply.text), "iii_workers_live") == 0


@dataclass
class EngineStandIn:
    """What the metrics duty uses of an engine host: its registry (on the real Redis)."""

    registry: Registry


def test_the_engine_forgets_gauges_of_processes_gone_silent(store, settings):
    key = f"{settings.namespace}:metrics:gauges"
    now_ms = int(time.time() * 1000)
    store.hset(key, mapping={
        "worker:gone": json.dumps({"at": now_ms - 120_000, "kind": "worker", "gauges": {}}),
        "worker:here": json.dumps({"at": now_ms, "kind": "worker", "gauges": {}}),
        "worker:garbled": "{not json"})
    [duty] = duties(EngineStandIn(Registry(store, settings.namespace)), ObservabilityOptions())
    assert duty.elected
    duty.run()
    assert store.hkeys(key) == ["worker:here"]
