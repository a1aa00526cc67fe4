"""The Python SDK worker of bench/bench_gateway.py: iii's own ``iii-sdk`` serving
``bench::echo`` (returns its payload) through ``iii-broker gateway``.

    III_URL=ws://127.0.0.1:49134 python bench/sdk_echo.py

Exactly what a user would write: ``register_worker`` with default options (OTel on unless
``OTEL_ENABLED=false`` is in the environment) and an async handler. Runs until SIGTERM or
until its parent (the bench) is gone.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from iii import InitOptions, register_worker


async def echo(data: Any) -> Any:
    return data


def main() -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parent = os.getppid()
    iii = register_worker(os.environ.get("III_URL"),
                          InitOptions(worker_name=os.environ.get("BENCH_WORKER_NAME", "bench-sdk-py")))
    iii.register_function("bench::echo", echo, description="Returns its payload")
    while not stop.wait(1) and os.getppid() == parent:
        pass
    iii.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
