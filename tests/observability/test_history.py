"""Invocation history: records of calls, Void calls and each attempt of a queued job, kept
across restarts, ``interrupted`` after a SIGKILL, listed with filters, trimmed, rerun."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from iii_broker import Enqueue, IIIError, Void
from iii_broker.message import now_ms
from iii_broker.modules.observability.history.cli import when_ms
from iii_broker.modules.observability.history.record import bounded, record_json, record_of
from iii_broker.modules.observability.history.store import Entry, HistoryStore
from iii_broker.observe import Run
from iii_broker.store import Keys
from tests.helpers import wait_for
from tests.test_cli import cli

QUEUES = """
[modules.queue.queues.payment]
max_retries = 2
backoff_ms = 50
"""


def invocations(cluster: Any, **where: Any) -> dict[str, Any]:
    return cluster.trigger("engine::invocations::list", where, timeout_ms=5000)


def attempts(cluster: Any, invocation_id: str, count: int = 1,
             status: str | None = None) -> list[dict[str, Any]]:
    """The invocation's attempts once ``count`` are recorded (the last one with ``status``)."""
    def found() -> list[dict[str, Any]] | None:
        try:
            got = cluster.trigger("engine::invocations::get", {"invocation_id": invocation_id},
                                  timeout_ms=5000)["attempts"]
        except IIIError:
            return None
        if len(got) >= count and (status is None or got[-1]["status"] == status):
            return got
        return None
    return wait_for(found, timeout=20, what=f"{count} attempt(s) of {invocation_id} recorded"
                    + (f" with status {status}" if status else ""))


def newest(cluster: Any, function_id: str, **where: Any) -> dict[str, Any]:
    """The newest recorded invocation of ``function_id`` (waits for one)."""
    return wait_for(lambda: (invocations(cluster, function_id=function_id, **where)
                             ["invocations"] or [None])[0],
                    timeout=20, what=f"an invocation of {function_id} recorded")


@pytest.fixture
def running(cluster):
    cluster.engine(config=QUEUES)
    cluster.worker()
    return cluster


def test_sync_void_and_failed_calls_are_recorded_with_their_outcome(running):
    with pytest.raises(IIIError):  # a result JSON cannot carry is kept as text
        running.trigger("test::bad_result", {})
    assert newest(running, "test::bad_result")["result"] == {"oops": "{1, 2}"}
    echoed = running.trigger("test::echo", {"x": 1})
    rec = attempts(running, echoed["invocation_id"], status="succeeded")[0]
    assert rec["function_id"] == "test::echo" and rec["kind"] == "sync"
    assert rec["trigger_type"] == "call" and rec["attempt"] == 1
    assert rec["payload"] == {"x": 1} and rec["result"]["payload"] == {"x": 1}
    assert rec["trace_id"] == echoed["trace_id"] and rec["worker_id"]
    assert rec["duration_ms"] >= 0 and rec["started_at"] <= now_ms()
    assert rec["error"] is None and rec["rerun_of"] is None

    with pytest.raises(IIIError):
        running.trigger("test::fail", {"n": 2})
    failed = newest(running, "test::fail")
    assert failed["status"] == "failed" and failed["kind"] == "sync"
    assert failed["error"] == {"code": "invocation_failed", "message": "ValueError: bad input: "
                               "{'n': 2}"}

    running.trigger("test::add", {"a": 1, "b": 2}, action=Void())
    void = newest(running, "test::add")
    assert void["kind"] == "void" and void["status"] == "succeeded"
    assert void["result"] == {"sum": 3}

    listed = invocations(running)
    assert listed["total"] == 4  # the engine's own built-ins (this listing too) are left out
    assert not any(x["function_id"].startswith("engine::") for x in listed["invocations"])


