"""`gateway.coalesce.Coalescer`: the first write of a document goes alone, what arrives meanwhile goes as one
batch, each caller gets its own result; failures and cancellations reach exactly the callers they concern."""

from __future__ import annotations

import asyncio

import pytest
from gateway.coalesce import BatchInterruptedError, Coalescer


class Recorder:
    """A write that records its batches and is held open until released (`release`: every batch from now on)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.fail_on = fail_on

    async def write(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        number = len(self.batches)
        self.started.set()
        await self.release.wait()
        if self.fail_on in items:
            raise ValueError(f"refused {self.fail_on}")
        return [f"wrote {item} in batch {number}" for item in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_writes_arriving_during_a_write_go_together_and_each_caller_gets_its_result() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, str, str] = Coalescer(recorder.write)
    first = asyncio.create_task(coalescer.submit("doc", "enrolment"))
    await recorder.started.wait()
    later = [asyncio.create_task(coalescer.submit("doc", part)) for part in ("identity", "catalogue")]
    other = asyncio.create_task(coalescer.submit("other-doc", "identity"))  # another document: not held
    await settle()
    assert recorder.batches == [["enrolment"], ["identity"]]
    recorder.release.set()
    results = await asyncio.gather(first, *later, other)
    assert recorder.batches == [["enrolment"], ["identity"], ["identity", "catalogue"]]
    assert results == [
        "wrote enrolment in batch 1",
        "wrote identity in batch 3",
        "wrote catalogue in batch 3",
        "wrote identity in batch 2",
    ]
    assert coalescer._turns == {}  # nothing kept once every caller returned


async def test_a_write_alone_is_not_delayed() -> None:
    recorder = Recorder()
    recorder.release.set()
    coalescer: Coalescer[str, str, str] = Coalescer(recorder.write)
    assert await coalescer.submit("doc", "enrolment") == "wrote enrolment in batch 1"
    assert await coalescer.submit("doc", "identity") == "wrote identity in batch 2"
    assert recorder.batches == [["enrolment"], ["identity"]]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    recorder = Recorder(fail_on="catalogue")
    coalescer: Coalescer[str, str, str] = Coalescer(recorder.write)
    first = asyncio.create_task(coalescer.submit("doc", "enrolment"))
    await recorder.started.wait()
    later = [asyncio.create_task(coalescer.submit("doc", part)) for part in ("identity", "catalogue")]
    await settle()
    recorder.release.set()
    assert await first == "wrote enrolment in batch 1"
    for task in later:
        with pytest.raises(ValueError, match="refused catalogue"):
            await task
    recorder.fail_on = None
    assert await coalescer.submit("doc", "identity") == "wrote identity in batch 3"  # the next write is unaffected


async def test_a_cancelled_writer_interrupts_its_batch_and_a_cancelled_waiter_is_not_written() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, str, str] = Coalescer(recorder.write)
    first = asyncio.create_task(coalescer.submit("doc", "enrolment"))
    await recorder.started.wait()
    identity = asyncio.create_task(coalescer.submit("doc", "identity"))
    dropped = asyncio.create_task(coalescer.submit("doc", "withdrawal"))
    await settle()
    dropped.cancel()  # waiting for its turn: its item leaves the queue
    await settle()
    first.cancel()  # the writer of batch 1, cancelled mid-write
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(asyncio.CancelledError):
        await dropped
    recorder.release.set()
    assert await identity == "wrote identity in batch 2"
    assert recorder.batches == [["enrolment"], ["identity"]]
    assert coalescer._turns == {}


async def test_the_callers_of_an_interrupted_batch_are_told() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, str, str] = Coalescer(recorder.write)
    first = asyncio.create_task(coalescer.submit("doc", "enrolment"))
    await recorder.started.wait()
    recorder.started.clear()
    later = [asyncio.create_task(coalescer.submit("doc", part)) for part in ("identity", "catalogue")]
    await settle()
    recorder.release.set()
    recorder.release = asyncio.Event()  # batch 1 is let through, batch 2 will be held
    await first
    await recorder.started.wait()  # batch 2 (identity and catalogue) is being written by the identity caller
    assert recorder.batches == [["enrolment"], ["identity", "catalogue"]]
    later[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await later[0]
    with pytest.raises(BatchInterruptedError):
        await later[1]
    assert coalescer._turns == {}


async def test_a_caller_alone_lingers_for_the_parts_a_moment_behind() -> None:
    recorder = Recorder()
    recorder.release.set()
    coalescer: Coalescer[str, str, str] = Coalescer(recorder.write, linger_seconds=0.05)
    first = asyncio.create_task(coalescer.submit("doc", "enrolment"))
    await asyncio.sleep(0.01)  # consumed from other topics a moment later, while the first one lingers
    later = [asyncio.create_task(coalescer.submit("doc", part)) for part in ("identity", "catalogue")]
    assert await asyncio.gather(first, *later) == [
        "wrote enrolment in batch 1",
        "wrote identity in batch 1",
        "wrote catalogue in batch 1",
    ]
    assert recorder.batches == [["enrolment", "identity", "catalogue"]]
    assert await coalescer.submit("doc", "withdrawal") == "wrote withdrawal in batch 2"  # nobody came: alone
