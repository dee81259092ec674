"""Retention (CONTRACT v1.1): what a service holds about an enrolment goes a number of days after its meeting.

Each service deletes its own data in a periodic sweep (`sweeper`): it gives a `sweep(cutoff)` that deletes
everything about the enrolments whose meeting date is before `cutoff` and returns how many it removed. Sweeps
are idempotent (deleting what is already gone is a no-op), so several replicas may run them at once. An
enrolment whose meeting date is unknown is kept.

The cutoff is `today - retention_days`, today being the date in `retention_timezone` (the hospitals'): with the
default 30 days, the data of a meeting held on 1 October is deleted from 1 November on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import zoneinfo
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from proxymage_shared.logging import get_logger
from proxymage_shared.service import periodic
from proxymage_shared.settings import ServiceSettings

log = get_logger(__name__)

Sweep = Callable[[dt.date], Awaitable[int]]


def cutoff(today: dt.date, days: int) -> dt.date:
    """Meetings strictly before this date are past their retention."""
    return today - dt.timedelta(days=days)


def expired(meeting_date: dt.date | None, today: dt.date, days: int) -> bool:
    return meeting_date is not None and meeting_date < cutoff(today, days)


def today_in(zone: str, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> dt.date:
    return now().astimezone(zoneinfo.ZoneInfo(zone)).date()


def sweeper(
    settings: ServiceSettings,
    sweep: Sweep,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A `Service.background` loop running `sweep(cutoff)` every `retention_sweep_seconds`.

    The first round waits a random part of the interval: a sweep reads every enrolment on a store without
    secondary indexes (the local FerretDB), which should not land on a service's start-up, nor on all replicas
    of a rollout at the same moment.
    """

    async def round_() -> None:
        limit = cutoff(today_in(settings.retention_timezone, now), settings.retention_days)
        removed = await sweep(limit)
        if removed:
            log.info("retention_swept", enrolments=removed, before=limit.isoformat())

    rounds = periodic("retention", round_, settings.retention_sweep_seconds)

    async def loop(stop: asyncio.Event) -> None:
        first = settings.retention_sweep_seconds * random.uniform(0.1, 1.0)  # noqa: S311 - spreading, not secrecy
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), first)
        if not stop.is_set():
            await rounds(stop)

    return loop
