"""Cron jobs for the beat tests, run in real worker processes.

``III_TEST_CRON_TRIGGERS`` is a JSON list of ``{function_id, config}``: the cron triggers
this worker declares. Every run is recorded on the Redis list ``NS:test:fires`` as JSON
``{fn, payload, received, pid}`` (``received``: Unix seconds) so tests can count fires
across processes and beats.
"""

import json
import os
import time

import redis

from iii_broker import App, Settings

app = App("cron-app")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
FIRES = f"{_settings.namespace}:test:fires"
ALLOW = f"{_settings.namespace}:test:allow"


def _record(fn, payload):
    _store.rpush(FIRES, json.dumps({"fn": fn, "payload": payload, "received": time.time(),
                                    "pid": os.getpid()}))


@app.function("cron::tick")
def tick(payload):
    _record("cron::tick", payload)
    return {"ok": True}


@app.function("cron::other")
def other(payload):
    _record("cron::other", payload)


@app.function("cron::slow")
def slow(payload):
    _record("cron::slow", payload)
    time.sleep(float(os.environ.get("III_TEST_CRON_SLEEP_S", "2.5")))


@app.function("cron::fail")
def fail(payload):
    _record("cron::fail", payload)
    raise RuntimeError("this cron job always fails")


@app.function("cron::allow")
def allow(payload):
    """The condition of conditional jobs: true while NS:test:allow is "1"."""
    return _store.get(ALLOW) == "1"


for trigger in json.loads(os.environ.get("III_TEST_CRON_TRIGGERS", "[]")):
    app.register_trigger(type="cron", function_id=trigger["function_id"], config=trigger["config"])
