"""The association budget's MongoDB slots against the local stack's FerretDB (its own database per test)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from proxymage_dev.testing import peak_inside
from proxymage_shared.dicom.budget import AssociationBudget, AssociationBudgetBusyError, BudgetOptions
from proxymage_shared.dicom.budget_store import MongoSlots, service_budget
from proxymage_shared.mongo import Document, create_mongo_client
from proxymage_shared.settings import DicomServiceSettings, load_settings
from pymongo import AsyncMongoClient

LEASE = dt.timedelta(seconds=15)


@pytest.fixture
async def client(stack_env: dict[str, str]) -> AsyncIterator[AsyncMongoClient[Document]]:
    mongo = create_mongo_client(stack_env["PROXYMAGE_MONGO_URL"])
    yield mongo
    await mongo.close()


@pytest.fixture
async def slots(client: AsyncMongoClient[Document], unique: str) -> AsyncIterator[MongoSlots]:
    name = f"it_budget_{unique}"
    yield MongoSlots(client[name])
    await client.drop_database(name)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


async def test_slots_are_taken_renewed_released_and_lapse(slots: MongoSlots) -> None:
    now = _now()
    taken = [await slots.take("MIRC", 2, holder, "p", now, now + LEASE) for holder in ("a", "b", "c")]
    assert sorted(t for t in taken if t) == ["MIRC#0", "MIRC#1"]
    assert taken[2] is None  # the budget of two is used up
    assert await slots.take("VIEWER", 1, "v", "p", now, now + LEASE) == "VIEWER#0"  # each peer its own
    first = taken[0]
    assert first is not None
    assert await slots.renew(first, "a", now + 2 * LEASE)
    assert not await slots.renew(first, "someone else", now + 2 * LEASE)
    await slots.release(first, "someone else")  # frees nothing
    assert await slots.take("MIRC", 2, "c", "p", now, now + LEASE) is None
    await slots.release(first, "a")
    assert await slots.take("MIRC", 2, "c", "p", now, now + 2 * LEASE) == first
    # Nobody renews `b` (its process died): free once its lease has ended, for whoever asks then.
    later = now + LEASE
    assert await slots.take("MIRC", 2, "d", "p", later, later + LEASE) == taken[1]
    assert not await slots.renew(str(taken[1]), "b", later + LEASE)
    stored = await slots.collection.find_one({"_id": taken[1]})
    assert stored is not None
    assert (stored["peer"], stored["index"], stored["holder"], stored["process"]) == ("MIRC", 1, "d", "p")


async def test_budgets_of_several_processes_never_exceed_the_size(slots: MongoSlots) -> None:
    # Three "processes": each its own budget object and its own MongoSlots, sharing the database.
    budgets = [
        AssociationBudget(
            MongoSlots(slots.collection.database), process=f"p{k}", options=BudgetOptions(lease=LEASE, wait_seconds=30)
        )
        for k in range(3)
    ]
    assert await peak_inside(lambda k: budgets[k % 3].slot("MIRC", 3), 18, 0.05) == (18, 3)
    held = await slots.collection.count_documents({"holder": {"$ne": None}})
    assert held == 0


async def test_the_service_budget_waits_bounded_then_fails_as_transient(
    client: AsyncMongoClient[Document], slots: MongoSlots
) -> None:
    settings = load_settings(
        DicomServiceSettings,
        service_name="budget-test",
        pacs_budget_database=slots.collection.database.name,
        pacs_budget_wait_seconds=0.3,
    )
    budget = service_budget(settings, client)
    async with budget.slot("MIRC", 1) as held:
        assert held == "MIRC#0"
        stored = await slots.collection.find_one({"_id": "MIRC#0"})
        assert stored is not None
        assert stored["process"].startswith("budget-test@")
        with pytest.raises(AssociationBudgetBusyError):
            async with budget.slot("MIRC", 1):
                pytest.fail("two holders of a budget of one")
