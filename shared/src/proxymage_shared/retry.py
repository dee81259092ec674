"""Retry policies as data (CONVENTIONS.md, after dcm4chee's per-queue policies): one object from settings,
never numbers scattered in handlers. Pure but for `retry_in_place`, which sleeps between attempts.

The decision tree, the same in every service, for an operation that failed:

1. **Permanent** (`errors.PermanentError`: the peer refused, the input is invalid): never retried. A Kafka
   message goes to its dead-letter topic with the reason; a durable job records the failure.
2. **Transient**, first **in place** (`RetryPolicy`, `retry_in_place`): a few quick retries (capped exponential
   backoff with jitter, seconds) inside the same call, while the message is held: a Kafka handler
   (`kafka.subscribe`), a PACS query, a service's start-up (unbounded there: it waits for its dependencies).
3. Still failing, then **durable** (`BackoffSchedule`), where the work outlives the call: the state is
   written with the time of the next attempt (minutes, up to 30 min), and a periodic task or a worker takes it
   up again, in whichever replica (a retrieval job, an e-mail, a PACS search).
4. Where there is no durable state to keep (a projection, a plain handler), the exhausted in-place retries
   end in the **dead-letter** topic with the reason (`kafka.subscribe`): never lost, replayable.

Every delay is jittered (many jobs failing together must not retry together), from a `random.Random` the
policy owns (a test gives it a seeded one), never the module-level generator.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

T = TypeVar("T")

# The durable schedule's default: after failed attempt 1, 2, ...; the last delay repeats.
DEFAULT_DELAYS_SECONDS: Final[tuple[float, ...]] = (15, 60, 300, 900, 1800)
DEFAULT_JITTER: Final = 0.2
# The in-place policy's defaults (a Kafka handler's retries, `settings.ServiceSettings.handler_*`; a service's
# start-up, without a limit): at most 5 tries, waits of about 0.5 s, 1 s, 2 s... up to 10 s.
DEFAULT_MAX_ATTEMPTS: Final = 5
DEFAULT_BASE_SECONDS: Final = 0.5
DEFAULT_MAX_SECONDS: Final = 10.0


@dataclass(frozen=True, slots=True)
class BackoffSchedule:
    """Durable retries: delays before retry 1, 2, ... ; the last delay repeats. E.g. 15 s, 1 min, 5 min,
    15 min, then 30 min.

    `jitter` spreads retries of many jobs that failed together (0.2 = each delay drawn in ±20 %).
    """

    delays_seconds: tuple[float, ...] = DEFAULT_DELAYS_SECONDS
    jitter: float = DEFAULT_JITTER
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

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
        draw = (rng or self.rng).uniform(-self.jitter, self.jitter)
        return base * (1 + draw)

    def next_attempt_at(self, now: dt.datetime, attempt: int, rng: random.Random | None = None) -> dt.datetime:
        return now + dt.timedelta(seconds=self.delay(attempt, rng))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """In-place retries: at most `max_attempts` tries of one operation (0: no limit), capped exponential
    backoff with "equal jitter" (each delay drawn in [ceiling / 2, ceiling])."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_seconds: float = DEFAULT_BASE_SECONDS
    max_seconds: float = DEFAULT_MAX_SECONDS
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 0 or self.base_seconds < 0 or self.max_seconds < self.base_seconds:
            raise ValueError("a retry policy needs max_attempts >= 0 and 0 <= base_seconds <= max_seconds")

    @classmethod
    def uncapped(cls, max_attempts: int, base_seconds: float) -> RetryPolicy:
        """`max_attempts` tries waiting about `base_seconds`, then twice as long, ... between them: the ceiling
        is the longest of those waits (the one before the last try), so none is cut short."""
        return cls(max_attempts, base_seconds, _doubling(base_seconds, max_attempts - 1))

    def delay(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based)."""
        ceiling = min(self.max_seconds, _doubling(self.base_seconds, attempt))
        return self.rng.uniform(ceiling / 2, ceiling)

    def exhausted(self, attempt: int) -> bool:
        """Whether `attempt` (1-based) failed tries are all this policy allows."""
        return self.max_attempts != 0 and attempt >= self.max_attempts


def _doubling(base_seconds: float, retry: int) -> float:
    """The uncapped ceiling of the wait before retry number `retry` (1-based): base, 2 base, 4 base..."""
    return base_seconds * 2.0 ** min(max(retry, 1) - 1, 62)


async def retry_in_place(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retry_on: tuple[type[BaseException], ...],
    never_on: tuple[type[BaseException], ...] = (),
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Runs `operation`, retrying it in place on the errors `retry_on` until the policy is exhausted (then the
    last error is raised). An error of `never_on` is raised at once, even if `retry_on` covers it (step 1: a
    `PermanentError` among all errors). `on_retry(attempt, error, delay)` is told before each wait (to log it);
    `sleep(delay)` waits (a caller that stops may return early: the operation is then tried once more)."""
    attempt = 1
    while True:
        try:
            return await operation()
        except never_on:
            raise
        except retry_on as error:
            if policy.exhausted(attempt):
                raise
            delay = policy.delay(attempt)
            if on_retry is not None:
                on_retry(attempt, error, delay)
            await sleep(delay)
            attempt += 1
