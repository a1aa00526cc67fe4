"""Functions the stream tests call from a real stream process: an ``auth_function``, a
``stream:join`` handler (with a condition) and a ``stream:leave`` handler.

Every join and leave payload is recorded as JSON on the Redis list ``NS:test:stream``
(``{"fn", "payload"}``) so tests can see what the stream process sent.
"""

import json

import redis

from iii_broker import App, Settings

app = App("stream-app")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
CALLS = f"{_settings.namespace}:test:stream"


@app.function("streamtest::auth")
def auth(payload):
    """``?token=good`` → context {"user": "alice"}; ``?token=refuse`` → unauthorized;
    anything else raises."""
    token = payload["query_params"].get("token")
    if token == "good":
        return {"context": {"user": "alice", "addr": payload["addr"],
                            "header": payload["headers"].get("x-test")}}
    if token == "refuse":
        return {"unauthorized": True}
    raise PermissionError("no token")


@app.function("streamtest::join")
def join(payload):
    _store.rpush(CALLS, json.dumps({"fn": "join", "payload": payload}))
    if payload["group_id"] == "secret":
        return {"unauthorized": True}
    return {}


@app.function("streamtest::leave")
def leave(payload):
    _store.rpush(CALLS, json.dumps({"fn": "leave", "payload": payload}))


@app.function("streamtest::not_muted")
def not_muted(payload):
    """The join trigger's condition: groups named ``muted`` skip the join handler."""
    return payload["group_id"] != "muted"


app.register_trigger("stream:join", "streamtest::join",
                     {"condition_function_id": "streamtest::not_muted"})
app.register_trigger("stream:leave", "streamtest::leave")
