"""Named queues end to end: retries and backoff, dead letters and their tools, enqueue
receipts and idempotency, workers dying (SIGKILL, poison jobs), long jobs, async handlers
and settings errors. A real engine and real worker processes on a real Redis; the apps
are tests/apps/jobs.py and tests/apps/jobs_extra.py, which record every run on
``NS:test:runs``. Tests of what a queue does with a job, where no process dies, run the
engine and a worker in the test process instead (``iii_broker.testing``, with
``support.InProcessJobs``)."""

from __future__ import annotations

import json
import signal
import time
import tomllib
from typing import Any

import pytest

import iii_broker.testing
from iii_broker import EnqueueError, InvocationFailed
from tests.helpers import wait_for
from tests.queues.support import (
    InProcessJobs,
    dead_letters,
    enqueue,
    queue_stats,
    runs,
    settled,
    wait_dead,
    worker_id,
)

CONFIG = """
[modules.queue.queues.backoff]
max_retries = 3
backoff_ms = 200

[modules.queue.queues.dlq]
max_retries = 2
backoff_ms = 20

[modules.queue.queues.redrive]
max_retries = 1
backoff_ms = 20

[modules.queue.queues.bulk]
max_retries = 3
backoff_ms = 100

[modules.queue.queues.long]
max_retries = 3
backoff_ms = 100

[modules.queue.queues.poison]
max_retries = 2
backoff_ms = 50
concurrency = 1

[modules.queue.queues.work]
max_retries = 2
backoff_ms = 20
"""

JOBS = "tests.apps.jobs"
EXTRA = "tests.apps.jobs_extra"

# -- retries --------------------------------------------------------------------------


def test_a_failing_job_is_retried_with_exponential_backoff_and_sees_its_attempt_number(
        cluster, store, settings):
    cluster.engine(config=CONFIG)
    cluster.worker(JOBS)
    enqueue(cluster, "jobs::flaky", {"id": "b1", "fail_times": 3}, "backoff")

    got = wait_for(lambda: (r := runs(store, settings)) and r[-1]["ok"] and r,
                   timeout=10, what="the 4th attempt to succeed")
    assert [(r["attempt"], r["ok"]) for r in got] == [(1, False), (2, False), (3, False), (4, True)]
    gaps_ms = [(b["at"] - a["at"]) * 1000 for a, b in zip(got, got[1:], strict=False)]
    for n, (gap, want) in enumerate(zip(gaps_ms, [200, 400, 800], strict=True), start=1):
        assert want <= gap <= want + 250, f"retry {n} came {gap:.0f} ms after, want ~{want}: {gaps_ms}"
    stats = wait_for(lambda: settled(cluster, "backoff", done=1), what="the queue to settle")
    assert stats["retried"] == 3


def test_a_job_failing_every_attempt_is_dead_lettered_with_its_last_error_attempts_timestamps_and_payload(
        settings):
    jobs = InProcessJobs()
    with iii_broker.testing.run(jobs.app, config=tomllib.loads(CONFIG), settings=settings) as cluster:
        before = int(time.time() * 1000)
        receipt = enqueue(cluster, "jobs::fail", {"id": "d1", "n": [1, 2]}, "dlq")

        [letter] = wait_dead(cluster, "dlq", 1)
        after = int(time.time() * 1000)
        tries = list(jobs.runs)
        assert [r["attempt"] for r in tries] == [1, 2, 3]  # max_retries = 2: 3 attempts, no more
        assert letter["message_id"] == receipt["messageReceiptId"]
        assert letter["queue"] == "dlq"
        assert letter["function_id"] == "jobs::fail"
        assert letter["payload"] == {"id": "d1", "n": [1, 2]}
        assert letter["attempts"] == 3
        error = letter["error"]
        assert error["code"] == "invocation_failed"
        assert "ValueError" in error["message"] and "no good: d1" in error["message"]
        assert "Traceback" in error["stacktrace"] and "no good: d1" in error["stacktrace"]
        assert "raise ValueError" in error["stacktrace"]
        last_run_ms = tries[-1]["at"] * 1000
        assert before <= letter["enqueued_at"] <= letter["last_attempt_at"] <= last_run_ms
        assert last_run_ms - 1 <= letter["failed_at"] <= after
        stats = wait_for(lambda: settled(cluster, "dlq", done=0, dead=1), what="the queue to settle")
        assert stats["retried"] == 2
        assert dead_letters(cluster, queue="default")["total"] == 0  # it is that queue's letter
        assert len(jobs.runs) == 3  # a dead letter does not run again by itself


