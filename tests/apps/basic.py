"""The app most end-to-end tests run in real worker processes."""

import asyncio
import os
import time

import redis

from iii_broker import App, Settings, current_context

app = App("basic")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)


def _mark(name: str, value: str) -> None:
    """Record something this worker did, for tests to count."""
    _store.rpush(f"{_settings.namespace}:test:{name}", value)


@app.function("test::add")
def add(payload):
    return {"sum": payload["a"] + payload["b"]}


@app.function("test::echo")
def echo(payload, ctx):
    return {"payload": payload, "function_id": ctx.function_id,
            "invocation_id": ctx.invocation_id, "attempt": ctx.attempt,
            "trace_id": ctx.trace_id, "metadata": ctx.metadata}


@app.function("test::async_add")
async def async_add(payload):
    await asyncio.sleep(0.01)
    return {"sum": payload["a"] + payload["b"]}


@app.function("test::nested")
def nested(payload, ctx):
    inner = ctx.trigger("test::add", {"a": payload["a"], "b": payload["b"]})
    again = ctx.trigger("test::echo", {"x": 1})
    return {"sum": inner["sum"], "trace_id": ctx.trace_id, "inner_trace_id": again["trace_id"]}


@app.function("test::async_nested")
async def async_nested(payload):
    ctx = current_context()
    inner = await ctx.atrigger("test::async_add", payload)
    return {"sum": inner["sum"]}


@app.function("test::fail")
def fail(payload):
    raise ValueError(f"bad input: {payload!r}")


@app.function("test::slow")
def slow(payload):
    _mark("started", payload.get("id", "?"))
    time.sleep(payload["seconds"])
    _mark("finished", payload.get("id", "?"))
    return {"slept": payload["seconds"], "pid": os.getpid()}


@app.function("test::record")
def record(payload):
    _mark("records", str(payload["id"]))
    return None


@app.function("test::pid")
def pid(payload):
    time.sleep(payload.get("seconds", 0))
    return {"pid": os.getpid()}


@app.function("test::bad_result")
def bad_result(payload):
    return {"oops": {1, 2}}


app.register_trigger(type="http", function_id="test::add",
                     config={"api_path": "/add", "http_method": "POST"})
