"""Waking the idle retrieval workers of one fetcher instance one at a time, and letting one of them poll.

A selection, a refresh or a peer answering again means "some job may be due now". Waking every idle worker
for it made them all claim at once: one got the job, the others' claims (and the repairs of the schedule entry
they found taken) queued in front of its writes on the serialising MongoDB front, delaying the move by tens of
milliseconds. So a wake-up goes to one idle worker (the longest idle); a worker that found work hands the
search for more on (`Retriever` wakes the next one when its move starts, the long part of its attempt), and a
wake-up while none is idle is kept for the next worker to become idle, so none is lost.

Likewise for the poll that finds work come due by time (retries): one idle worker, the poller, waits with the
poll's timeout; the others wait for a wake-up only. When the poller leaves (woken, or its poll is due), the
longest idle of the others becomes the poller. A fetcher's idle polls are then one per poll interval, not one
per worker (each a few MongoDB commands, on the CPU a running move shares).
"""

from __future__ import annotations

import asyncio
import collections


class WakeUps:
    """`set()` wakes one idle worker (or the next one to wait); `wait(timeout)` is a worker's idle time."""

    def __init__(self) -> None:
        # Each idle worker's future: True when woken, False when it becomes the poller.
        self._idle: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._poller: asyncio.Future[bool] | None = None
        self._pending = False

    def set(self) -> None:
        if not self._resolve(True):
            self._pending = True

    def _resolve(self, value: bool) -> bool:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(value)
                return True
        return False

    @property
    def idle(self) -> int:
        """How many workers wait now."""
        return sum(1 for waiter in self._idle if not waiter.done())

    async def wait(self, timeout: float) -> bool:
        """Waits until woken (True) or, for the poller, `timeout` seconds (False: poll). A wake-up given while no
        worker waited returns at once."""
        if self._pending:
            self._pending = False
            return True
        while True:
            waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            if self._poller is None:
                self._poller = waiter
            polling = self._poller is waiter
            self._idle.append(waiter)
            try:
                await asyncio.wait([waiter], timeout=timeout if polling else None)
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    # Stopped as it was woken or made the poller: that goes to another worker.
                    if waiter.result():
                        self.set()
                    else:
                        self._resolve(False)
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                    self._idle.remove(waiter)
                if self._poller is waiter:
                    self._poller = None
                    self._resolve(False)  # the longest idle of the others polls from now on
            if waiter.cancelled():
                return False  # the poll is due
            if waiter.result():
                return True
            # Made the poller: wait again, with the poll's timeout.