def test_dead_letters_of_a_durable_topic_subscriber_are_listed_by_topic(cluster, store, settings):
    cluster.engine(config=CONFIG)
    cluster.worker(EXTRA)
    sent = cluster.client.trigger("iii::durable::publish", {"topic": "alerts", "data": {"id": "t1"}})
    assert sent["subscribers"] == ["extra::alert"]

    found = wait_for(lambda: (d := dead_letters(cluster, topic="alerts"))["total"] == 1 and d,
                     what="the topic's dead letter")
    [letter] = found["messages"]
    assert letter["queue"] == "durable:alerts:extra::alert"
    assert letter["function_id"] == "extra::alert"
    assert letter["payload"] == {"id": "t1"}
    assert letter["attempts"] == 2  # the subscriber's queue_config: max_retries = 1
    assert "alert t1 cannot be delivered" in letter["error"]["message"]
    assert [r["attempt"] for r in runs(store, settings)] == [1, 2]
    assert dead_letters(cluster, queue="durable:alerts:extra::alert")["total"] == 1
    assert dead_letters(cluster, topic="no-such-topic")["total"] == 0


# -- redrive and discard --------------------------------------------------------------


def test_redrive_puts_every_dead_letter_back_on_its_queue_with_attempts_reset(
        cluster, store, settings):
    cluster.engine(config=CONFIG)
    cluster.worker(EXTRA)
    ids = ["r1", "r2", "r3"]
    for i in ids:
        enqueue(cluster, "extra::gate", {"id": i}, "redrive")
    wait_dead(cluster, "redrive", 3)
    assert sorted((r["id"], r["attempt"], r["ok"]) for r in runs(store, settings)) == \
        [(i, a, False) for i in ids for a in (1, 2)]

    store.set(f"{settings.namespace}:test:gate", "open")
    assert cluster.client.trigger("iii::queue::redrive", {"queue": "redrive"}) == \
        {"queue": "redrive", "redriven": 3}
    ok = wait_for(lambda: len(r := [x for x in runs(store, settings) if x["ok"]]) == 3 and r,
                  what="the redriven jobs to run")
    assert sorted((r["id"], r["attempt"]) for r in ok) == [(i, 1) for i in ids]
    wait_for(lambda: settled(cluster, "redrive", done=3, dead=3), what="the queue to settle")
    assert dead_letters(cluster, queue="redrive") == {"messages": [], "total": 0}
    assert cluster.client.trigger("iii::queue::redrive", {"queue": "redrive"}) == \
        {"queue": "redrive", "redriven": 0}


def test_redrive_message_and_discard_message_act_on_one_dead_letter_and_name_a_missing_one(
        cluster, store, settings):
    cluster.engine(config=CONFIG)
    cluster.worker(EXTRA)
    receipts = {i: enqueue(cluster, "extra::gate", {"id": i}, "redrive")["messageReceiptId"]
                for i in ("m1", "m2", "m3")}
    wait_dead(cluster, "redrive", 3)
    store.set(f"{settings.namespace}:test:gate", "open")

    one = {"queue": "redrive", "message_id": receipts["m1"]}
    assert cluster.client.trigger("iii::queue::redrive_message", one) == {**one, "redriven": True}
    [ran] = wait_for(lambda: [r for r in runs(store, settings) if r["ok"]],
                     what="the redriven job to run")
    assert (ran["id"], ran["attempt"]) == ("m1", 1)

    two = {"queue": "redrive", "message_id": receipts["m2"]}
    assert cluster.client.trigger("iii::queue::discard_message", two) == {**two, "discarded": True}
    wait_for(lambda: settled(cluster, "redrive", done=1, dead=3), what="the queue to settle")
    left = dead_letters(cluster, queue="redrive")
    assert left["total"] == 1
    assert [m["message_id"] for m in left["messages"]] == [receipts["m3"]]
    assert [r["id"] for r in runs(store, settings) if r["ok"]] == ["m1"]  # m2 is gone for good

    for fn, payload in [("iii::queue::redrive_message", one),  # already redriven
                        ("iii::queue::discard_message", two),  # already discarded
                        ("iii::queue::redrive_message", {"queue": "redrive", "message_id": "nope"}),
                        ("iii::queue::discard_message", {"queue": "dlq", "message_id": "nope"})]:
        with pytest.raises(InvocationFailed) as err:
            cluster.client.trigger(fn, payload)
        assert err.value.code == "invocation_failed"
        assert repr(payload["message_id"]) in err.value.message, (fn, err.value.message)
        assert repr(payload["queue"]) in err.value.message, (fn, err.value.message)
    assert dead_letters(cluster, queue="redrive")["total"] == 1  # the failures changed nothing


