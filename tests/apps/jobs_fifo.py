"""A FIFO-queue job for the ordering tests, run in real worker processes.

``fifo::step`` records every attempt on ``NS:test:runs`` as JSON
``{g, seq, attempt, ok, pid, t0, t1, same_group, all}``: ``same_group`` is how many jobs
of its group ran at once when it started (1 when FIFO holds), ``all`` how many jobs of
any group (above 1: groups ran in parallel). Counted with Redis counters, not clocks.
"""

import json
import os
import time

import redis

from iii_broker import App, Settings

app = App("jobs-fifo")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
_ns = _settings.namespace
RUNS = f"{_ns}:test:runs"


@app.function("fifo::step")
def step(payload, ctx):
    """Sleeps ``s`` seconds; fails while ``ctx.attempt <= payload["fail_times"]``."""
    group = payload["g"]
    t0 = time.time()
    same_group = _store.incr(f"{_ns}:test:running:{group}")
    together = _store.incr(f"{_ns}:test:running")
    try:
        time.sleep(payload.get("s", 0.05))
    finally:
        _store.decr(f"{_ns}:test:running:{group}")
        _store.decr(f"{_ns}:test:running")
    ok = ctx.attempt > payload.get("fail_times", 0)
    _store.rpush(RUNS, json.dumps({
        "g": group, "seq": payload["seq"], "attempt": ctx.attempt, "ok": ok, "pid": os.getpid(),
        "t0": t0, "t1": time.time(), "same_group": same_group, "all": together}))
    if not ok:
        raise RuntimeError(f"{group}{payload['seq']} fails on attempt {ctx.attempt} on purpose")
