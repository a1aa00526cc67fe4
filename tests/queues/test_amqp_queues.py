"""Named queues with RabbitMQ as the broker: standard queues' jobs live in RabbitMQ, FIFO
groups, retries waiting for their backoff and dead letters in Redis."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from kombu import Connection

from iii_broker import Enqueue
from iii_broker.queues.amqp import job_queue
from tests.conftest import AMQP_URL
from tests.e2e.test_amqp import broker_url, function_ids, rabbitmq_error  # noqa: F401 - fixtures
from tests.helpers import wait_for
from tests.queues.support import queue_stats, runs, settled

CONFIG = """
[modules.queue.queues.fast]
max_retries = 2
backoff_ms = 100

[modules.queue.queues.ordered]
type = "fifo"
message_group_field = "g"
backoff_ms = 100
"""


@pytest.fixture
def job_queues(settings, store, broker_url) -> Iterator[set[str]]:  # noqa: F811 - the fixture above
    """Delete this test's RabbitMQ job queues afterwards (its processes have stopped)."""
    functions: set[str] = set()
    yield functions
    functions |= {"jobs::record", "jobs::flaky", "jobs::fail", "jobs::slow", "jobs::peak",
                  "jobs::die", "jobs::async_record", "jobs::echo"}
    with Connection(AMQP_URL, connect_timeout=3) as conn:
        channel = conn.channel()
        for queue in ("fast", "default"):
            for fid in functions:
                channel.queue_delete(job_queue(settings, queue, fid).name)


def test_jobs_wait_in_rabbitmq_then_run_retry_and_dead_letter_while_fifo_stays_in_redis(
        cluster, store, settings, job_queues, function_ids):  # noqa: F811
    cluster.engine(config=CONFIG)
    fast = Enqueue(queue="fast")
    cluster.client.trigger("jobs::flaky", {"id": "f", "fail_times": 1}, action=fast)
    cluster.client.trigger("jobs::record", {"id": "r"}, action=fast)
    cluster.client.trigger("jobs::fail", {"id": "x"}, action=fast)
    ordered = Enqueue(queue="ordered")
    cluster.client.trigger("jobs::flaky", {"id": "o1", "g": "G", "fail_times": 1}, action=ordered)
    cluster.client.trigger("jobs::record", {"id": "o2", "g": "G"}, action=ordered)
    # No worker yet: RabbitMQ holds (and has confirmed) the standard queue's jobs, no Redis
    # list does; a FIFO queue's jobs stay in Redis (their group's list), whatever the broker.
    assert queue_stats(cluster, "fast")["depth"] == 3
    assert not list(store.scan_iter(f"{settings.namespace}.fn.*"))
    assert store.llen(f"{settings.namespace}:q:ordered:g:\"G\"") == 2  # groups by their JSON

    cluster.worker("tests.apps.jobs", concurrency=2)
    function_ids.update(store.smembers(f"{settings.namespace}:functions"))
    wait_for(lambda: settled(cluster, "fast", done=2, dead=1)
             and settled(cluster, "ordered", done=2), timeout=20, what="the jobs to be settled")
    done = runs(store, settings)
    assert sorted((r["id"], r["attempt"], r["ok"]) for r in done if r["g"] is None) == [
        ("f", 1, False), ("f", 2, True), ("r", 1, True),
        ("x", 1, False), ("x", 2, False), ("x", 3, False)]
    assert [(r["id"], r["attempt"], r["ok"]) for r in done if r["g"] == "G"] == [
        ("o1", 1, False), ("o1", 2, True), ("o2", 1, True)]
    stats = queue_stats(cluster, "fast")
    assert (stats["enqueued"], stats["retried"]) == (3, 3)
    dlq = cluster.client.trigger("engine::queue::dlq_messages", {"queue": "fast"})
    assert [(m["function_id"], m["payload"], m["attempts"]) for m in dlq["messages"]] == [
        ("jobs::fail", {"id": "x"}, 3)]


def test_a_job_whose_worker_is_killed_is_redelivered_by_rabbitmq_and_counts_an_attempt(
        cluster, store, settings, job_queues, function_ids):  # noqa: F811
    cluster.engine(config=CONFIG)
    victim = cluster.worker("tests.apps.jobs")
    function_ids.update(store.smembers(f"{settings.namespace}:functions"))
    cluster.client.trigger("jobs::slow", {"id": "s", "s": 1.0}, action=Enqueue(queue="fast"))
    wait_for(lambda: any(r.get("phase") == "start" for r in runs(store, settings)),
             timeout=15, what="the slow job to start")
    victim.signal(signal.SIGKILL)
    victim.wait()
    cluster.worker("tests.apps.jobs")
    ends = wait_for(lambda: [r for r in runs(store, settings) if r.get("phase") == "end"],
                    timeout=20, what="the job to finish on the second worker")
    assert [r["attempt"] for r in ends] == [2]
    # The dead worker's cap slot was given back by the engine.
    wait_for(lambda: int(store.get(f"{settings.namespace}:q:fast:running") or 0) == 0,
             timeout=10, what="no job counted as running")