# -- enqueue --------------------------------------------------------------------------


def test_enqueue_returns_a_receipt_and_an_unknown_queue_is_an_enqueue_error_naming_it(cluster):
    cluster.engine(config=CONFIG)
    first = enqueue(cluster, "jobs::record", {"id": "e1"}, "work")
    second = enqueue(cluster, "jobs::record", {"id": "e2"}, "default")
    assert set(first) == {"messageReceiptId"} and set(second) == {"messageReceiptId"}
    assert first["messageReceiptId"] and first["messageReceiptId"] != second["messageReceiptId"]

    with pytest.raises(EnqueueError) as err:
        enqueue(cluster, "jobs::record", {"id": "e3"}, "no-such-queue")
    assert err.value.code == "enqueue_error"
    assert "'no-such-queue'" in err.value.message
    assert err.value.function_id == "jobs::record"
    assert queue_stats(cluster, "work")["enqueued"] == 1


def test_the_same_idempotency_key_runs_the_job_once_and_different_keys_run_twice(settings):
    jobs = InProcessJobs()
    with iii_broker.testing.run(jobs.app, config=tomllib.loads(CONFIG), settings=settings) as cluster:
        first = enqueue(cluster, "jobs::record", {"id": "k1"}, "work", key="order-1")
        again = enqueue(cluster, "jobs::record", {"id": "k1-again"}, "work", key="order-1")
        other = enqueue(cluster, "jobs::record", {"id": "k2"}, "work", key="order-2")
        assert set(first) == {"messageReceiptId"}
        assert again == {"messageReceiptId": first["messageReceiptId"], "duplicate": True}
        assert set(other) == {"messageReceiptId"}
        assert other["messageReceiptId"] != first["messageReceiptId"]

        stats = wait_for(lambda: settled(cluster, "work", done=2), what="both jobs to run")
        assert stats["enqueued"] == 2
        assert sorted(r["id"] for r in jobs.runs) == ["k1", "k2"]


# -- workers dying, long jobs ----------------------------------------------------------


def test_no_job_is_lost_when_a_worker_is_sigkilled_while_draining_2000_jobs(
        cluster, store, settings):
    cluster.engine(config=CONFIG)
    total = 2000
    for n in range(total):
        enqueue(cluster, "jobs::record", {"id": n}, "bulk")
    victim, survivor = (cluster.worker(JOBS, concurrency=4, wait=False) for _ in range(2))
    for proc in (victim, survivor):
        cluster.wait_registered(proc)
    jobs_key = f"{settings.namespace}:worker:{worker_id(cluster, victim)}:jobs"
    runs_key = f"{settings.namespace}:test:runs"
    wait_for(lambda: store.llen(runs_key) >= 200 and store.hlen(jobs_key) > 0,
             what="the victim to be draining")

    victim.signal(signal.SIGKILL)
    victim.wait()
    ran_before_kill = store.llen(runs_key)
    held_at_death = store.hlen(jobs_key)
    assert ran_before_kill < total, "the kill came after the drain: nothing was tested"
    assert held_at_death > 0, "the victim held no jobs when it died: nothing was tested"

    def all_ran() -> set[Any] | None:
        if store.llen(runs_key) < total:
            return None
        ids = {r["id"] for r in runs(store, settings)}
        return ids if len(ids) == total else None
    ids = wait_for(all_ran, timeout=40, interval=0.1, what="every job to run")
    assert ids == set(range(total))
    stats = wait_for(lambda: settled(cluster, "bulk", done=total), timeout=10,
                     what="the queue to settle")
    ran = len(runs(store, settings))
    # Only the jobs the victim held can run twice (those it ran but had not settled).
    assert total <= ran <= total + held_at_death, (ran, held_at_death)
    assert stats["retried"] == held_at_death  # its held jobs went back, one attempt used
    assert store.hlen(jobs_key) == 0


