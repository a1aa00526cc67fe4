"""A first end-to-end pass over named queues with real processes."""

import json

from iii_broker import Enqueue
from tests.helpers import wait_for

CONFIG = """
[modules.queue.queues.fast]
max_retries = 2
backoff_ms = 100
"""


def test_a_flaky_job_is_retried_by_the_engine_until_it_succeeds(cluster, store, settings):
    cluster.engine(config=CONFIG)
    cluster.worker("tests.apps.jobs")
    receipt = cluster.client.trigger("jobs::flaky", {"id": "a", "fail_times": 2},
                                     action=Enqueue(queue="fast"))
    assert set(receipt) == {"messageReceiptId"}
    runs_key = f"{settings.namespace}:test:runs"
    runs = wait_for(lambda: [json.loads(x) for x in store.lrange(runs_key, 0, -1)]
                    if store.llen(runs_key) >= 3 else None, timeout=10, what="3 attempts")
    assert [(r["attempt"], r["ok"]) for r in runs] == [(1, False), (2, False), (3, True)]
