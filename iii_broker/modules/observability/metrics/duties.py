"""The engine's part of the metrics: forgetting the gauges of processes that are gone."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ...base import Duty

if TYPE_CHECKING:
    from ...hosts import EngineHost
    from ..options import ObservabilityOptions

GONE_S = 60.0
"""The engine's duty forgets the gauges of a process silent this long."""
SWEEP_EVERY_S = 30.0


def duties(engine: EngineHost, options: ObservabilityOptions) -> list[Duty]:
    """Forget the gauges of processes that stopped storing them (killed, not drained)."""
    r: Any = engine.registry.r
    key = engine.registry.keys.metric_gauges

    def forget_gone() -> None:
        now_ms = int(time.time() * 1000)
        gone = []
        for process_id, text in r.hgetall(key).items():
            try:
                at = int(json.loads(text)["at"])
            except (ValueError, TypeError, KeyError):
                at = 0
            if now_ms - at > GONE_S * 1000:
                gone.append(process_id)
        if gone:
            r.hdel(key, *gone)
        return None

    return [Duty("metrics-forget-gone", forget_gone, SWEEP_EVERY_S)]
