"""Test helpers used by every package's tests (like FastStream's `testing.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

R = TypeVar("R")


class ConditionTimeoutError(AssertionError):
    """A condition awaited by a test did not become true in time."""


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "") -> None:
    """Waits until `condition()` is true, polling, with a deadline: tests never sleep a fixed time."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise ConditionTimeoutError(f"timed out after {timeout}s waiting for {what or condition!r}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def consuming(records: AsyncIterable[R], on_record: Callable[[R], None]) -> AsyncIterator[None]:
    """Calls `on_record` for each record of `records` (a started Kafka consumer, say) while the block runs; the
    reading task is cancelled when the block ends (the consumer itself is the caller's to stop)."""

    async def read() -> None:
        async for record in records:
            on_record(record)

    reader = asyncio.create_task(read())
    try:
        yield
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


class Stoppable(Protocol):
    async def stop(self) -> None: ...


async def stop_in_order(*clients: Stoppable) -> None:
    """Stops Kafka clients (consumers, producers) one after the other, in the order given."""
    for client in clients:
        await client.stop()


async def peak_inside(
    enter: Callable[[int], AbstractAsyncContextManager[object]], count: int, hold_seconds: float
) -> tuple[int, int]:
    """Runs `count` tasks at once, task k inside `enter(k)` for `hold_seconds`; returns (tasks done, the most that
    were inside at the same time): how a test checks a limit on concurrent holders."""
    inside, peak, done = 0, 0, 0

    async def one(k: int) -> None:
        nonlocal inside, peak, done
        async with enter(k):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(hold_seconds)
            inside -= 1
        done += 1

    await asyncio.gather(*(one(k) for k in range(count)))
    return done, peak
