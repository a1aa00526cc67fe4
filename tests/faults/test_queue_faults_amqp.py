"""The queue faults of test_queue_faults.py with RabbitMQ as the broker: standard queues'
jobs are RabbitMQ messages, acked once the job settles; the registry, FIFO groups,
retries and dead letters stay in the test's own Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kombu import Connection

from iii_broker.queues.amqp import job_queue
from tests.conftest import AMQP_URL
from tests.e2e.test_amqp import broker_url, function_ids, rabbitmq_error  # noqa: F401 - fixtures
from tests.faults.test_queue_faults import engine_killed_during_traffic, worker_paused_past_its_lease

JOB_FUNCTIONS = ("jobs::record", "jobs::flaky", "jobs::fail", "jobs::slow", "jobs::peak",
                 "jobs::die", "jobs::async_record", "jobs::echo", "topics::audit", "topics::mail")


@pytest.fixture
def amqp_cluster(cluster, store, settings, function_ids) -> Iterator[object]:  # noqa: F811
    """The cluster; afterwards (its processes stopped) this test's RabbitMQ queues go."""
    yield cluster
    cluster.close()
    function_ids.update(JOB_FUNCTIONS)
    with Connection(AMQP_URL, connect_timeout=3) as conn:
        channel = conn.channel()
        for fid in JOB_FUNCTIONS:
            for queue in ("work", "default"):
                channel.queue_delete(job_queue(settings, queue, fid).name)


def test_the_engine_sigkilled_during_amqp_queue_traffic_loses_no_acknowledged_job(
        amqp_cluster, store, settings):
    engine_killed_during_traffic(amqp_cluster, store, settings, "amqp")


def test_a_worker_paused_past_its_lease_on_amqp_has_its_jobs_run_elsewhere(
        amqp_cluster, store, settings):
    worker_paused_past_its_lease(amqp_cluster, store, settings, "amqp")
