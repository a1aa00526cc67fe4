"""Telemetry never takes a process down: through a Redis outage a worker's runs log and end
without waiting on Redis, their log records, history records and counts wait in bounded
buffers and reach Redis once each when it is back; the buffer itself (``Batcher``) never
blocks its callers, drops the oldest past its bound, and drops a batch Redis keeps refusing.

An OTLP endpoint that accepts and never answers is tested in
tests/observability/test_traces.py (``test_an_endpoint_that_never_answers_...``)."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from iii_broker import Settings, Void
from iii_broker.modules.observability.batch import MAX_REFUSALS, Batcher
from iii_broker.modules.observability.metrics.series import series_of
from iii_broker.store import Keys
from tests.faults.conftest import RedisServer
from tests.faults.support import assert_rode_it_out, report
from tests.helpers import ROOT, bin_cmd, wait_for

APP = "tests.apps.obs_app"
RUNS = 4
STEPS = 25
OUTAGE_S = 3.0


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bin_cmd("iii-broker", *args), env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


def invocations(cluster: Any, **where: Any) -> dict[str, Any]:
    return cluster.trigger("engine::invocations::list", {"function_id": "obs::hold", **where},
                           timeout_ms=5000)


def counted(store: redis.Redis, namespace: str, name: str, **labels: str) -> float:
    """The cluster's total of one series as the workers' reporters stored it."""
    want = tuple(sorted(labels.items()))
    total = 0.0
    for field, value in store.hgetall(Keys(namespace).metrics).items():
        series = series_of(field)
        if series is not None and series[0] == name and tuple(sorted(series[1])) == want:
            total += float(value)
    return total


@contextmanager
def outage(server: RedisServer, fault: str) -> Iterator[None]:
    """Redis ``killed`` (started again with its data after) or ``frozen`` (SIGSTOP, then
    SIGCONT) for the block; it answers again whatever the block raised."""
    assert server.proc is not None
    if fault == "killed":
        server.kill()
    else:
        server.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        if fault == "killed":
            server.start()
        else:
            server.proc.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_runs_that_end_during_a_redis_outage_reach_logs_history_and_metrics_once(
        cluster, fault_redis, store, settings, tmp_path: Path, fault: str):
    """``killed``: connections refused; ``frozen`` (SIGSTOP): connections accepted and never
    answered, so anything waiting on Redis on a handler's thread would hang."""
    engine = cluster.engine()
    worker = cluster.worker(APP, concurrency=RUNS)
    gate, done = tmp_path / "gate", tmp_path / "done"
    done.mkdir()
    run_tag = uuid.uuid4().hex[:6]
    tags = [f"{run_tag}-{i}" for i in range(RUNS)]
    for tag in tags:  # called before the outage; each holds at the gate
        cluster.trigger("obs::hold", {"tag": tag, "gate": str(gate), "done": str(done),
                                      "steps": STEPS}, action=Void())
    # Every run began (its first record is stored) and is recorded as running.
    wait_for(lambda: len(cluster.trigger("engine::logs::list", {"function_id": "obs::hold",
                                                                 "limit": 1000})["logs"]) == RUNS,
             timeout=15, what="each run's first record to be stored")
    wait_for(lambda: invocations(cluster, status="running")["total"] == RUNS, timeout=15,
             what="each run to be recorded as running")

    down_at = time.monotonic()
    with outage(fault_redis, fault):
        gate.touch()  # the runs log the rest and end while Redis is away
        ended = wait_for(lambda: len(list(done.iterdir())) == RUNS and sorted(done.iterdir()),
                         timeout=10, what="every run to end during the outage")
        ended_in_s = time.monotonic() - down_at
        timings = {p.name: json.loads(p.read_text()) for p in ended}
        slowest_s = max(t["logging_s"] for t in timings.values())
        assert slowest_s < 0.5, f"{STEPS + 1} records took {slowest_s:.3f}s to log without Redis"
        assert worker.popen.poll() is None, worker.output()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # the outage itself
    back_at = time.monotonic()

    # History: each run once, its outcome over its "running" record.
    listed = wait_for(lambda: (found := invocations(cluster, status="succeeded"))["total"] == RUNS
                      and found, timeout=20, what="every run's outcome in the history")
    caught_up_s = time.monotonic() - back_at
    assert invocations(cluster)["total"] == RUNS
    assert invocations(cluster, status="running")["total"] == 0
    rows = listed["invocations"]
    assert len({x["invocation_id"] for x in rows}) == RUNS
    assert all(x["attempts"] == 1 and x["kind"] == "void" for x in rows), rows
    assert sorted(x["result"]["tag"] for x in rows) == tags
    done_cli = cli(cluster.env, "invocations", "--json", "--function", "obs::hold")
    assert done_cli.returncode == 0, done_cli.stderr
    assert {x["invocation_id"] for x in json.loads(done_cli.stdout)["invocations"]} == \
        {x["invocation_id"] for x in rows}

    # Logs: every record of every run once, in its trace, the held-back ones included.
    for tag in tags:
        trace = timings[tag]["trace_id"]
        expected = [f"{tag} began", *(f"{tag} step {i}" for i in range(STEPS)), f"{tag} ended"]

        def stored(trace: str = trace, n: int = len(expected)) -> list[dict[str, Any]] | None:
            got = cluster.trigger("engine::logs::list", {"trace_id": trace, "limit": 1000},
                                  timeout_ms=5000)["logs"]
            return got if len(got) >= n else None
        got = wait_for(stored, timeout=20, what=f"the records of {tag}")
        assert Counter(r["body"] for r in got) == Counter(expected)
        assert len({r["invocation_id"] for r in got}) == 1
        assert got[0]["invocation_id"] in {x["invocation_id"] for x in rows}
        if tag == tags[0]:  # as users list them (one is enough: a process start each)
            shown = cli(cluster.env, "logs", "--json", "--trace", trace, "--limit", "1000")
            assert shown.returncode == 0, shown.stderr
            assert [json.loads(line)["body"] for line in shown.stdout.splitlines()] == expected

    # Metrics: counted once each (the reporter kept what it could not send).
    ns = settings.namespace
    wait_for(lambda: counted(store, ns, "iii_invocations_total", function="obs::hold",
                             status="succeeded") >= RUNS, timeout=20,
             what="the runs to be counted in Redis")
    assert counted(store, ns, "iii_invocations_total", function="obs::hold",
                   status="succeeded") == RUNS
    assert counted(store, ns, "iii_invocation_duration_seconds_count",
                   function="obs::hold") == RUNS

    # The worker never stopped, and serves a call that logs at once.
    after = cluster.trigger("obs::hold", {"tag": f"{run_tag}-after", "gate": str(gate),
                                          "done": str(done), "steps": 1}, timeout_ms=5000)
    assert after["tag"] == f"{run_tag}-after"
    assert_rode_it_out(engine, worker)
    report(f"Redis {fault} for {OUTAGE_S:.0f} s while {RUNS} runs log (telemetry)",
           f"runs ended {ended_in_s:.2f} s into the outage; {STEPS + 2} records logged in "
           f"<= {slowest_s * 1000:.0f} ms without Redis",
           f"nothing ({RUNS}/{RUNS} history records, {RUNS * (STEPS + 2)} log records, "
           f"{RUNS} counts; none twice)", caught_up_s)


