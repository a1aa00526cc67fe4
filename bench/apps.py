"""The iii-broker side of the bench: ``iii-worker -A bench.apps``."""

from __future__ import annotations

from typing import Any

from iii_broker import App

from .counting import Countdown

app = App("bench")
countdown = Countdown()


@app.function("bench::noop", description="Does nothing (counts its runs for the bench)")
def noop(_payload: Any) -> None:
    countdown.tick()
    return None


@app.function("bench::arm", description="Report the time of the n-th next noop run")
def arm(payload: dict[str, Any]) -> dict[str, Any]:
    countdown.arm(payload["redis_url"], payload["key"], payload["n"])
    return {}


@app.function("bench::noop_logged",
              description="Logs one INFO line and does nothing else (counts its runs)")
def noop_logged(_payload: Any, ctx: Any) -> None:
    ctx.logger.info("noop ran")
    countdown.tick()
    return None
