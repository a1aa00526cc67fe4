"""Faults while durable queue traffic is in flight: the engine SIGKILLed, a worker paused
(SIGSTOP) past its lease and resumed.

Real processes on the test's own Redis (tests/faults/conftest.py). Each test counts what
callers saw, what was lost (a job whose receipt was returned and that never ran, or a
dead letter gone: must be nothing) and how long the cluster took to recover, and prints
one ``FAULT-REPORT`` line (``pytest -s`` shows them).

The guarantee under test is at-least-once for queued jobs: a job whose worker is presumed
dead (its lease lapsed) runs again elsewhere, so a paused worker that resumes may finish
a job a second time; its late settlement is ignored (the claim is no longer its own) and
changes no count. Sync calls are at most once: the caller of a call whose worker lapsed
gets ``invocation_stopped`` once, and the paused worker's late reply is dropped.
"""

from __future__ import annotations

import collections
import json
import signal
import threading
import time
from typing import Any

from iii_broker import App, Enqueue
from iii_broker.errors import IIIError, InvocationStopped
from tests.helpers import in_thread, wait_for
from tests.queues.support import runs, start_workers, worker_id

CONFIG = """
[modules.queue.queues.work]
max_retries = 2
backoff_ms = 100
concurrency = 8
"""


def report(fault: str, **facts: Any) -> None:
    print(f"\nFAULT-REPORT {fault}: {json.dumps(facts, sort_keys=True)}")


def topic_runs(store: Any, settings: Any) -> list[dict[str, Any]]:
    """Runs recorded by tests/apps/topics.py (``{fn, payload, attempt, pid}``)."""
    return [r for r in runs(store, settings) if "payload" in r]


class Producer:
    """Enqueues jobs (and durably publishes) in a thread until stopped, keeping every
    receipt it got and every error, by code, with when it happened."""

    def __init__(self, settings: Any, topics: bool) -> None:
        self.client = App("fault-producer", settings=settings)
        self.receipts: dict[str, tuple[str, str]] = {}  # message id -> (function id, job id)
        self.published: dict[int, str] = {}  # n -> receipt of a durable publish
        self.errors: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()
        self.threads = [in_thread(self._enqueue)] + ([in_thread(self._publish)] if topics else [])

    def _enqueue(self) -> None:
        n = 0
        work = Enqueue(queue="work")
        while not self.stop.is_set():
            n += 1
            fid, payload = ("jobs::fail", {"id": f"x{n}"}) if n % 10 == 0 else \
                ("jobs::flaky", {"id": f"f{n}", "fail_times": 1}) if n % 3 == 0 else \
                ("jobs::record", {"id": f"r{n}"})
            try:
                receipt = self.client.trigger(fid, payload, action=work)
                self.receipts[receipt["messageReceiptId"]] = (fid, payload["id"])
            except IIIError as exc:
                self.errors[f"enqueue:{exc.code}"] += 1
            time.sleep(0.01)  # a steady stream, not a flood that measures the machine

    def _publish(self) -> None:
        """Durable publishes go through the engine's ``iii::durable::publish``."""
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                out = self.client.trigger("iii::durable::publish", {
                    "topic": "orders", "data": {"n": n}}, timeout_ms=1000)
                self.published[n] = out["messageReceiptId"]
            except IIIError as exc:
                self.errors[f"publish:{exc.code}"] += 1
            time.sleep(0.04)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.result(timeout=30)
        self.client.close()


def unaccounted(store: Any, settings: Any, producer: Producer) -> dict[str, Any]:
    """Acknowledged work not (yet) done: jobs with no successful run, failing jobs with no
    dead letter, durable publishes a subscriber never ran; and duplicate runs."""
    done = collections.Counter(r["id"] for r in runs(store, settings) if r.get("ok"))
    letters = set(store.zrange(f"{settings.namespace}:q:work:dlq:index", 0, -1))
    missing_jobs = [job for mid, (fid, job) in producer.receipts.items()
                    if (mid not in letters if fid == "jobs::fail" else not done[job])]
    seen = collections.Counter((r["fn"], r["payload"]["n"]) for r in topic_runs(store, settings))
    missing_copies = [(fn, n) for n in producer.published
                      for fn in ("topics::audit", "topics::mail") if not seen[(fn, n)]]
    return {"jobs": missing_jobs, "copies": missing_copies,
            "duplicate_runs": sum(c - 1 for c in done.values() if c > 1)
            + sum(c - 1 for c in seen.values() if c > 1)}


