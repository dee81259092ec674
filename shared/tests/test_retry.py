from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from proxymage_shared.kafka import RetryPolicy
from proxymage_shared.retry import BackoffSchedule


def test_delays_follow_the_schedule_then_repeat_the_last() -> None:
    schedule = BackoffSchedule((15, 60, 300), jitter=0)
    assert [schedule.delay(n) for n in range(1, 6)] == [15, 60, 300, 300, 300]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert schedule.next_attempt_at(now, 2) == now + dt.timedelta(seconds=60)


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=2**32))
def test_jitter_stays_within_bounds(attempt: int, seed: int) -> None:
    schedule = BackoffSchedule((1, 10, 100), jitter=0.2)
    base = (1, 10, 100)[min(attempt, 3) - 1]
    assert base * 0.8 <= schedule.delay(attempt, random.Random(seed)) <= base * 1.2


def test_invalid_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BackoffSchedule(())
    with pytest.raises(ValueError, match="jitter"):
        BackoffSchedule((1,), jitter=1.5)


@given(st.integers(min_value=1, max_value=40))
def test_in_place_retry_delays_are_capped(attempt: int) -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=0.5, max_seconds=10)
    assert 0 < policy.delay(attempt) <= 10
