"""State triggers through a Redis outage: every change Redis acknowledged fires, in order,
once Redis is back; the engine and worker ride it out."""

from __future__ import annotations

import time

from tests.faults.support import assert_rode_it_out, report, timed
from tests.helpers import wait_for
from tests.state.conftest import STATE_APP, events


def test_state_triggers_fire_every_acknowledged_change_across_a_redis_outage(
        cluster, fault_redis, store):
    engine = cluster.engine()
    worker = cluster.worker(STATE_APP)
    acknowledged = []
    for n in range(5):
        cluster.trigger("state::set", {"scope": "orders", "key": "k", "value": n})
        acknowledged.append(n)
    wait_for(lambda: len(events(store, cluster, "watch::all")) >= 5, timeout=15,
             what="the first five events")

    fault_redis.kill()
    during = timed(cluster.trigger, "state::set", {"scope": "orders", "key": "k", "value": -1},
                   timeout_ms=2000)
    time.sleep(1.5)  # the outage itself is under test
    fault_redis.start()
    back = time.monotonic()
    for n in range(5, 10):
        wait_for(lambda n=n: timed(cluster.trigger, "state::set",
                                   {"scope": "orders", "key": "k", "value": n}).code is None,
                 timeout=20, interval=0.1, what=f"state::set {n} to be acknowledged")
        acknowledged.append(n)
    def every_change() -> list | None:  # a repeat (at least once) may come before the last
        got = events(store, cluster, "watch::all")
        return got if set(acknowledged) <= {e["payload"]["new_value"] for e in got} else None
    got = wait_for(every_change, timeout=20, what="an event for every acknowledged change")
    recover = time.monotonic() - back
    values = [e["payload"]["new_value"] for e in got]
    assert during.code is not None  # the caller was told, nothing half-written
    assert -1 not in values
    assert list(dict.fromkeys(values)) == acknowledged  # all of them, in order
    # at least once: a call whose answer the outage cut off is made again, nothing more
    assert len(values) - len(set(values)) <= 1, values
    assert_rode_it_out(engine, worker, outages=2)
    report("Redis killed for 1.5 s under state triggers (data kept)",
           "state::set: broker_unavailable or TIMEOUT during the outage",
           "nothing acknowledged", recover)