# -- the buffer itself ---------------------------------------------------------------------

def _settings() -> Settings:
    """Settings naming a server of their own (the process-wide outage record is per URL)."""
    return Settings(redis_url=f"redis://127.0.0.1:1/{uuid.uuid4().int % 10_000}")


def test_a_batcher_through_an_outage_never_blocks_stays_bounded_and_writes_in_order():
    outage = threading.Event()  # writes fail at once: connection refused
    outage.set()
    stall = threading.Event()  # a write hangs: a Redis that stopped answering
    hanging, release = threading.Event(), threading.Event()
    attempts: list[int] = []
    written: list[int] = []

    def write(items: list[int]) -> None:
        attempts.append(len(items))
        if stall.is_set():
            hanging.set()
            release.wait(30)
            raise redis.TimeoutError("Timeout reading from socket")
        if outage.is_set():
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        written.extend(items)

    max_items, batch = 100, 10
    b: Batcher[int] = Batcher("faults", write, _settings(), interval_s=0.01, batch=batch,
                              max_items=max_items)
    slowest_s, total = 0.0, 0

    def add_many(n: int) -> None:
        nonlocal slowest_s, total
        for _ in range(n):
            t0 = time.perf_counter()
            b.add(total)
            slowest_s = max(slowest_s, time.perf_counter() - t0)
            total += 1
            # the buffer, plus at most the batch the thread holds while it writes
            assert len(b._items) <= max_items + 4 * batch

    add_many(1500)
    wait_for(lambda: len(attempts) >= 3, timeout=10, what="the batcher to retry")
    stall.set()
    wait_for(hanging.is_set, timeout=10, what="a write to hang")
    add_many(1500)
    assert not release.is_set() and len(attempts) <= 40, "retries are not backed off"
    assert slowest_s < 0.25, f"add() took {slowest_s:.3f}s while Redis was away"
    assert written == []
    stall.clear()
    outage.clear()
    release.set()  # the hung write fails; Redis is back for the next

    wait_for(lambda: len(written) == max_items, timeout=10, what="the buffer to be written")
    assert b.flush(5) and b.dropped == total - max_items
    assert written == list(range(total - max_items, total))  # the newest, once each, in order
    b.add(total)
    assert b.flush(5) and written[-1] == total
    b.close()


def test_a_batch_redis_keeps_refusing_is_dropped_and_the_next_ones_are_written(caplog):
    batches: list[list[str]] = []
    written: list[str] = []

    def write(items: list[str]) -> None:
        batches.append(list(items))
        if "poison" in items:
            raise redis.ResponseError("ERR Error running script: bad item")
        written.extend(items)

    items = ["poison", *(f"good-{i}" for i in range(30))]
    b: Batcher[str] = Batcher("faults", write, _settings(), interval_s=0.01, batch=2)
    with caplog.at_level(logging.WARNING, logger="iii.observability"):
        for item in items:
            b.add(item)
        wait_for(lambda: b.dropped and not b._items and b.flush(0.1), timeout=10,
                 what="the refused batch to be dropped and the rest written")
    refused = [x for x in batches if "poison" in x]
    assert len(refused) == MAX_REFUSALS, batches
    assert b.dropped == len(refused[-1])
    assert written == [x for x in items if x not in refused[-1]]  # once each, in order
    assert "poison" not in written
    assert sum("retrying" in r.message for r in caplog.records) == MAX_REFUSALS - 1
    assert sum("could not be written 3 times" in r.message for r in caplog.records) == 1
    b.add("later")  # and it goes on
    assert b.flush(5) and written[-1] == "later"
    b.close()
