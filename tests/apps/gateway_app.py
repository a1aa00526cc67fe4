"""The Kombu worker beside iii's SDK workers in the gateway tests (tests/gateway): it calls
SDK functions and records what SDK workers ask of it, on the Redis list ``NS:test:gw``."""

import redis

from iii_broker import App, Settings

app = App("gateway-peer")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
RECORDS = f"{_settings.namespace}:test:gw"


@app.function("gw::add")
def add(payload):
    return {"sum": payload["a"] + payload["b"]}


@app.function("gw::call")
def call(payload, ctx):
    """Call ``payload["function_id"]`` (an SDK worker's, say) from this Kombu worker."""
    result = ctx.trigger(payload["function_id"], payload.get("payload"), timeout_ms=10_000)
    return {"result": result, "trace_id": ctx.trace_id}


@app.function("gw::record")
def record(payload):
    _store.rpush(RECORDS, str(payload["id"]))
