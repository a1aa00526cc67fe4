"""Functions that log, and ``log`` triggers, for tests/observability/test_logs.py (run in
real worker processes).

Each log trigger call is recorded on the Redis list ``NS:test:log-calls`` as JSON
``{fn, record}``. The triggers only fire for records whose body starts with ``trig``
(their condition), so the other tests' records cost them nothing.
"""

import json
import logging

import redis

from iii_broker import App, Settings

app = App("logs-app")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
CALLS = f"{_settings.namespace}:test:log-calls"
plain = logging.getLogger("plain.user")


@app.function("logs::speak")
def speak(payload, ctx):
    """One record at each of info, warn (ctx.logger) and error (plain logging)."""
    tag = payload["tag"]
    ctx.logger.debug("%s debug", tag)  # below the default level: not stored
    ctx.logger.info("%s info", tag)
    ctx.logger.warning("%s warn", tag, extra={"sku": "A1"})
    plain.error("%s error", tag, extra={"order_id": 42})
    if payload.get("nested"):
        ctx.trigger("logs::inner", {"tag": tag})
    return {"trace_id": ctx.trace_id, "span_id": ctx.span_id}


@app.function("logs::inner")
def inner(payload, ctx):
    ctx.logger.info("%s inner", payload["tag"])
    try:
        payload["tag"] = 1 / 0
    except ZeroDivisionError:
        ctx.logger.exception("%s boom", payload["tag"])
    return {"span_id": ctx.span_id}


@app.function("logs::many")
def many(payload, ctx):
    for i in range(payload["n"]):
        ctx.logger.debug("%s n=%d", payload["tag"], i, extra={"i": i})


@app.function("logs::for_tests")
def for_tests(record):
    return record["body"].startswith("trig")


@app.function("logs::on_warn")
def on_warn(record):
    _store.rpush(CALLS, json.dumps({"fn": "logs::on_warn", "record": record}))


@app.function("logs::on_any")
def on_any(record, ctx):
    """Logs, and calls a function that logs: neither may fire a log trigger again."""
    _store.rpush(CALLS, json.dumps({"fn": "logs::on_any", "record": record}))
    ctx.logger.warning("trig saw %s", record["body"])
    ctx.trigger("logs::chatty", {"body": record["body"]})


@app.function("logs::chatty")
def chatty(payload, ctx):
    ctx.logger.error("trig chatty about %s", payload["body"])


app.register_trigger("log", "logs::on_warn", {"level": "warn",
                                              "condition_function_id": "logs::for_tests"})
app.register_trigger("log", "logs::on_any", {"condition_function_id": "logs::for_tests"})
