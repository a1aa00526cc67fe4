"""Helpers shared by the queue tests: recorded runs, queue stats, dead letters, workers.

``cluster`` is either conftest's (real processes) or an ``iii_broker.testing.Cluster``
(in-process): helpers only use ``cluster.trigger`` unless they say otherwise."""

from __future__ import annotations

import json
import time
from typing import Any

from iii_broker import App, Enqueue
from tests.helpers import wait_for


def runs(store: Any, settings: Any, fn: str | None = None) -> list[dict[str, Any]]:
    """The runs the test apps recorded (of ``fn`` only, when given), oldest first."""
    out = [json.loads(x) for x in store.lrange(f"{settings.namespace}:test:runs", 0, -1)]
    return [r for r in out if fn is None or r["fn"] == fn]


class InProcessJobs:
    """``jobs::record``, ``jobs::flaky`` and ``jobs::fail`` of tests/apps/jobs.py, for a worker
    run in the test process (``iii_broker.testing``): each run is appended to :attr:`runs`
    as ``{fn, id, attempt, at, ok}`` instead of being pushed to Redis."""

    def __init__(self) -> None:
        self.app = App("jobs")
        self.runs: list[dict[str, Any]] = []
        self.app.register_function("jobs::record", self.record)
        self.app.register_function("jobs::flaky", self.flaky,
                                   description="Fails while ctx.attempt <= payload['fail_times'].")
        self.app.register_function("jobs::fail", self.fail)

    def _record(self, fn: str, payload: Any, ctx: Any, ok: bool = True) -> None:
        payload = payload if isinstance(payload, dict) else {}
        self.runs.append({"fn": fn, "id": payload.get("id"), "attempt": ctx.attempt,
                          "at": time.time(), "ok": ok})

    def record(self, payload: Any, ctx: Any) -> None:
        self._record("record", payload, ctx)

    def flaky(self, payload: Any, ctx: Any) -> None:
        if ctx.attempt <= payload.get("fail_times", 0):
            self._record("flaky", payload, ctx, ok=False)
            raise RuntimeError(f"attempt {ctx.attempt} of {payload.get('id')} fails on purpose")
        self._record("flaky", payload, ctx)

    def fail(self, payload: Any, ctx: Any) -> None:
        self._record("fail", payload, ctx, ok=False)
        raise ValueError(f"no good: {payload.get('id')}")


def enqueue(cluster: Any, function_id: str, payload: Any, queue: str,
            key: str | None = None) -> dict[str, Any]:
    return cluster.trigger(function_id, payload,
                                  action=Enqueue(queue=queue, idempotency_key=key))


def dead_letters(cluster: Any, **where: Any) -> dict[str, Any]:
    """``engine::queue::dlq_messages`` for ``queue=...`` or ``topic=...``."""
    return cluster.trigger("engine::queue::dlq_messages", where)


def wait_dead(cluster: Any, queue: str, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    """Wait until ``queue`` holds ``n`` dead letters; returns them (newest first)."""
    found = wait_for(lambda: (d := dead_letters(cluster, queue=queue))["total"] == n and d,
                     timeout=timeout, what=f"{n} dead letter(s) on {queue}")
    return found["messages"]


def queue_stats(cluster: Any, queue: str) -> dict[str, Any]:
    [stats] = [q for q in cluster.trigger("engine::queue::list", {})["queues"]
               if q["queue"] == queue]
    return stats


def is_settled(stats: dict[str, Any], done: int, dead: int = 0) -> bool:
    """Nothing waits, runs or is delayed, ``done`` jobs completed and ``dead`` died (in
    all: redriven or discarded dead letters count too)."""
    return (stats["depth"] == 0 and stats["in_flight"] == 0 and stats["delayed"] == 0
            and stats.get("completed", 0) == done and stats.get("dead_total", 0) == dead)


def settled(cluster: Any, queue: str, done: int, dead: int = 0) -> dict[str, Any] | None:
    """The queue's stats once :func:`is_settled`; None before that."""
    stats = queue_stats(cluster, queue)
    return stats if is_settled(stats, done, dead) else None


def worker_id(cluster: Any, proc: Any) -> str:
    [w] = [w for w in cluster.client.trigger("engine::workers::list", {})["workers"]
           if w.get("pid") == proc.pid]
    return w["id"]


def start_workers(cluster: Any, app: str, n: int, concurrency: int) -> list[Any]:
    """Start ``n`` workers at once, then wait until each has registered."""
    procs = [cluster.worker(app, concurrency=concurrency, wait=False) for _ in range(n)]
    for proc in procs:
        cluster.wait_registered(proc)
    return procs


def stop_worker(store: Any, settings: Any, proc: Any, function_id: str) -> None:
    """Stop a worker (SIGTERM) and wait until the registry no longer lists ``function_id``."""
    proc.stop()
    wait_for(lambda: not store.sismember(f"{settings.namespace}:functions", function_id),
             what=f"{function_id} to be unregistered")
