"""Topic subscribers for the durable-topic and pub/sub tests, run in real worker processes.

Every run is recorded on ``NS:test:runs`` as JSON ``{fn, payload, attempt, pid}``.

- ``durable`` (``-A tests.apps.topics:durable``): ``topics::audit`` and ``topics::mail``,
  durable subscribers of topic ``orders``; each takes 30 ms (so one worker cannot keep up
  alone and replicas share the work); ``topics::mail`` has ``max_retries = 0`` and fails
  when the message has ``"bounce": true``.
- ``live`` (``-A tests.apps.topics:live``): ``news::one`` and ``news::two``, ``subscribe``
  triggers on topic ``news``, and ``news::picky``, whose condition (``news::broken``)
  always raises.
- ``late`` (``-A tests.apps.topics:late``): ``news::late``, another ``subscribe`` on ``news``.
"""

import json
import os
import time

import redis

from iii_broker import App, Settings

durable = App("topics-durable")
live = App("topics-live")
late = App("topics-late")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
RUNS = f"{_settings.namespace}:test:runs"


def _record(fn, payload, ctx):
    _store.rpush(RUNS, json.dumps({"fn": fn, "payload": payload, "attempt": ctx.attempt,
                                   "pid": os.getpid()}))


@durable.function("topics::audit")
def audit(payload, ctx):
    time.sleep(0.03)
    _record("topics::audit", payload, ctx)


@durable.function("topics::mail")
def mail(payload, ctx):
    time.sleep(0.03)
    _record("topics::mail", payload, ctx)
    if isinstance(payload, dict) and payload.get("bounce"):
        raise RuntimeError(f"mail for order {payload.get('n')} bounced")


durable.register_trigger("durable:subscriber", "topics::audit", {"topic": "orders"})
durable.register_trigger("durable:subscriber", "topics::mail",
                         {"topic": "orders", "queue_config": {"max_retries": 0, "backoff_ms": 10}})


@live.function("news::one")
def one(payload, ctx):
    _record("news::one", payload, ctx)


@live.function("news::two")
def two(payload, ctx):
    _record("news::two", payload, ctx)


@live.function("news::picky")
def picky(payload, ctx):
    _record("news::picky", payload, ctx)


@live.function("news::broken")
def broken(payload):
    raise RuntimeError("this condition is broken")


live.register_trigger("subscribe", "news::one", {"topic": "news"})
live.register_trigger("subscribe", "news::two", {"topic": "news"})
live.register_trigger("subscribe", "news::picky",
                      {"topic": "news", "condition_function_id": "news::broken"})


@late.function("news::late")
def late_news(payload, ctx):
    _record("news::late", payload, ctx)


late.register_trigger("subscribe", "news::late", {"topic": "news"})
