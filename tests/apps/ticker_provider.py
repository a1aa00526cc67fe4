"""A worker providing the custom trigger type ``ticker``: each trigger handed to it fires its
function every 50 ms with ``{tick, trigger_id, config}``. A trigger whose config says
``{"refuse": true}`` is refused. Every register/unregister it is told of is recorded on the
Redis list ``NS:test:ticker-ops`` as JSON ``{op, id, function_id, pid}``."""

import json
import os
import threading

import redis

from iii_broker import App, Settings

app = App("ticker-provider")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
OPS = f"{_settings.namespace}:test:ticker-ops"


class Ticker:
    def __init__(self) -> None:
        self.stops: dict[str, threading.Event] = {}

    def register_trigger(self, trigger):
        if trigger.config.get("refuse"):
            raise ValueError("this ticker refuses to tick")
        stop = self.stops[trigger.id] = threading.Event()
        _store.rpush(OPS, json.dumps({"op": "register", "id": trigger.id,
                                      "function_id": trigger.function_id, "pid": os.getpid()}))

        def tick() -> None:
            n = 0
            while not stop.wait(0.05):
                n += 1
                try:
                    app.trigger(trigger.function_id, {"tick": n, "trigger_id": trigger.id,
                                                      "config": trigger.config})
                except Exception:  # noqa: BLE001 - its function is between workers
                    pass
        threading.Thread(target=tick, daemon=True).start()

    def unregister_trigger(self, trigger):
        stop = self.stops.pop(trigger.id, None)
        if stop is not None:
            stop.set()
        _store.rpush(OPS, json.dumps({"op": "unregister", "id": trigger.id,
                                      "function_id": trigger.function_id, "pid": os.getpid()}))


app.register_trigger_type("ticker", Ticker(), description="fires every 50 ms")
