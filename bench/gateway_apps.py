"""The iii-worker side of bench/bench_gateway.py: ``iii-worker -A bench.gateway_apps``
serves the same ``bench::echo`` the SDK workers serve through the gateway."""

from __future__ import annotations

from typing import Any

from iii_broker import App

app = App("bench-gateway")


@app.function("bench::echo", description="Returns its payload")
def echo(payload: Any) -> Any:
    return payload
