"""State triggers for the state tests, run in real worker processes.

Every ``state`` trigger call is recorded on the Redis list ``NS:test:state-events`` as JSON
``{fn, payload, pid}``. ``III_TEST_STATE_HOLD`` names a Redis key: while it exists,
``state::slow`` waits (so a test can kill the worker in the middle of a call).
"""

import json
import os
import time

import redis

from iii_broker import App, Settings

app = App("state-app")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
EVENTS = f"{_settings.namespace}:test:state-events"
HOLD = f"{_settings.namespace}:test:state-hold"


def _record(fn, payload):
    _store.rpush(EVENTS, json.dumps({"fn": fn, "payload": payload, "pid": os.getpid()}))


@app.function("watch::all")
def watch_all(payload):
    _record("watch::all", payload)


@app.function("watch::cart")
def watch_cart(payload):
    _record("watch::cart", payload)


@app.function("watch::big_only")
def big_only(payload):
    return (payload.get("new_value") or 0) >= 100


@app.function("watch::slow")
def slow(payload):
    while _store.exists(HOLD):
        time.sleep(0.02)
    _record("watch::slow", payload)


app.register_trigger("state", "watch::all", {"scope": "orders"})
app.register_trigger("state", "watch::cart", {"scope": "carts", "key": "cart-1",
                                              "condition_function_id": "watch::big_only"})
app.register_trigger("state", "watch::slow", {"scope": "slow"})


@app.function("watch::board")
def watch_board(payload):
    _record("watch::board", payload)


app.register_trigger("stream", "watch::board", {"stream_name": "board", "group_id": "g1"})