def test_a_retried_job_shows_every_attempt(running):
    running.worker("tests.apps.jobs")
    receipt = running.trigger("jobs::flaky", {"id": "j", "fail_times": 2},
                              action=Enqueue(queue="payment"))["messageReceiptId"]
    got = attempts(running, receipt, count=3, status="succeeded")
    assert [a["attempt"] for a in got] == [1, 2, 3]
    assert [a["status"] for a in got] == ["failed", "failed", "succeeded"]
    assert all(a["kind"] == "job" and a["queue"] == "payment" and a["trigger_type"] == "queue"
               for a in got)
    assert "attempt 1 of j fails on purpose" in got[0]["error"]["message"]
    assert len({a["trace_id"] for a in got}) == 1  # one trace, an attempt per run
    # Listed once, as its latest attempt, under its latest status only.
    listed = invocations(running, function_id="jobs::flaky")["invocations"]
    assert [(x["invocation_id"], x["attempt"], x["attempts"]) for x in listed] == [(receipt, 3, 3)]
    assert invocations(running, function_id="jobs::flaky", status="failed")["total"] == 0


def test_history_outlives_an_engine_and_worker_restart(cluster, settings):
    engine, worker = cluster.engine(), cluster.worker()
    before = cluster.trigger("test::echo", {"n": "before"})["invocation_id"]
    attempts(cluster, before)
    worker.stop()
    engine.stop()
    cluster.engine()
    cluster.worker()
    after = cluster.trigger("test::echo", {"n": "after"})["invocation_id"]
    attempts(cluster, after)
    done = cli(cluster.env, "invocations", "--function", "test::echo", "--since", "10m")
    assert done.returncode == 0, done.stderr
    assert before in done.stdout and after in done.stdout
    assert "(2 of 2 invocation(s))" in done.stdout
    shown = json.loads(cli(cluster.env, "invocations", "show", before).stdout)
    assert shown["attempts"][0]["payload"] == {"n": "before"}


def test_a_sigkilled_workers_run_shows_interrupted(cluster):
    cluster.engine()
    worker = cluster.worker()
    cluster.trigger("test::slow", {"seconds": 60, "id": "k"}, action=Void())
    rec = newest(cluster, "test::slow", status="running")
    assert rec["status"] == "running" and rec["duration_ms"] is None
    worker.signal(signal.SIGKILL)
    got = attempts(cluster, rec["invocation_id"], status="interrupted")
    assert got[-1]["error"]["code"] == "invocation_stopped"
    assert invocations(cluster, status="running")["total"] == 0


def test_rerun_runs_the_payload_again_and_links_to_the_old_run(running):
    with pytest.raises(IIIError):
        running.trigger("test::fail", {"n": 7})
    old = newest(running, "test::fail")
    done = cli(running.env, "invocations", "--json", "rerun", old["invocation_id"])
    assert done.returncode == 0, done.stderr
    new_id = json.loads(done.stdout)["invocation_id"]
    rec = attempts(running, new_id, status="failed")[0]
    assert rec["rerun_of"] == old["invocation_id"] and rec["payload"] == {"n": 7}
    assert rec["kind"] == "void"

    running.worker("tests.apps.jobs")
    job = running.trigger("jobs::fail", {"id": "r"}, action=Enqueue(queue="payment"))
    attempts(running, job["messageReceiptId"], count=3, status="failed")
    again = running.trigger("engine::invocations::rerun",
                            {"invocation_id": job["messageReceiptId"]})
    assert again["rerun_of"] == job["messageReceiptId"]
    first = attempts(running, again["invocation_id"])[0]
    assert (first["kind"], first["queue"], first["rerun_of"]) == \
        ("job", "payment", job["messageReceiptId"])


def test_rerun_refuses_a_payload_the_history_kept_only_in_part(running):
    big = running.trigger("test::echo", {"blob": "x" * 5000})["invocation_id"]
    rec = attempts(running, big)[0]
    assert rec["payload_truncated"] and rec["result_truncated"]
    assert len(rec["payload"].encode()) <= 4096 and rec["payload"].startswith('{"blob":"xxx')
    with pytest.raises(IIIError) as caught:
        running.trigger("engine::invocations::rerun", {"invocation_id": big})
    assert caught.value.code == "invalid_argument"
    assert "history_max_value_bytes" in caught.value.message
    missing = cli(running.env, "invocations", "show", "nope")
    assert missing.returncode == 1 and "no invocation 'nope' in the history" in missing.stderr


