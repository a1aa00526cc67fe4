"""The beat with RabbitMQ carrying the invocations (III_BROKER_URL=amqp://...): fires and
their outcomes go through RabbitMQ, schedules stay in Redis."""

from __future__ import annotations

import json

from tests.cron.conftest import beat, cli, cron_worker, engine, fires, no_duplicates
from tests.e2e.test_amqp import broker_url, function_ids, rabbitmq_error  # noqa: F401 - fixtures
from tests.helpers import wait_for

EVERY_SECOND = {"expression": "* * * * * *"}


def test_a_beat_fires_through_rabbitmq_and_records_each_outcome(cluster, store, settings,
                                                               function_ids):  # noqa: F811
    function_ids.update({"cron::tick", "cron::other", "cron::slow", "cron::fail", "cron::allow"})
    engine(cluster)
    cron_worker(cluster, ("cron::tick", EVERY_SECOND))
    beat(cluster)
    wait_for(lambda: len(fires(store, settings, "cron::tick")) >= 3, timeout=15,
             what="three fires through RabbitMQ")
    no_duplicates(fires(store, settings))
    (job,) = [t["id"] for t in cluster.trigger("engine::triggers::list", {})["triggers"]
              if t["type"] == "cron"]
    status = wait_for(lambda: (s := store.hgetall(f"{settings.namespace}:cron:status:{job}"))
                      .get("last_outcome") == "ok" and s, timeout=10, what="an outcome")
    assert int(status["runs"]) >= 2
    ran = cli(cluster, "cron", "run", job)  # "Run now" waits for the answer through RabbitMQ
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["outcome"] == "ok"
