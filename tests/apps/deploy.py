"""One version of an orders service, for the rolling-deploy and trigger-lifecycle tests.

:mod:`tests.apps.deploy_v1` and :mod:`tests.apps.deploy_v2` build it with :func:`make`:
the same function ids in both versions, with triggers that moved between them.

- ``orders::create``: ``POST <orders_path>`` (``/v1/orders``, then ``/v2/orders``);
  answers 201 with ``{"version", "pid"}``.
- ``orders::health``: ``GET /orders/health`` in both versions (the same binding);
  answers 200 with ``{"ok": true, "version"}``.
- ``orders::on_event``: ``durable:subscriber`` of ``<topic>`` (``a``, then ``b``); records
  each run on ``NS:test:runs`` as JSON ``{fn, version, payload, attempt, pid}``.
"""

from __future__ import annotations

import json
import os

import redis

from iii_broker import App, Settings


def make(version: str, orders_path: str, topic: str) -> App:
    app = App(f"orders-{version}")
    settings = Settings.from_env()
    store = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    runs = f"{settings.namespace}:test:runs"

    @app.function("orders::create")
    def create(payload):
        return {"status_code": 201, "body": {"version": version, "pid": os.getpid()}}

    @app.function("orders::health")
    def health(payload):
        return {"status_code": 200, "body": {"ok": True, "version": version}}

    @app.function("orders::on_event")
    def on_event(payload, ctx):
        store.rpush(runs, json.dumps({"fn": "orders::on_event", "version": version,
                                      "payload": payload, "attempt": ctx.attempt,
                                      "pid": os.getpid()}))

    app.register_trigger("http", "orders::create",
                         {"api_path": orders_path, "http_method": "POST"})
    app.register_trigger("http", "orders::health",
                         {"api_path": "/orders/health", "http_method": "GET"})
    app.register_trigger("durable:subscriber", "orders::on_event", {"topic": topic})
    return app
