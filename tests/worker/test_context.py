"""What a running function sees: its Context, including what modules add to it."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from iii_broker import App, current_context
from iii_broker.context import Context
from iii_broker.modules import Module
from iii_broker.worker import Worker
from tests.helpers import wait_for


class GreetingModule(Module):
    name = "greeting"
    trigger_types: ClassVar[tuple] = ()

    def context_extras(self, ctx: Context) -> dict[str, Any]:
        return {"greeting": f"hello from {ctx.function_id}"}


def test_modules_add_to_the_context_and_current_context_finds_it(cluster, settings):
    cluster.engine()
    app = App("ctx-test", settings=settings)

    @app.function("ctx::show")
    def show(payload, ctx):
        inner = current_context()
        return {"greeting": ctx.greeting, "same": inner is ctx, "attempt": ctx.attempt,
                "logger": ctx.logger.logger.name}

    worker = Worker(app, settings, concurrency=2, modules=[GreetingModule()])
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        cluster.wait_function("ctx::show")
        out = cluster.client.trigger("ctx::show", {})
        assert out == {"greeting": "hello from ctx::show", "same": True, "attempt": 1,
                       "logger": "iii.fn.ctx::show"}
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    wait_for(lambda: not cluster.client.caller.store.sismember(
        f"{settings.namespace}:functions", "ctx::show"), what="the worker to unregister")