def test_the_engine_sigkilled_during_queue_traffic_loses_no_acknowledged_job(
        cluster, store, settings):
    engine_killed_during_traffic(cluster, store, settings, "redis")


def engine_killed_during_traffic(cluster: Any, store: Any, settings: Any, broker: str) -> None:
    """SIGKILL the engine while jobs (with retries and dead letters) and durable publishes
    flow, start another: nothing acknowledged is lost."""
    engine = cluster.engine(config=CONFIG)
    start_workers(cluster, "tests.apps.jobs", n=2, concurrency=4)
    cluster.worker("tests.apps.topics:durable", concurrency=4)
    producer = Producer(settings, topics=True)
    wait_for(lambda: len(producer.receipts) >= 40 and len(letters_now(store, settings)) >= 1,
             timeout=20, what="traffic with retries and dead letters before the fault")
    letters_before = letters_now(store, settings)

    engine.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    engine.wait()
    receipts_at_kill = len(producer.receipts)
    time.sleep(1.5)  # the outage under test: no engine moves retries or serves publishes
    receipts_in_outage = len(producer.receipts) - receipts_at_kill
    restarted_at = time.monotonic()
    cluster.engine(config=CONFIG)
    wait_for(lambda: len(producer.receipts) >= receipts_at_kill + receipts_in_outage + 20,
             timeout=20, what="traffic after the restart")
    producer.finish()

    def recovered() -> dict[str, Any] | None:
        left = unaccounted(store, settings, producer)
        return left if not left["jobs"] and not left["copies"] else None
    try:
        left = wait_for(recovered, timeout=30, what="every acknowledged job to be done")
    except AssertionError:
        raise AssertionError(f"lost: {unaccounted(store, settings, producer)}") from None
    recovered_s = time.monotonic() - restarted_at
    # Dead letters written before the crash are all still there.
    assert letters_before <= letters_now(store, settings)
    fails = {mid for mid, (fid, _) in producer.receipts.items() if fid == "jobs::fail"}
    assert letters_now(store, settings) == fails  # one dead letter per failing job, no more
    # Enqueueing never needs the engine: no producer saw an enqueue error.
    assert not [code for code in producer.errors if code.startswith("enqueue:")], producer.errors
    report(f"engine SIGKILL during queue traffic ({broker})", jobs_acknowledged=len(producer.receipts),
           enqueued_during_outage=receipts_in_outage, durable_publishes=len(producer.published),
           caller_errors=dict(producer.errors), lost=0,
           duplicate_runs=left["duplicate_runs"], dead_letters=len(fails),
           outage_s=round(restarted_at - killed_at, 2),
           recovered_s_after_restart=round(recovered_s, 2))


def letters_now(store: Any, settings: Any) -> set[str]:
    return set(store.zrange(f"{settings.namespace}:q:work:dlq:index", 0, -1))


PAUSE_CONFIG = """
[modules.queue.queues.work]
max_retries = 3
backoff_ms = 50
"""


def test_a_worker_paused_past_its_lease_has_its_jobs_run_elsewhere_and_serves_again(
        cluster, store, settings):
    worker_paused_past_its_lease(cluster, store, settings, "redis")


