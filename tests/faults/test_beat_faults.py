"""The beat through Redis outages: it rides out a Redis that is down for seconds, and
re-creates the schedule entries a Redis restarted empty lost, from the registry."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

from tests.cron.conftest import actual, beat, cron_worker, engine, fires, job_id, no_duplicates
from tests.faults.support import report
from tests.helpers import Proc, wait_for

EVERY_SECOND = {"expression": "* * * * * *"}


def _fired_after(store, settings, t: float) -> list[dict]:
    return [f for f in fires(store, settings) if actual(f) > datetime.fromtimestamp(t, UTC)]


def _rode_it_out(*procs: Proc) -> None:
    """Each process still runs, with no traceback in its log.

    Not ``assert_rode_it_out``: the worker's job fetcher may fail once on a connection that
    sat idle through the outage, after Redis is back, and log a second "lost the
    connection" line (the beat's own count is checked where it matters)."""
    for proc in procs:
        out = proc.output()
        assert proc.popen.poll() is None, f"{proc.name} exited:\n{out}"
        assert "Traceback" not in out, out


def test_the_beat_rides_out_a_redis_outage_and_fires_again_when_it_is_back(
        cluster, fault_redis, store, settings):
    procs = [engine(cluster), cron_worker(cluster, ("cron::tick", EVERY_SECOND))]
    b = beat(cluster)
    wait_for(lambda: len(fires(store, settings)) >= 2, timeout=10, what="fires")

    fault_redis.kill()
    time.sleep(3)  # the outage itself is under test
    fault_redis.start()
    back = time.time()
    first = wait_for(lambda: _fired_after(store, settings, back), timeout=15, interval=0.05,
                     what="fires after Redis is back")[0]
    recover = actual(first).timestamp() - back
    wait_for(lambda: len(_fired_after(store, settings, back)) >= 3, timeout=5,
             what="fires to go on")
    _rode_it_out(*procs, b)
    out = b.output()
    assert out.count("lost the connection to") == 1, out  # the beat: one line per outage
    assert out.count("Redis failed while leading; standing by") == 1, out
    assert out.index("lost the connection to Redis") < out.index("Redis failed while leading")
    assert "is back after" in out, out
    no_duplicates(fires(store, settings))
    report("Redis killed for 3 s under a leading beat (data kept)",
           "cron: the beat stands by, slots of the outage skipped as misfires",
           "the fires of the outage's slots (counted in skipped_misfire)", recover)


def test_the_beat_recreates_entries_lost_when_redis_restarts_empty(
        cluster, fault_redis, store, settings):
    procs = [engine(cluster), cron_worker(cluster, ("cron::tick", EVERY_SECOND))]
    worker = procs[1]
    b = beat(cluster)
    job = job_id(cluster, "cron::tick")
    entry = f"{settings.namespace}:redbeat:{job}"
    wait_for(lambda: len(fires(store, settings)) >= 2, timeout=10, what="fires")

    worker.signal(signal.SIGSTOP)  # so the beat meets the empty registry before it re-registers
    try:
        fault_redis.restart(empty=True)
        wait_for(lambda: "vanished" in b.output(), timeout=10,
                 what="the beat to log that the entry vanished")
        assert not store.exists(entry)
    finally:
        worker.signal(signal.SIGCONT)
    back = time.time()
    wait_for(lambda: _fired_after(store, settings, back), timeout=20, interval=0.05,
             what="fires once the worker registered again")
    recover = time.time() - back
    assert store.exists(entry)
    vanished = [line for line in b.output().splitlines() if "vanished" in line]
    assert len(vanished) == 1 and job in vanished[0] and "ERROR" in vanished[0], vanished
    wait_for(lambda: len(_fired_after(store, settings, back)) >= 3, timeout=5,
             what="fires to go on")
    assert {f["payload"]["job_id"] for f in _fired_after(store, settings, back)} == {job}
    _rode_it_out(*procs, b)
    report("Redis restarted empty under a leading beat (worker paused meanwhile, then resumed)",
           "cron: the beat logs the lost entry once; no fires until the worker re-registers",
           "each entry's last run and counts (re-created from the registry)", recover)


def test_a_beat_warns_at_start_when_redis_would_evict_or_forget_its_schedules(
        cluster, fault_redis, store, settings):
    store.config_set("maxmemory-policy", "allkeys-lru")
    store.config_set("appendonly", "no")
    store.config_set("save", "")
    b = beat(cluster)
    out = wait_for(lambda: "no persistence" in (o := b.output()) and o, timeout=10,
                   what="the persistence warning")
    assert "maxmemory-policy allkeys-lru" in out and "WARNING" in out
    b.stop()

    store.config_set("maxmemory-policy", "noeviction")
    store.config_set("appendonly", "yes")
    quiet = beat(cluster)
    assert "maxmemory-policy" not in quiet.output() and "no persistence" not in quiet.output()
