"""A first pass over named queues: a retried job, with the engine and a worker run in the
test process (``iii_broker.testing``); test_named_queues.py runs them as real processes."""

import tomllib

import iii_broker.testing
from iii_broker import Enqueue
from tests.helpers import wait_for
from tests.queues.support import InProcessJobs

CONFIG = """
[modules.queue.queues.fast]
max_retries = 2
backoff_ms = 100
"""


def test_a_flaky_job_is_retried_by_the_engine_until_it_succeeds(settings):
    jobs = InProcessJobs()
    with iii_broker.testing.run(jobs.app, config=tomllib.loads(CONFIG),
                                settings=settings) as cluster:
        receipt = cluster.trigger("jobs::flaky", {"id": "a", "fail_times": 2},
                                  action=Enqueue(queue="fast"))
        assert set(receipt) == {"messageReceiptId"}
        runs = wait_for(lambda: list(jobs.runs) if len(jobs.runs) >= 3 else None, timeout=10,
                        what="3 attempts")
    assert [(r["attempt"], r["ok"]) for r in runs] == [(1, False), (2, False), (3, True)]