def test_a_job_running_far_longer_than_the_heartbeat_ttl_is_not_redelivered(
        cluster, store, settings):
    assert settings.heartbeat_ttl_s < 1.0
    cluster.engine(config=CONFIG)
    for proc in [cluster.worker(JOBS, concurrency=2, wait=False) for _ in range(2)]:
        cluster.wait_registered(proc)
    enqueue(cluster, "jobs::slow", {"id": "long", "s": 3.0}, "long")

    wait_for(lambda: any(r.get("phase") == "end" for r in runs(store, settings)), timeout=15,
             what="the long job to finish")
    starts = [r for r in runs(store, settings) if r.get("phase") == "start"]
    assert len(starts) == 1, starts
    assert starts[0]["attempt"] == 1
    stats = wait_for(lambda: settled(cluster, "long", done=1), what="the queue to settle")
    assert stats.get("retried", 0) == 0
    assert len([r for r in runs(store, settings) if r.get("phase") == "start"]) == 1


def test_a_job_that_kills_its_worker_every_time_is_dead_lettered_and_does_not_wedge_the_queue(
        cluster, store, settings):
    cluster.engine(config=CONFIG)
    workers = [cluster.worker(JOBS, concurrency=1)]
    receipt = enqueue(cluster, "jobs::die", {"id": "poison"}, "poison")

    def dead_lettered() -> bool:
        if workers[-1].popen.poll() is not None:  # it died: the next attempt needs a worker
            workers.append(cluster.worker(JOBS, concurrency=1, wait=False))
        return dead_letters(cluster, queue="poison")["total"] == 1
    wait_for(dead_lettered, timeout=40, interval=0.05, what="the poison job to be dead-lettered")

    [letter] = dead_letters(cluster, queue="poison")["messages"]
    assert letter["message_id"] == receipt["messageReceiptId"]
    assert letter["attempts"] == 3  # max_retries = 2
    assert letter["function_id"] == "jobs::die" and letter["payload"] == {"id": "poison"}
    assert letter["error"]["code"] == "invocation_stopped"
    deaths = runs(store, settings, "die")
    assert [r["attempt"] for r in deaths] == [1, 2, 3]
    assert len({r["pid"] for r in deaths}) == 3

    # The queue (concurrency 1) is not wedged: its slot was freed and later jobs run.
    if workers[-1].popen.poll() is not None:
        workers.append(cluster.worker(JOBS, concurrency=1, wait=False))
    enqueue(cluster, "jobs::record", {"id": "after"}, "poison")
    wait_for(lambda: runs(store, settings, "record"), timeout=10, what="a later job to run")
    wait_for(lambda: settled(cluster, "poison", done=1, dead=1), what="the queue to settle")
    assert len(runs(store, settings, "die")) == 3


def test_an_undecodable_item_on_a_job_list_is_dead_lettered_without_running_and_the_queue_keeps_working(
        cluster, store, settings):
    cluster.engine(config=CONFIG)
    cluster.worker(JOBS)
    job_list = f"{settings.namespace}.fn.jobs::record.q.work"
    garbage = ["{this is not json", json.dumps({"body": "{\"no\": \"invocation\"}",
                                                 "content-type": "application/json"})]
    for raw in garbage:
        store.lpush(job_list, raw)
    enqueue(cluster, "jobs::record", {"id": "next"}, "work")

    letters = wait_dead(cluster, "work", 2)
    assert sorted(m["message"] for m in letters) == sorted(garbage)
    for letter in letters:
        assert letter["attempts"] == 1 and letter["payload"] is None
        assert letter["error"]["code"] == "invocation_failed"
        assert "message refused" in letter["error"]["message"]
    wait_for(lambda: runs(store, settings), what="the next job to run")
    enqueue(cluster, "jobs::record", {"id": "later"}, "work")
    wait_for(lambda: settled(cluster, "work", done=2, dead=2), what="the queue to settle")
    assert [r["id"] for r in runs(store, settings)] == ["next", "later"]
    assert store.llen(job_list) == 0


