from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from proxymage_shared.retry import BackoffSchedule, RetryPolicy, retry_in_place


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


def test_in_place_retries_stop_at_the_limit_and_a_seeded_policy_repeats_itself() -> None:
    policy = RetryPolicy(max_attempts=3, base_seconds=1, max_seconds=4, rng=random.Random(7))
    assert [policy.exhausted(n) for n in (1, 2, 3)] == [False, False, True]
    assert not RetryPolicy(max_attempts=0).exhausted(10_000)  # 0: no limit (a service's start-up)
    again = RetryPolicy(max_attempts=3, base_seconds=1, max_seconds=4, rng=random.Random(7))
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [again.delay(n) for n in (1, 2, 3, 4)]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=-1)


async def test_retry_in_place_retries_only_the_errors_named_and_raises_the_last() -> None:
    calls: list[int] = []
    waits: list[float] = []
    told: list[tuple[int, str]] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    policy = RetryPolicy(max_attempts=5, base_seconds=0.1, max_seconds=1)
    result = await retry_in_place(
        flaky,
        policy,
        retry_on=(ConnectionError,),
        sleep=sleep,
        on_retry=lambda n, e, d: told.append((n, type(e).__name__)),
    )
    assert result == "ok"
    assert len(calls) == 3
    assert len(waits) == 2
    assert told == [(1, "ConnectionError"), (2, "ConnectionError")]

    async def always_down() -> str:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError, match="still down"):
        await retry_in_place(always_down, RetryPolicy(max_attempts=2, base_seconds=0), retry_on=(OSError,), sleep=sleep)

    async def refused() -> str:
        raise ValueError("not retried")

    waits.clear()
    with pytest.raises(ValueError, match="not retried"):
        await retry_in_place(refused, policy, retry_on=(ConnectionError,), sleep=sleep)
    assert waits == []


def test_an_uncapped_policy_doubles_its_waits_up_to_the_one_before_the_last_try() -> None:
    # 4 tries, 3 waits: about 0.5 s, 1 s, 2 s, none cut short by the ceiling.
    policy = RetryPolicy.uncapped(4, 0.5)
    assert (policy.max_attempts, policy.base_seconds, policy.max_seconds) == (4, 0.5, 2.0)
    assert [0.25 <= policy.delay(1) <= 0.5, 0.5 <= policy.delay(2) <= 1, 1 <= policy.delay(3) <= 2] == [True] * 3
    assert RetryPolicy.uncapped(1, 0.5).max_seconds == 0.5  # one try, no wait: any valid ceiling


async def test_retry_in_place_raises_the_errors_never_retried_at_once() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def refused() -> str:
        raise PermissionError("permanent")

    with pytest.raises(PermissionError):
        await retry_in_place(refused, RetryPolicy(), retry_on=(Exception,), never_on=(PermissionError,), sleep=sleep)
    assert waits == []
