"""iii's Python SDK (unmodified) providing the custom trigger type ``ticker``
(``register_trigger_type``): each trigger the gateway hands it fires its function every
50 ms with ``{tick, trigger_id, config}``; one whose config says ``refuse`` is refused."""

import os
import threading

from iii import InitOptions, register_worker
from iii.triggers import TriggerHandler

iii = register_worker(os.environ["III_URL"], InitOptions(worker_name="sdk-ticker"))


class Ticker(TriggerHandler):
    def __init__(self) -> None:
        self.stops: dict[str, threading.Event] = {}

    async def register_trigger(self, config):
        if (config.config or {}).get("refuse"):
            raise ValueError("this SDK ticker refuses to tick")
        stop = self.stops[config.id] = threading.Event()

        def tick() -> None:
            n = 0
            while not stop.wait(0.05):
                n += 1
                try:
                    iii.trigger({"function_id": config.function_id,
                                 "payload": {"tick": n, "trigger_id": config.id,
                                             "config": config.config}})
                except Exception:  # noqa: BLE001 - its function is between workers
                    pass
        threading.Thread(target=tick, daemon=True).start()

    async def unregister_trigger(self, config):
        stop = self.stops.pop(config.id, None)
        if stop is not None:
            stop.set()


iii.register_trigger_type({"id": "ticker", "description": "fires every 50 ms"}, Ticker())
print("READY", flush=True)
threading.Event().wait()
