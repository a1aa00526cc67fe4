"""A function that logs, for tests/faults/test_observability_faults.py (run in a real worker
process): it logs that it began, holds until a gate file exists (so a test can end its run
while Redis is down), then logs ``steps`` records and one that it ended, timing those, and
writes the timing to a file of its own in ``done`` (a file: Redis may be away)."""

import json
import time
from pathlib import Path

from iii_broker import App

app = App("obs-app")
HOLD_MAX_S = 30.0
"""A run whose gate never opens gives up after this long (a failed test's worker drains)."""


@app.function("obs::hold")
def hold(payload, ctx):
    tag = payload["tag"]
    ctx.logger.info("%s began", tag)
    gate = Path(payload["gate"])
    deadline = time.monotonic() + HOLD_MAX_S
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.perf_counter()
    for i in range(payload["steps"]):
        ctx.logger.info("%s step %d", tag, i)
    ctx.logger.warning("%s ended", tag)
    logging_s = time.perf_counter() - started
    done = Path(payload["done"]) / tag
    done.with_suffix(".tmp").write_text(json.dumps({"logging_s": logging_s,
                                                    "trace_id": ctx.trace_id}))
    done.with_suffix(".tmp").rename(done)
    return {"tag": tag, "logging_s": logging_s}