def test_bad_listing_arguments_get_an_error_naming_them(running):
    for where, words in (({"status": "lost"}, "'status' must be one of"),
                         ({"limit": 0}, "'limit' must be an integer from 1"),
                         ({"since": "yesterday"}, "'since' must be an integer"),
                         ({"function": "x"}, "unknown field(s) 'function'")):
        with pytest.raises(IIIError) as caught:
            invocations(running, **where)
        assert caught.value.code == "invalid_argument" and words in caught.value.message
    done = cli(running.env, "invocations", "--since", "last week")
    assert done.returncode == 1 and "'last week' is not a time" in done.stderr


# -- the store, on real Redis, without processes ----------------------------------------

def _record(i: int, started: int, function_id: str = "f::a", status: str = "succeeded",
            attempt: int = 1) -> dict[str, Any]:
    return {"invocation_id": f"id{i}", "function_id": function_id, "attempt": attempt,
            "status": status, "started_at": started, "worker_id": "w", "payload": i}


def test_listing_filters_by_function_status_and_time_newest_first(store, settings):
    history = HistoryStore(store, Keys(settings.namespace))
    t0 = now_ms() - 100_000
    history.write([Entry(_record(i, t0 + i * 1000, "f::a" if i % 2 else "f::b",
                                 "failed" if i % 3 == 0 else "succeeded"), 3600)
                   for i in range(12)])
    page = history.page()
    assert page.total == 12 and [x["payload"] for x in page.invocations[:3]] == [11, 10, 9]
    page = history.page(function_id="f::a", status="failed")
    assert [x["payload"] for x in page.invocations] == [9, 3] and page.total == 2
    page = history.page(since_ms=t0 + 4000, until_ms=t0 + 7000, limit=2, offset=1)
    assert [x["payload"] for x in page.invocations] == [6, 5] and page.total == 4
    assert history.page(function_id="f::nobody").total == 0
    assert not store.keys(f"{settings.namespace}:inv:scratch:*")  # the intersection is gone
    # A late "running" note never hides an outcome.
    history.write([Entry(_record(9, t0, "f::a", "running"), 3600)])
    assert history.attempts("id9")[0]["status"] == "failed"


def test_trimming_keeps_the_newest_by_count_and_drops_what_is_too_old(store, settings):
    keys = Keys(settings.namespace)
    history = HistoryStore(store, keys)
    now = now_ms()
    history.write([Entry(_record(i, now - 1000 * (130 - i), "f::a" if i % 2 else "f::b"), 3600)
                   for i in range(130)])
    history.write([Entry(_record(1000, now - 200_000, "f::old", "failed"), 3600)])
    assert history.trim(max_count=100, max_age_s=180) == 30
    assert store.zcard(keys.invocations) == 100
    assert not store.exists(keys.invocation("id29")) and store.exists(keys.invocation("id30"))
    assert store.zcard(keys.invocations_of("f::a")) + store.zcard(keys.invocations_of("f::b")) \
        == 100
    assert store.zcard(keys.invocations_with("succeeded")) == 100
    # Too old: out of every index (its record expires on its own), and its function forgotten.
    assert store.zcard(keys.invocations_with("failed")) == 0
    assert not store.exists(keys.invocations_of("f::old"))
    assert "f::old" not in store.smembers(keys.inv_functions)


def test_values_past_the_bound_are_cut_and_flagged():
    assert bounded({"a": 1}, 100) == ({"a": 1}, False)
    text, cut = bounded({"a": "é" * 100}, 20)
    assert cut and len(text.encode()) <= 20 and text.startswith('{"a":"é')


def test_since_accepts_durations_ago_and_unix_ms():
    assert when_ms("10m", now=1_000_000) == 400_000
    assert when_ms("1234") == 1234
    with pytest.raises(IIIError):
        when_ms("soon")


def test_the_writers_json_is_the_record_whatever_the_values_hold():
    """The writer's hand-made JSON (record_json) says what record_of says: quotes, non-ASCII,
    errors, cut values and running records included."""
    run = Run.of("orders::place", 'odd "id" é', 2, {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"},
                 kind="job", worker_id='host "x"-1', payload={"note": "é" * 40, "n": [1, 2]},
                 queue="payment", trigger_type='weird"type')
    run.status, run.result, run.error, run.duration_s = "failed", {"ok": False}, \
        ValueError('bad "card"'), 0.0123456
    for status in (None, "running"):
        for bound in (4096, 7):
            assert json.loads(record_json(run, bound, status)) == record_of(run, bound, status)
