"""A worker app whose ``watch::functions`` is bound to ``engine::functions-available``:
it records every payload it gets on ``NS:test:available`` (JSON, oldest first)."""

import json

import redis

from iii_broker import App, Settings

app = App("watcher")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)


@app.function("watch::functions")
def functions_changed(payload):
    _store.rpush(f"{_settings.namespace}:test:available", json.dumps(payload))


app.register_trigger("engine::functions-available", "watch::functions", {})
