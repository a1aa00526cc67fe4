"""The worker of the cron bench: ``iii-worker -A bench.cron_apps``.

``BENCH_CRON`` picks the triggers it declares: ``jitter`` (one every-second schedule)
or ``scale:N:DUE`` (N schedules, DUE of them every 10 s on the same second, the others
yearly). Each run RPUSHes ``{scheduled_time, actual_time, received}`` to ``NS:bench:fires``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

from iii_broker import App, Settings

app = App("bench-cron")
_settings = Settings.from_env()
_store = redis.Redis.from_url(_settings.redis_url, decode_responses=True)
FIRES = f"{_settings.namespace}:bench:fires"


@app.function("bench::cron", description="Records when each cron fire arrives")
def fire(payload: dict[str, Any]) -> None:
    _store.rpush(FIRES, json.dumps({"scheduled": payload["scheduled_time"],
                                    "actual": payload["actual_time"], "received": time.time()}))


_mode = os.environ.get("BENCH_CRON", "jitter")
if _mode == "jitter":
    app.register_trigger(type="cron", function_id="bench::cron",
                         config={"expression": "* * * * * *"})
else:
    _, total, due = _mode.split(":")
    for i in range(int(total)):
        # Distinct configs make distinct triggers (a trigger's id comes from its binding).
        expression = "*/10 * * * * *" if i < int(due) else "0 0 0 1 1 *"
        app.register_trigger(type="cron", function_id="bench::cron",
                             config={"expression": expression, "timeout_ms": 30_000 + i})
