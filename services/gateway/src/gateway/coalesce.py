"""Writes to the same document that arrive while one is being written go together, in one write.

The gateway consumes its topics independently, so the first events of an enrolment (enrolled, identity
resolved, catalogued) reach their handlers within milliseconds of each other and each writes one part of the
same document. The database runs writes to one document one after another anyway; queued behind each other
they cost one round trip each, so the last part waits for all of them. Here the writes of one document take
turns (a FIFO lock per document): the first goes alone, and whatever arrived meanwhile goes as one batch when
its turn comes. The three parts then cost two writes, not three. The batch is written by the first of its
callers to get the turn; each caller returns as soon as its own write is durable.

Pure asyncio: what a write is (alone or as a batch) is the caller's (`gateway.store`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from proxymage_shared.errors import TransientError

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")


class BatchInterruptedError(TransientError):
    """The caller writing a batch was cancelled (a stop) before the batch was known written: the others' events
    are tried again, never dead-lettered for it (the write is idempotent)."""


@dataclass
class _Turns(Generic[Item, Result]):
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)
    callers: int = 0


class Coalescer(Generic[Key, Item, Result]):
    """`submit(key, item)` returns what `write` gave for the batch that held `item`.

    `write(items)` writes a batch (one item or several, in arrival order) and returns one result per item.
    `linger_seconds`: how long a caller that has the turn alone waits for others before writing.
    """

    def __init__(self, write: Callable[[list[Item]], Awaitable[list[Result]]], linger_seconds: float = 0.0) -> None:
        self._write = write
        self._linger = linger_seconds
        self._turns: dict[Key, _Turns[Item, Result]] = {}

    async def submit(self, key: Key, item: Item) -> Result:
        turns = self._turns.setdefault(key, _Turns())
        mine: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        turns.waiting.append((item, mine))
        turns.callers += 1
        try:
            async with turns.lock:
                if not mine.done():  # else written with an earlier caller's batch
                    if self._linger > 0 and len(turns.waiting) == 1:
                        # Alone: the other parts of a new enrolment are usually a fraction of a millisecond
                        # behind (consumed from other topics); waiting that long saves a whole write.
                        await asyncio.sleep(self._linger)
                    batch, turns.waiting = turns.waiting, []
                    await self._write_batch(batch)
            return mine.result()
        finally:
            if not mine.done():  # cancelled while waiting for the turn: its item is not written
                turns.waiting = [(item, future) for item, future in turns.waiting if future is not mine]
            elif not mine.cancelled():
                mine.exception()  # retrieved (raised above, or the caller was cancelled after it was set)
            turns.callers -= 1
            if turns.callers == 0:
                del self._turns[key]

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} writes gave {len(results)} results")
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(BatchInterruptedError("the batch's writer was cancelled"))
            raise
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
