"""Test helpers used by every package's tests (like FastStream's `testing.py`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class ConditionTimeoutError(AssertionError):
    """A condition awaited by a test did not become true in time."""


async def eventually(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "") -> None:
    """Waits until `condition()` is true, polling, with a deadline: tests never sleep a fixed time."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise ConditionTimeoutError(f"timed out after {timeout}s waiting for {what or condition!r}")
        await asyncio.sleep(0.05)
