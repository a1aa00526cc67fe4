"""``iii-broker beat``: cron triggers fired by real beat processes, against real Redis.

Every beat and engine here runs with ``lock_timeout_s = 2`` so that fail-over is quick.
The only sleeps are spans of time that are themselves under test (a beat kept down over
some slots, a window in which nothing may fire); work is waited for with deadlines.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta

from tests.cron.conftest import (
    FAST,
    actual,
    beat,
    cli,
    cron_triggers,
    cron_worker,
    engine,
    fires,
    job_id,
    leader_pid,
    no_duplicates,
    scheduled,
    status,
)
from tests.helpers import wait_for

EVERY_SECOND = {"expression": "* * * * * *"}


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _fired_after(store, settings, t: float, fn: str = "cron::tick") -> list[dict]:
    return [f for f in fires(store, settings, fn) if actual(f) > _at(t)]


def _quiet_for(seconds: float) -> None:
    """A span in which the test checks that nothing happens (not a wait for work)."""
    time.sleep(seconds)


def test_two_beats_fire_an_every_second_trigger_once_a_second(cluster, store, settings):
    engine(cluster)
    cron_worker(cluster, ("cron::tick", EVERY_SECOND))
    beat(cluster)
    beat(cluster)
    job = job_id(cluster, "cron::tick")
    wait_for(lambda: fires(store, settings), timeout=10, what="the first fire")
    start = time.time()
    found = wait_for(lambda: len(f := _fired_after(store, settings, start)) >= 6 and f,
                     timeout=10, what="six more fires")
    elapsed = time.time() - start
    assert abs(len(found) - elapsed) <= 1, (len(found), elapsed)
    no_duplicates(fires(store, settings))
    slots = sorted(scheduled(f) for f in found)
    assert all(b - a == timedelta(seconds=1) for a, b in zip(slots, slots[1:], strict=False)), \
        f"not one fire a second: {slots}"
    for f in found:
        assert actual(f) >= scheduled(f), f
        assert actual(f) - scheduled(f) < timedelta(seconds=1), f
        assert f["payload"]["trigger"] == "cron" and f["payload"]["job_id"] == job, f


def test_a_standby_beat_takes_over_within_the_lock_timeout_when_the_leader_is_killed(
        cluster, store, settings):
    engine(cluster)
    cron_worker(cluster, ("cron::tick", EVERY_SECOND))
    beats = {b.pid: b for b in (beat(cluster), beat(cluster), beat(cluster))}
    wait_for(lambda: len(fires(store, settings)) >= 2, timeout=10, what="fires")
    leader = leader_pid(store, settings)
    assert leader in beats, (leader, list(beats))

    beats[leader].signal(signal.SIGKILL)
    beats[leader].wait()
    killed = time.time()
    first = wait_for(lambda: _fired_after(store, settings, killed), timeout=8,
                     what="a fire after the leader was killed")[0]
    assert actual(first) - _at(killed) <= timedelta(seconds=2 + 2), first
    new_leader = leader_pid(store, settings)
    assert new_leader in beats and new_leader != leader
    wait_for(lambda: len(_fired_after(store, settings, killed)) >= 3, timeout=6,
             what="fires to go on after the handover")
    no_duplicates(fires(store, settings))
    assert "leading" in beats[new_leader].output()


def test_a_leader_that_finds_its_lock_taken_stands_by_and_fires_again_when_it_is_free(
        cluster, store, settings):
    lock = f"{settings.namespace}:redbeat::lock"
    engine(cluster)
    cron_worker(cluster, ("cron::tick", EVERY_SECOND))
    b = beat(cluster)
    wait_for(lambda: fires(store, settings), timeout=10, what="the first fire")

    store.set(lock, "elsewhere:1:fake", px=60_000)
    wait_for(lambda: "lost the lock to elsewhere:1:fake" in b.output(), timeout=5,
             what="the beat to log that it lost the lock")
    lost = time.time()
    _quiet_for(3)
    assert b.popen.poll() is None, b.output()
    assert _fired_after(store, settings, lost) == [], "fired while another beat held the lock"

    store.delete(lock)
    freed = time.time()
    wait_for(lambda: _fired_after(store, settings, freed), timeout=3,
             what="fires to resume once the lock was free")

    store.delete(lock)  # a lease that simply vanished: the leader takes it again
    deleted = time.time()
    wait_for(lambda: len(_fired_after(store, settings, deleted)) >= 2, timeout=4,
             what="fires to go on after the lock key was deleted")
    assert b.popen.poll() is None, b.output()
    assert leader_pid(store, settings) == b.pid
    no_duplicates(fires(store, settings))


def test_an_engine_owned_trigger_fires_from_its_next_slot_and_stops_when_removed(
        cluster, store, settings):
    engine(cluster)
    cron_worker(cluster)  # serves cron::other; declares no trigger
    beat(cluster)
    beat(cluster)
    added_at = time.time()
    added = cli(cluster, "triggers", "add", "cron", "cron::other", json.dumps(EVERY_SECOND))
    assert added.returncode == 0, added.stderr
    trigger_id = added.stdout.strip()

    first = wait_for(lambda: fires(store, settings, "cron::other"), timeout=5,
                     what="the added trigger to fire")[0]
    assert first["payload"]["job_id"] == trigger_id
    assert scheduled(first) > _at(added_at), "fired a slot from before it was added"

    removed = cli(cluster, "triggers", "remove", trigger_id)
    assert removed.returncode == 0, removed.stderr
    gone = time.time()
    _quiet_for(2.5)
    assert _fired_after(store, settings, gone + 1, "cron::other") == []
    assert not store.exists(f"{settings.namespace}:redbeat:{trigger_id}")
    no_duplicates(fires(store, settings, "cron::other"))


def test_a_worker_restarted_with_a_new_expression_replaces_its_trigger_and_schedule(
        cluster, store, settings):
    engine(cluster)
    old_worker = cron_worker(cluster, ("cron::tick", EVERY_SECOND))
    beat(cluster)
    old = job_id(cluster, "cron::tick")
    wait_for(lambda: fires(store, settings), timeout=10, what="the first fire")

    old_worker.stop()
    cron_worker(cluster, ("cron::tick", {"expression": "*/3 * * * * *"}))
    restarted = time.time()
    wait_for(lambda: [t["id"] for t in cron_triggers(cluster)] != [old], timeout=5,
             what="the old trigger to go")
    new = job_id(cluster, "cron::tick")
    assert new != old
    later = wait_for(lambda: len(f := _fired_after(store, settings, restarted)) >= 2 and f,
                     timeout=10, what="two fires of the new schedule")
    assert {f["payload"]["job_id"] for f in later} == {new}
    assert all(scheduled(f).second % 3 == 0 for f in later), later
    wait_for(lambda: not store.exists(f"{settings.namespace}:redbeat:{old}"), timeout=5,
             what="the old trigger's entry to go")


def test_a_worker_declared_trigger_is_disabled_while_its_worker_is_gone(
        cluster, store, settings):
    engine(cluster)
    worker = cron_worker(cluster, ("cron::tick", EVERY_SECOND))
    beat(cluster)
    job = job_id(cluster, "cron::tick")
    entry = f"{settings.namespace}:redbeat:{job}"
    wait_for(lambda: fires(store, settings), timeout=10, what="the first fire")

    worker.stop()
    stopped = time.time()
    wait_for(lambda: json.loads(store.hget(entry, "definition") or "{}").get("enabled") is False,
             timeout=5, what="the entry to be disabled")
    assert cron_triggers(cluster, "cron::tick")[0]["active"] is False
    _quiet_for(2)
    assert _fired_after(store, settings, stopped + 0.5) == []

    cron_worker(cluster, ("cron::tick", EVERY_SECOND))
    back = time.time()
    again = wait_for(lambda: _fired_after(store, settings, back), timeout=5,
                     what="fires once a worker is back")
    assert again[0]["payload"]["job_id"] == job
    assert scheduled(again[0]) > _at(stopped + 1), "fired a slot missed while it was inactive"
    assert json.loads(store.hget(entry, "definition"))["enabled"] is True
    no_duplicates(fires(store, settings))


def test_slots_missed_while_no_beat_ran_are_skipped_and_counted(cluster, store, settings):
    engine(cluster)
    cron_worker(cluster, ("cron::tick", EVERY_SECOND))
    first_beat = beat(cluster)
    job = job_id(cluster, "cron::tick")
    wait_for(lambda: fires(store, settings), timeout=10, what="the first fire")

    first_beat.signal(signal.SIGTERM)
    assert first_beat.wait() == 0, first_beat.output()
    stopped = time.time()
    _quiet_for(5)  # the gap: no beat runs
    restarted = time.time()
    beat(cluster)
    wait_for(lambda: _fired_after(store, settings, restarted), timeout=8,
             what="fires from the new beat")

    # A slot less than the misfire threshold (2 s) old when the new beat first ticks is
    # still fired, late but in time: only older ones were missed.
    in_gap = [f for f in fires(store, settings)
              if _at(stopped + 0.5) < scheduled(f) < _at(restarted - 2.5)]
    assert in_gap == [], f"fired slots missed while no beat ran: {in_gap}"
    assert all(actual(f) - scheduled(f) <= timedelta(milliseconds=2000)
               for f in fires(store, settings)), "a slot fired later than the misfire threshold"
    assert int(status(store, settings, job).get("skipped_misfire", 0)) >= 2
    no_duplicates(fires(store, settings))


def test_catch_up_once_fires_the_latest_missed_slot_once_when_a_beat_is_back(
        cluster, store, settings):
    engine(cluster)
    cron_worker(cluster, ("cron::tick", {"expression": "*/5 * * * * *",
                                         "misfire": "catch_up_once", "misfire_grace_s": 60}))
    first_beat = beat(cluster)
    last = wait_for(lambda: fires(store, settings), timeout=10, what="the first fire")[-1]
    first_beat.signal(signal.SIGTERM)
    assert first_beat.wait() == 0, first_beat.output()

    # No beat may lead until the next slot is past the misfire threshold (2 s). The new beat
    # starts meanwhile, standing by behind a lock held for that long, so that how long it
    # takes to start cannot carry it into the slot after.
    missed = scheduled(last) + timedelta(seconds=5)
    free_at = missed.timestamp() + 2.6
    store.set(f"{settings.namespace}:redbeat::lock", "elsewhere:1:down",
              px=int((free_at - time.time()) * 1000))
    beat(cluster)
    caught = wait_for(lambda: [f for f in fires(store, settings) if scheduled(f) == missed],
                      timeout=8, what="the missed slot to be caught up")
    assert len(caught) == 1, caught
    assert actual(caught[0]) >= _at(free_at), "fired while no beat could lead"
    wait_for(lambda: any(scheduled(f) > missed for f in fires(store, settings)), timeout=8,
             what="the schedule to go on")
    assert [f for f in fires(store, settings) if scheduled(f) == missed] == caught
    no_duplicates(fires(store, settings))


def test_overlap_skip_never_starts_a_run_while_the_previous_one_runs(cluster, store, settings):
    engine(cluster)
    cron_worker(cluster, ("cron::slow", {**EVERY_SECOND, "overlap": "skip"}),
                III_TEST_CRON_SLEEP_S="2.5")
    beat(cluster)
    job = job_id(cluster, "cron::slow")
    runs = wait_for(lambda: len(f := fires(store, settings, "cron::slow")) >= 3 and f,
                    timeout=15, what="three runs")
    received = [f["received"] for f in runs]
    assert all(b >= a + 2.5 for a, b in zip(received, received[1:], strict=False)), received
    assert int(status(store, settings, job).get("skipped_overlap", 0)) > 0


QUEUE_CONFIG = FAST + """
[modules.queue.queues.cronq]
max_retries = 1
backoff_ms = 100
"""


def test_a_trigger_with_a_queue_runs_with_its_retries_and_dead_letters(
        cluster, store, settings):
    engine(cluster, QUEUE_CONFIG)
    cron_worker(cluster, ("cron::fail", {"expression": "*/2 * * * * *", "queue": "cronq"}))
    beat(cluster)
    job = job_id(cluster, "cron::fail")

    def dead() -> list[dict]:
        out = cli(cluster, "dlq", "list", "cronq", "--json", config=QUEUE_CONFIG)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["messages"]
    letters = wait_for(dead, timeout=15, what="a dead letter on cronq")
    assert letters[0]["function_id"] == "cron::fail" and letters[0]["attempts"] == 2, letters
    slot = letters[0]["payload"]
    assert slot["trigger"] == "cron" and slot["job_id"] == job, letters[0]
    runs = [f for f in fires(store, settings, "cron::fail")
            if f["payload"]["scheduled_time"] == slot["scheduled_time"]]
    assert len(runs) == 2, runs  # the first attempt and its one retry
    assert status(store, settings, job)["last_outcome"] == "enqueued"


def test_a_trigger_naming_an_unconfigured_queue_is_refused_with_the_queue_named(
        cluster, store, settings):
    engine(cluster)
    cron_worker(cluster)
    out = cli(cluster, "triggers", "add", "cron", "cron::tick",
              json.dumps({**EVERY_SECOND, "queue": "nosuchq"}))
    assert out.returncode != 0
    assert "nosuchq" in out.stderr and "not configured" in out.stderr, out.stderr
    assert cron_triggers(cluster) == []


def test_a_condition_that_says_no_skips_the_slot_and_counts_it(cluster, store, settings):
    engine(cluster)
    cron_worker(cluster, ("cron::tick", {**EVERY_SECOND, "condition_function_id": "cron::allow"}))
    beat(cluster)
    job = job_id(cluster, "cron::tick")
    wait_for(lambda: int(status(store, settings, job).get("skipped_condition", 0)) >= 2,
             timeout=10, what="slots skipped by the condition")
    assert fires(store, settings, "cron::tick") == []
    assert status(store, settings, job)["last_outcome"] == "skipped_condition"

    store.set(f"{settings.namespace}:test:allow", "1")
    allowed = time.time()
    wait_for(lambda: _fired_after(store, settings, allowed), timeout=5,
             what="fires once the condition says yes")
    wait_for(lambda: status(store, settings, job).get("last_outcome") == "ok", timeout=5,
             what="the outcome ok")


def test_an_expression_with_an_out_of_range_hour_is_refused_at_registration(cluster, store):
    engine(cluster)
    cron_worker(cluster)
    out = cli(cluster, "triggers", "add", "cron", "cron::tick",
              json.dumps({"expression": "0 0 25 * * *"}))
    assert out.returncode != 0
    assert "0 0 25 * * *" in out.stderr, out.stderr
    assert cron_triggers(cluster) == []
