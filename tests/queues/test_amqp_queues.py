"""Named queues with RabbitMQ as the broker: standard queues' jobs live in RabbitMQ."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest
from kombu import Connection

from iii_broker import Enqueue
from iii_broker.queues.amqp import job_queue
from tests.conftest import AMQP_URL
from tests.e2e.test_amqp import broker_url, function_ids, rabbitmq_error  # noqa: F401 - fixtures
from tests.helpers import wait_for

CONFIG = """
[modules.queue.queues.rq]
max_retries = 2
backoff_ms = 100
"""
FUNCTIONS = ("jobs::record", "jobs::flaky", "jobs::slow")


@pytest.fixture
def job_queues(settings, broker_url) -> Iterator[None]:  # noqa: F811 - the fixture above
    """Delete this test's RabbitMQ job queues afterwards."""
    yield
    with Connection(AMQP_URL, connect_timeout=3) as conn:
        for queue in ("rq", "default"):
            for fid in FUNCTIONS + ("jobs::peak", "jobs::fail", "jobs::die", "jobs::async_record"):
                conn.channel().queue_delete(job_queue(settings, queue, fid).name)


def _runs(store, settings) -> list[dict]:
    return [json.loads(x) for x in store.lrange(f"{settings.namespace}:test:runs", 0, -1)]


def _waiting_in_rabbitmq(settings, queue: str, function_id: str) -> int:
    with Connection(AMQP_URL, connect_timeout=3) as conn:
        ok = conn.channel().queue_declare(queue=job_queue(settings, queue, function_id).name,
                                          passive=True)
        return ok.message_count


def test_jobs_wait_in_rabbitmq_until_a_worker_takes_them(cluster, store, settings, job_queues):
    cluster.engine(config=CONFIG)
    for i in range(5):
        cluster.client.trigger("jobs::record", {"id": i}, action=Enqueue(queue="rq"))
    # Confirmed by RabbitMQ, nothing in Redis's job lists.
    assert _waiting_in_rabbitmq(settings, "rq", "jobs::record") == 5
    assert not store.exists(f"{settings.namespace}.fn.jobs::record.q.rq")
    cluster.worker("tests.apps.jobs")
    wait_for(lambda: sorted(r["id"] for r in _runs(store, settings)) == [0, 1, 2, 3, 4],
             timeout=15, what="the 5 jobs to run")
    assert _waiting_in_rabbitmq(settings, "rq", "jobs::record") == 0


def test_a_failing_job_is_retried_through_rabbitmq_with_its_attempt_number(
        cluster, store, settings, job_queues):
    cluster.engine(config=CONFIG)
    cluster.worker("tests.apps.jobs")
    cluster.client.trigger("jobs::flaky", {"id": "f", "fail_times": 2}, action=Enqueue(queue="rq"))
    runs = wait_for(lambda: (r := _runs(store, settings)) and r[-1]["ok"] and r, timeout=15,
                    what="the job to succeed")
    assert [(r["attempt"], r["ok"]) for r in runs] == [(1, False), (2, False), (3, True)]


def test_a_job_whose_worker_is_killed_is_redelivered_by_rabbitmq_and_counts_an_attempt(
        cluster, store, settings, job_queues):
    cluster.engine(config=CONFIG)
    victim = cluster.worker("tests.apps.jobs")
    cluster.client.trigger("jobs::slow", {"id": "s", "s": 1.0}, action=Enqueue(queue="rq"))
    wait_for(lambda: any(r.get("phase") == "start" for r in _runs(store, settings)),
             timeout=15, what="the slow job to start")
    victim.signal(signal.SIGKILL)
    victim.wait()
    cluster.worker("tests.apps.jobs")
    ends = wait_for(lambda: [r for r in _runs(store, settings) if r.get("phase") == "end"],
                    timeout=20, what="the job to finish on the second worker")
    assert [r["attempt"] for r in ends] == [2]
    # The dead worker's cap slot was given back by the engine.
    wait_for(lambda: int(store.get(f"{settings.namespace}:q:rq:running") or 0) == 0,
             timeout=10, what="no job counted as running")
