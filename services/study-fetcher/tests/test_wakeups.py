"""`study_fetcher.wakeups.WakeUps`: one idle worker per wake-up, none lost; one idle worker polls. No server."""

from __future__ import annotations

import asyncio

from study_fetcher.wakeups import WakeUps


async def idle(wakeups: WakeUps, count: int, timeout: float = 5) -> list[asyncio.Task[bool]]:
    waiters = [asyncio.create_task(wakeups.wait(timeout)) for _ in range(count)]
    await asyncio.sleep(0)  # each task runs up to its wait
    assert wakeups.idle == count
    return waiters


async def test_a_wake_up_wakes_one_idle_worker_the_longest_idle_first() -> None:
    wakeups = WakeUps()
    first, second, third = await idle(wakeups, 3)
    wakeups.set()
    assert await first is True
    await asyncio.sleep(0.01)
    assert not second.done()
    assert not third.done()
    assert wakeups.idle == 2
    wakeups.set()
    wakeups.set()
    assert (await second, await third) == (True, True)
    assert wakeups.idle == 0


async def test_a_wake_up_while_no_worker_is_idle_is_kept_for_the_next_one_and_only_once() -> None:
    wakeups = WakeUps()
    wakeups.set()
    wakeups.set()  # coalesced: one worker looks, and hands on if it finds work
    assert await asyncio.wait_for(wakeups.wait(5), 1) is True
    assert await wakeups.wait(0.01) is False


async def test_an_idle_worker_not_woken_polls_after_its_timeout() -> None:
    wakeups = WakeUps()
    assert await wakeups.wait(0.01) is False
    assert wakeups.idle == 0
    wakeups.set()  # nobody waits: kept
    assert await wakeups.wait(5) is True


async def test_a_worker_stopped_as_it_is_woken_hands_the_wake_up_on() -> None:
    wakeups = WakeUps()
    (stopping,) = await idle(wakeups, 1)
    wakeups.set()  # resolves its waiter; the worker is cancelled before it runs again
    stopping.cancel()
    await asyncio.gather(stopping, return_exceptions=True)
    assert stopping.cancelled()
    assert await asyncio.wait_for(wakeups.wait(5), 1) is True


async def test_one_idle_worker_polls_and_another_takes_over_when_it_leaves() -> None:
    wakeups = WakeUps()
    poller = asyncio.create_task(wakeups.wait(0.05))
    others = [asyncio.create_task(wakeups.wait(0.05)) for _ in range(2)]
    assert await poller is False  # its poll is due
    await asyncio.sleep(0.02)
    assert not any(other.done() for other in others)  # they wait for a wake-up, not a poll of their own
    # The longest idle of the others polls from now on; the third still only waits.
    assert await asyncio.wait_for(others[0], 1) is False
    await asyncio.sleep(0.02)
    assert not others[1].done()
    assert await asyncio.wait_for(others[1], 1) is False  # the last one idle polls too
    assert wakeups.idle == 0


async def test_a_woken_poller_hands_the_poll_to_another_idle_worker() -> None:
    wakeups = WakeUps()
    poller, other = await idle(wakeups, 2, timeout=0.05)
    wakeups.set()
    assert await poller is True
    assert await asyncio.wait_for(other, 1) is False  # it polls now
