"""Retry policies as data (CONVENTIONS.md, after dcm4chee's per-queue policies): one object from settings,
never numbers scattered in handlers. Pure: no clock, no sleeping."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffSchedule:
    """Delays before retry 1, 2, ... ; the last delay repeats. E.g. 15 s, 1 min, 5 min, 15 min, then 30 min.

    `jitter` spreads retries of many jobs that failed together (0.2 = each delay drawn in ±20 %).
    """

    delays_seconds: tuple[float, ...] = (15, 60, 300, 900, 1800)
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not self.delays_seconds or any(delay < 0 for delay in self.delays_seconds):
            raise ValueError("a backoff schedule needs at least one non-negative delay")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        base = self.delays_seconds[min(max(attempt, 1), len(self.delays_seconds)) - 1]
        if not self.jitter:
            return base
        draw = (rng or random).uniform(-self.jitter, self.jitter)
        return base * (1 + draw)

    def next_attempt_at(self, now: dt.datetime, attempt: int, rng: random.Random | None = None) -> dt.datetime:
        return now + dt.timedelta(seconds=self.delay(attempt, rng))
