"""More durable-job functions for tests/queues/test_named_queues.py, run in real workers.

Runs are recorded on ``NS:test:runs`` exactly as :mod:`tests.apps.jobs` records them
(``{fn, id, attempt, pid, at, ok}``).

- ``extra::gate`` fails until the Redis key ``NS:test:gate`` exists (tests open the gate
  to make dead letters succeed once redriven).
- ``extra::async_flaky`` is an ``async def`` that fails while ``ctx.attempt <= fail_times``.
- ``extra::alert`` is a ``durable:subscriber`` of topic ``alerts`` that always fails, with
  ``queue_config = {max_retries = 1, backoff_ms = 20}``.
"""

import asyncio
import json
import os
import time

import redis

from iii_broker import App, Settings

app = App("jobs-extra")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
RUNS = f"{_settings.namespace}:test:runs"
GATE = f"{_settings.namespace}:test:gate"


def _record(fn, payload, ctx, ok=True):
    payload = payload if isinstance(payload, dict) else {}
    _store.rpush(RUNS, json.dumps({"fn": fn, "id": payload.get("id"), "attempt": ctx.attempt,
                                   "pid": os.getpid(), "at": time.time(), "ok": ok}))


@app.function("extra::gate")
def gate(payload, ctx):
    if not _store.exists(GATE):
        _record("gate", payload, ctx, ok=False)
        raise RuntimeError(f"gate closed for {payload.get('id')}")
    _record("gate", payload, ctx)


@app.function("extra::async_flaky")
async def async_flaky(payload, ctx):
    await asyncio.sleep(0.001)
    if ctx.attempt <= payload.get("fail_times", 0):
        _record("async_flaky", payload, ctx, ok=False)
        raise RuntimeError(f"async attempt {ctx.attempt} of {payload.get('id')} fails on purpose")
    _record("async_flaky", payload, ctx)


@app.function("extra::alert")
def alert(payload, ctx):
    _record("alert", payload, ctx, ok=False)
    raise RuntimeError(f"alert {payload.get('id')} cannot be delivered")


app.register_trigger("durable:subscriber", "extra::alert",
                     {"topic": "alerts", "queue_config": {"max_retries": 1, "backoff_ms": 20}})