def worker_paused_past_its_lease(cluster: Any, store: Any, settings: Any, broker: str) -> None:
    """SIGSTOP a worker running jobs and sync calls until its lease lapses and its jobs
    ran elsewhere, SIGCONT it: callers answered once, nothing lost, it serves again."""
    cluster.engine(config=PAUSE_CONFIG)
    paused = cluster.worker("tests.apps.jobs", concurrency=8)
    slow = 1.5
    jobs = {cluster.client.trigger("jobs::slow", {"id": f"j{i}", "s": slow},
                                   action=Enqueue(queue="work"))["messageReceiptId"]: f"j{i}"
            for i in range(3)}
    calls = {f"c{i}": in_thread(cluster.client.trigger, "jobs::slow", {"id": f"c{i}", "s": slow},
                                timeout_ms=20_000) for i in range(3)}
    started = {*jobs.values(), *calls}
    wait_for(lambda: {r["id"] for r in runs(store, settings, "slow")} >= started,
             what="the jobs and the calls to start on the worker")
    # A call's in-flight record is written 2 ms after it starts (a worker stopped before
    # that leaves its caller to time out, as documented): pause only once they are there.
    wid = worker_id(cluster, paused)
    ns = settings.namespace
    wait_for(lambda: store.hlen(f"{ns}:worker:{wid}:inflight") == len(calls)
             and store.hlen(f"{ns}:worker:{wid}:jobs") == len(jobs),
             what="the worker's records of its calls and jobs")

    paused.signal(signal.SIGSTOP)
    paused_at = time.monotonic()
    try:
        rescuer = cluster.worker("tests.apps.jobs", concurrency=8)
        # Each sync caller is answered once, with invocation_stopped (its worker lapsed).
        answers: dict[str, Any] = {}
        for cid, fut in calls.items():
            try:
                answers[cid] = fut.result(timeout=15)
            except IIIError as exc:
                answers[cid] = exc
        callers_answered_s = time.monotonic() - paused_at
        assert all(isinstance(a, InvocationStopped) for a in answers.values()), answers

        def rerun() -> bool:
            ends = [r for r in runs(store, settings, "slow")
                    if r.get("phase") == "end" and r["pid"] == rescuer.pid]
            return {r["id"] for r in ends} >= set(jobs.values())
        wait_for(rerun, timeout=20, what="the paused worker's jobs to run on the other worker")
        jobs_rerun_s = time.monotonic() - paused_at
    finally:
        paused.signal(signal.SIGCONT)
    resumed_at = time.monotonic()

    # The resumed worker finishes what it was running; its late settlements change nothing.
    wait_for(lambda: {r["id"] for r in runs(store, settings, "slow")
                      if r.get("phase") == "end" and r["pid"] == paused.pid} >= started,
             timeout=15, what="the resumed worker to finish its handlers")
    cluster.wait_registered(paused)
    reregistered_s = time.monotonic() - resumed_at
    stats = wait_for(lambda: (s := work_stats(store, settings))["completed"] == len(jobs) and s,
                     what="the queue to settle")
    assert stats["running"] == 0 and stats["dead"] == 0 and stats["delayed"] == 0, stats

    # Late replies of the stopped calls never reach a later call of the same process.
    for i in range(20):
        assert cluster.client.trigger("jobs::echo", {"id": f"e{i}", "n": i}) == \
            {"id": f"e{i}", "n": i}
    # The resumed worker serves again, alone: calls and jobs.
    rescuer.stop()
    assert cluster.client.trigger("jobs::echo", {"id": "alone"}, timeout_ms=5000) == {"id": "alone"}
    cluster.client.trigger("jobs::record", {"id": "after"}, action=Enqueue(queue="work"))
    wait_for(lambda: [r["pid"] for r in runs(store, settings, "record") if r["id"] == "after"]
             == [paused.pid], what="a new job to run on the resumed worker")
    by_id = collections.Counter(r["id"] for r in runs(store, settings, "slow")
                                if r.get("phase") == "end")
    starts = collections.Counter(r["id"] for r in runs(store, settings, "slow")
                                 if r.get("phase") != "end")
    # A call answered invocation_stopped ran once, on the worker that was paused (which
    # finished it late): never again elsewhere, whatever the broker redelivered.
    assert all(starts[c] == 1 for c in calls), starts
    report(f"worker SIGSTOP past its lease, then SIGCONT ({broker})",
           sync_callers={"invocation_stopped": len(answers)}, callers_answered_s=round(callers_answered_s, 2),
           jobs_acknowledged=len(jobs), lost=0, jobs_rerun_s=round(jobs_rerun_s, 2),
           duplicate_job_runs=sum(by_id[j] - 1 for j in jobs.values()),
           stopped_calls_finished_late=sum(by_id[c] for c in calls),
           reregistered_s_after_sigcont=round(reregistered_s, 2))


def work_stats(store: Any, settings: Any) -> dict[str, int]:
    ns = settings.namespace
    counters = store.hgetall(f"{ns}:q:work:stats")
    return {"completed": int(counters.get("completed", 0)),
            "running": int(store.get(f"{ns}:q:work:running") or 0),
            "dead": store.zcard(f"{ns}:q:work:dlq:index"),
            "delayed": store.zcard(f"{ns}:q:work:delayed")}
