"""The retention rule: a meeting's data goes `retention_days` after its date, in the hospitals' time zone."""

from __future__ import annotations

import asyncio
import datetime as dt

from proxymage_shared.retention import cutoff, expired, sweeper, today_in
from proxymage_shared.settings import ServiceSettings


def test_a_meeting_is_kept_for_its_retention_days_then_expires() -> None:
    meeting = dt.date(2026, 10, 1)
    assert cutoff(dt.date(2026, 10, 31), 30) == meeting
    assert not expired(meeting, dt.date(2026, 10, 31), 30)  # day 30 after the meeting: kept
    assert expired(meeting, dt.date(2026, 11, 1), 30)
    assert not expired(None, dt.date(2030, 1, 1), 30)  # no known meeting date: kept


def test_today_is_the_hospitals_date() -> None:
    late_evening_utc = dt.datetime(2026, 10, 31, 23, 30, tzinfo=dt.UTC)  # already 1 November in Paris
    assert today_in("Europe/Paris", lambda: late_evening_utc) == dt.date(2026, 11, 1)
    assert today_in("UTC", lambda: late_evening_utc) == dt.date(2026, 10, 31)


async def test_the_sweeper_passes_the_cutoff_and_keeps_going_after_a_failure() -> None:
    settings = ServiceSettings(retention_days=30, retention_sweep_seconds=0.01, retention_timezone="Europe/Paris")
    seen: list[dt.date] = []
    stop = asyncio.Event()

    async def sweep(limit: dt.date) -> int:
        seen.append(limit)
        if len(seen) == 1:
            raise RuntimeError("MongoDB down")
        if len(seen) == 3:
            stop.set()
        return 2

    noon = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
    await asyncio.wait_for(sweeper(settings, sweep, lambda: noon)(stop), 5)
    assert set(seen) == {dt.date(2026, 10, 2)}