def test_redrive_skips_dead_letters_that_cannot_run_and_redrives_the_rest(
        cluster, store, settings):
    cluster.engine(config=CONFIG)
    cluster.worker(EXTRA)
    store.lpush(f"{settings.namespace}.fn.extra::gate.q.redrive", "{this is not json")
    receipt = enqueue(cluster, "extra::gate", {"id": "g1"}, "redrive")
    wait_dead(cluster, "redrive", 2)
    store.set(f"{settings.namespace}:test:gate", "open")

    assert cluster.client.trigger("iii::queue::redrive", {"queue": "redrive"}) == \
        {"queue": "redrive", "redriven": 1}
    wait_for(lambda: [r for r in runs(store, settings) if r["ok"]], what="g1 to run again")
    [left] = dead_letters(cluster, queue="redrive")["messages"]
    assert left["message"] == "{this is not json"
    assert left["message_id"] != receipt["messageReceiptId"]
    discard = {"queue": "redrive", "message_id": left["message_id"]}
    with pytest.raises(InvocationFailed) as err:
        cluster.client.trigger("iii::queue::redrive_message", discard)
    assert "cannot be redriven" in err.value.message
    assert repr(left["message_id"]) in err.value.message and "'redrive'" in err.value.message
    assert cluster.client.trigger("iii::queue::discard_message", discard)["discarded"] is True


# -- async handlers -------------------------------------------------------------------


def test_async_handlers_run_as_queue_jobs_and_are_retried(cluster, store, settings):
    cluster.engine(config=CONFIG)
    for proc in [cluster.worker(app, concurrency=2, wait=False) for app in (JOBS, EXTRA)]:
        cluster.wait_registered(proc)
    for n in range(5):
        enqueue(cluster, "jobs::async_record", {"id": n}, "work")
    enqueue(cluster, "extra::async_flaky", {"id": "af", "fail_times": 1}, "work")

    wait_for(lambda: settled(cluster, "work", done=6), what="the async jobs to run")
    assert sorted(r["id"] for r in runs(store, settings, "async_record")) == list(range(5))
    assert all(r["attempt"] == 1 for r in runs(store, settings, "async_record"))
    assert [(r["attempt"], r["ok"]) for r in runs(store, settings, "async_flaky")] == \
        [(1, False), (2, True)]


# -- settings errors ------------------------------------------------------------------


@pytest.mark.parametrize(("table", "key", "why"), [
    ("max_retries = -1", "max_retries", "must be >= 0"),
    ("concurrency = 0", "concurrency", "must be >= 1"),
    ('backoff_ms = "fast"', "backoff_ms", "must be int"),
    ("retries = 2", "retries", "unknown key"),
    ('type = "lifo"', "type", "choose one of standard, fifo"),
    ('type = "fifo"', "message_group_field", "needs message_group_field"),
], ids=["negative-retries", "zero-concurrency", "string-backoff", "unknown-key", "bad-type",
        "fifo-without-group"])
def test_a_bad_queue_table_stops_the_engine_with_a_message_naming_the_table_and_key(
        cluster, table, key, why):
    engine = cluster.engine(wait=False, config=f"[modules.queue.queues.payments]\n{table}\n")
    assert engine.wait(timeout=20) != 0
    out = engine.output()
    assert "[modules.queue.queues.payments]" in out, out
    assert key in out and why in out, out


def test_a_worker_stopped_with_sigterm_finishes_its_running_job_and_nobody_runs_it_again(
        cluster, store, settings):
    cluster.engine(config=CONFIG)
    worker = cluster.worker(JOBS)
    enqueue(cluster, "jobs::slow", {"id": "s", "s": 1.0}, "long")
    wait_for(lambda: runs(store, settings, "slow"), what="the slow job to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    # It finished before the worker exited, was settled, and is not handed to the next worker.
    assert [r.get("phase") for r in runs(store, settings, "slow")] == ["start", "end"]
    assert settled(cluster, "long", done=1) is not None
    cluster.worker(JOBS)
    enqueue(cluster, "jobs::record", {"id": "after"}, "long")
    wait_for(lambda: runs(store, settings, "record"), what="a later job to run")
    assert [r.get("phase") for r in runs(store, settings, "slow")] == ["start", "end"]
