"""Durable-job functions for the queue tests, run in real worker processes.

Every run is recorded on the Redis list ``NS:test:runs`` as JSON
``{fn, id, attempt, pid, at, ok}`` so tests can count runs across processes.
"""

import asyncio
import json
import os
import time

import redis

from iii_broker import App, Settings

app = App("jobs")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
RUNS = f"{_settings.namespace}:test:runs"
_PEAK = _store.register_script("""
local now = redis.call('INCR', KEYS[1])
local top = tonumber(redis.call('GET', KEYS[2]) or '0')
if now > top then redis.call('SET', KEYS[2], now) end
return now
""")


def _record(fn, payload, ctx, ok=True, **extra):
    payload = payload if isinstance(payload, dict) else {}
    _store.rpush(RUNS, json.dumps({"fn": fn, "id": payload.get("id"), "g": payload.get("g"),
                                   "attempt": ctx.attempt, "pid": os.getpid(),
                                   "at": time.time(), "ok": ok, **extra}))


@app.function("jobs::record")
def record(payload, ctx):
    _record("record", payload, ctx)


@app.function("jobs::flaky")
def flaky(payload, ctx):
    """Fails while ``ctx.attempt <= payload["fail_times"]``."""
    if ctx.attempt <= payload.get("fail_times", 0):
        _record("flaky", payload, ctx, ok=False)
        raise RuntimeError(f"attempt {ctx.attempt} of {payload.get('id')} fails on purpose")
    _record("flaky", payload, ctx)


@app.function("jobs::fail")
def fail(payload, ctx):
    _record("fail", payload, ctx, ok=False)
    raise ValueError(f"no good: {payload.get('id')}")


@app.function("jobs::slow")
def slow(payload, ctx):
    _record("slow", payload, ctx, ok=False, phase="start")
    time.sleep(payload.get("s", 1.0))
    _record("slow", payload, ctx, phase="end")


@app.function("jobs::peak")
def peak(payload, ctx):
    """Counts how many run at once across every worker (``NS:test:peak`` keeps the top)."""
    ns = _settings.namespace
    _PEAK(keys=[f"{ns}:test:running", f"{ns}:test:peak"])
    try:
        time.sleep(payload.get("s", 0.05))
    finally:
        _store.decr(f"{ns}:test:running")
    _record("peak", payload, ctx)


@app.function("jobs::die")
def die(payload, ctx):
    """Kills its own worker process every time it runs."""
    _record("die", payload, ctx, ok=False)
    os._exit(1)


@app.function("jobs::async_record")
async def async_record(payload, ctx):
    await asyncio.sleep(0)
    _record("async_record", payload, ctx)


@app.function("jobs::echo")
def echo(payload, ctx):
    """Returns its payload, recording the run: a caller can tell its own reply from another's."""
    _record("echo", payload, ctx)
    return payload
