"""The association budget without servers: which slot may be taken (fake clock), and the budget's waiting,
renewal and release over the in-memory store."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import socket

import pytest
from proxymage_dev.testing import peak_inside
from proxymage_shared.dicom import DicomClient, DicomTimeouts, DicomUnavailableError, echo_check, study_query
from proxymage_shared.dicom import client as dicom_client
from proxymage_shared.dicom.budget import (
    AssociationBudget,
    AssociationBudgetBusyError,
    BudgetOptions,
    MemorySlots,
    SlotState,
    choose_slot,
    may_take,
    slot_ids,
)
from proxymage_shared.settings import DicomPeer

T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=15)


class FakeClock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def test_slots_of_a_budget_are_named_after_the_peer() -> None:
    assert slot_ids("MIRC", 3) == ["MIRC#0", "MIRC#1", "MIRC#2"]


def test_a_slot_may_be_taken_when_free_or_when_its_lease_has_expired() -> None:
    assert may_take(None, T0)
    assert may_take(SlotState(), T0)
    held = SlotState("token", T0 + LEASE)
    assert not may_take(held, T0)
    assert not may_take(held, T0 + LEASE - dt.timedelta(milliseconds=1))
    assert may_take(held, T0 + LEASE)  # the crashed holder's slot is free once its lease ends


def test_choose_slot_takes_the_first_free_slot_within_the_budget() -> None:
    states = {
        "MIRC#0": SlotState("a", T0 + LEASE),
        "MIRC#1": SlotState("b", T0 - dt.timedelta(seconds=1)),  # expired
        "MIRC#2": SlotState(),
        "VIEWER#0": SlotState(),  # another peer's budget
    }
    assert choose_slot(states, "MIRC", 3, T0) == "MIRC#1"
    states["MIRC#1"] = SlotState("c", T0 + LEASE)
    assert choose_slot(states, "MIRC", 3, T0) == "MIRC#2"
    states["MIRC#2"] = SlotState("d", T0 + LEASE)
    assert choose_slot(states, "MIRC", 3, T0) is None
    assert choose_slot(states, "MIRC", 2, T0) is None  # a lowered budget never uses the slots above it
    assert choose_slot(states, "MIRC", 4, T0) == "MIRC#3"  # a slot not stored yet is free


async def test_take_renew_release_with_a_fake_clock() -> None:
    clock = FakeClock()
    store = MemorySlots()
    first = await store.take("MIRC", 1, "a", "p1", clock(), clock() + LEASE)
    assert first == "MIRC#0"
    assert await store.take("MIRC", 1, "b", "p2", clock(), clock() + LEASE) is None
    clock.advance(10)
    assert await store.renew("MIRC#0", "a", clock() + LEASE)  # held until T0 + 25 s now
    clock.advance(10)
    assert await store.take("MIRC", 1, "b", "p2", clock(), clock() + LEASE) is None
    clock.advance(5)  # the holder stopped renewing (it crashed): its lease ends
    assert await store.take("MIRC", 1, "b", "p2", clock(), clock() + LEASE) == "MIRC#0"
    assert not await store.renew("MIRC#0", "a", clock() + LEASE)  # the old holder cannot get it back
    await store.release("MIRC#0", "a")  # nor free it
    assert store.held(clock()) == ["MIRC#0"]
    await store.release("MIRC#0", "b")
    assert store.held(clock()) == []


def _budget(store: MemorySlots, **options: float) -> AssociationBudget:
    lease = options.pop("lease", 15.0)
    return AssociationBudget(
        store,
        process="test",
        options=BudgetOptions(lease=dt.timedelta(seconds=lease), **options),
        rng=random.Random(7),
    )


async def test_never_more_than_size_holders_across_budgets_sharing_a_store() -> None:
    store = MemorySlots()
    budgets = [_budget(store), _budget(store), _budget(store)]  # three processes
    done, peak = await peak_inside(lambda k: budgets[k % 3].slot("MIRC", 3), 24, 0.01)
    assert done == 24
    assert peak == 3
    assert store.held(dt.datetime.now(dt.UTC)) == []


async def test_a_waiter_gets_the_slot_released_in_its_process() -> None:
    budget = _budget(MemorySlots())
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with budget.slot("MIRC", 1):
            order.append("held")
            await release.wait()
        order.append("released")

    async def waiter() -> None:
        async with budget.slot("MIRC", 1):
            order.append("waiter in")

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0.05)
    assert order == ["held"]
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 2)
    assert order == ["held", "released", "waiter in"]


async def test_a_full_budget_fails_after_the_bounded_wait() -> None:
    budget = _budget(MemorySlots(), wait_seconds=0.1)
    async with budget.slot("MIRC", 1):
        started = asyncio.get_running_loop().time()
        with pytest.raises(AssociationBudgetBusyError):
            async with budget.slot("MIRC", 1):
                pytest.fail("two holders of a budget of one")
        waited = asyncio.get_running_loop().time() - started
    assert 0.1 <= waited < 1.0
    async with budget.slot("MIRC", 1):  # free again once released
        pass


async def test_a_held_slot_is_renewed_while_its_association_lives() -> None:
    store = MemorySlots()
    mine, other = _budget(store, lease=0.3), _budget(store, lease=0.3, wait_seconds=0.05)
    async with mine.slot("MIRC", 1):
        await asyncio.sleep(0.8)  # more than twice the lease: only renewals keep it
        with pytest.raises(AssociationBudgetBusyError):
            async with other.slot("MIRC", 1):
                pytest.fail("a renewed slot was taken over")
    async with other.slot("MIRC", 1):
        pass


async def test_a_cancelled_holder_leaves_its_slot_to_lapse() -> None:
    clock = FakeClock(dt.datetime.now(dt.UTC))
    store = MemorySlots()
    options = BudgetOptions(lease=LEASE, wait_seconds=0.05)
    budget = AssociationBudget(store, process="test", options=options, clock=clock)
    entered = asyncio.Event()

    async def association() -> None:
        async with budget.slot("MIRC", 1):
            entered.set()
            await asyncio.sleep(60)  # its thread would go on after the cancellation

    task = asyncio.create_task(association())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(AssociationBudgetBusyError):  # still counted: the association may still be open
        async with budget.slot("MIRC", 1):
            pass
    clock.advance(LEASE.total_seconds())
    async with budget.slot("MIRC", 1):  # lapsed with its lease
        pass


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_the_dicom_client_frees_its_slot_when_the_association_fails() -> None:
    store = MemorySlots()
    peer = DicomPeer(ae_title="MIRC", host="127.0.0.1", port=_closed_port(), max_associations=1)
    client = DicomClient("PM_TEST", peer, timeouts=DicomTimeouts(connection=1), budget=_budget(store))
    try:
        with pytest.raises(DicomUnavailableError):
            await client.find_studies(study_query(study_instance_uid="1.2.3"))
        assert store.held(dt.datetime.now(dt.UTC)) == []
        assert list(store.states) == ["MIRC#0"]  # the association held MIRC's only slot
    finally:
        client.close()


async def test_a_probe_finding_the_budget_full_reports_the_peer_busy_not_down(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe's bounded wait for a slot (1 s, twice here) made short: the budget stays full either way.
    monkeypatch.setattr(dicom_client, "PROBE_SLOT_WAIT_SECONDS", 0.05)
    store = MemorySlots()
    now = dt.datetime.now(dt.UTC)
    await store.take("MIRC", 1, "a move", "another process", now, now + LEASE)
    peer = DicomPeer(ae_title="MIRC", host="127.0.0.1", port=_closed_port(), max_associations=1)
    client = DicomClient("PM_TEST", peer, timeouts=DicomTimeouts(connection=1), budget=_budget(store))
    try:
        assert await echo_check(client)() is True  # no association opened: the budget is full
        with pytest.raises(AssociationBudgetBusyError):
            await client.echo()
    finally:
        client.close()


async def test_a_move_is_told_started_only_once_a_slot_is_held() -> None:
    """The fetcher counts a move (and forgets an earlier verification) in `on_started`: never for a C-MOVE the
    full budget kept from being sent; before the association opens when a slot came."""
    store = MemorySlots()
    now = dt.datetime.now(dt.UTC)
    await store.take("MIRC", 1, "a move", "another process", now, now + LEASE)
    peer = DicomPeer(ae_title="MIRC", host="127.0.0.1", port=_closed_port(), max_associations=1)
    client = DicomClient("PM_TEST", peer, timeouts=DicomTimeouts(connection=1), budget=_budget(store, wait_seconds=0.2))
    told: list[list[str]] = []

    async def started() -> None:
        told.append(store.held(dt.datetime.now(dt.UTC)))

    try:
        with pytest.raises(AssociationBudgetBusyError):
            await client.move_study("1.2.3", "VIEWER", on_started=started)
        assert told == []
        await store.release("MIRC#0", "a move")  # the other process's move ended
        with pytest.raises(DicomUnavailableError):  # nothing listens: the association fails after the slot came
            await client.move_study("1.2.3", "VIEWER", on_started=started)
        assert told == [["MIRC#0"]]
    finally:
        client.close()
