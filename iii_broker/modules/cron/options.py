"""The beat's settings, from the cron module's ``[modules.cron]`` table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BeatOptions:
    """How a beat leads and fires (``lock_timeout_s``, ``misfire_threshold_ms``)."""

    lock_timeout_s: float = 10.0
    misfire_threshold_ms: int = 2_000
    max_interval_s: float = 0.5

    @property
    def standby_interval_s(self) -> float:
        return min(self.max_interval_s, self.lock_timeout_s / 4)
