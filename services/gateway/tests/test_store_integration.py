"""The read model's writes on the real local store (FerretDB): patches of one document that arrive together are
written in one guarded write, and a stale patch among them is still refused alone; a stored document that lost a
field is an error when read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from gateway.projection import ENROLMENTS, MEETINGS, Patch, patches
from gateway.read_model import StoredDocumentError
from gateway.settings import Settings
from gateway.store import BATCHED_WRITES, ReadModelStore, distinct_parts
from proxymage_shared.mongo import create_mongo_client
from proxymage_shared.settings import load_settings

from .test_projection import ENROLMENT, UIDS, catalogue, enrolled, identity, status, withdrawn

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(stack_env: dict[str, str], unique: str) -> AsyncIterator[ReadModelStore]:
    settings = load_settings(Settings, mongo_database=f"it_gw_store_{unique}")
    client = create_mongo_client(settings.mongo_url.get_secret_value())
    try:
        yield ReadModelStore(client[settings.database_name()])
    finally:
        await client.drop_database(settings.database_name())
        await client.close()


def batched() -> float:
    return BATCHED_WRITES._value.get()


def enrolment_patch(event_patches: list[Patch]) -> Patch:
    return next(patch for patch in event_patches if patch.collection == ENROLMENTS)


async def test_the_first_parts_of_an_enrolment_arriving_together_cost_two_writes(store: ReadModelStore) -> None:
    first = enrolled(1, "ANNA")
    parts = [
        enrolment_patch(patches(first)),
        enrolment_patch(patches(identity(2, first, "matched"))),
        enrolment_patch(patches(catalogue(3, UIDS))),
    ]
    before = batched()
    records = await asyncio.gather(*(store.apply(patch) for patch in parts))
    assert all(record is not None for record in records)
    assert batched() == before + 1  # the first alone, the two that arrived during it together
    stored = await store.enrolment(ENROLMENT)
    assert stored is not None
    assert stored.enrolment is not None
    assert stored.enrolment.patient.first_name == "ANNA"
    assert stored.identity is not None
    assert stored.identity.status == "matched"
    assert stored.catalogue is not None
    assert [row.study_instance_uid for row in stored.catalogue.studies] == list(UIDS)


async def test_a_stale_patch_in_a_batch_is_refused_and_the_others_written(store: ReadModelStore) -> None:
    first = enrolled(1, "ANNA")
    newer = enrolled(60, "ANNE")
    assert await store.apply(enrolment_patch(patches(newer))) is not None
    stale = enrolment_patch(patches(first))  # older than what is stored
    fresh = [
        enrolment_patch(patches(withdrawn(70, "autre RCP"))),
        enrolment_patch(patches(status(71, UIDS[0], 1, "queued"))),
    ]
    before = batched()
    held = asyncio.create_task(store.apply(enrolment_patch(patches(catalogue(72, UIDS)))))
    await asyncio.sleep(0)  # the catalogue goes first, alone; the three below wait for it and go together
    results = await asyncio.gather(*(store.apply(patch) for patch in (stale, *fresh)))
    assert await held is not None
    assert results[0] is None  # stale: refused, as alone
    assert all(result is not None for result in results[1:])
    assert batched() == before  # the guarded batch did not apply; each was then written on its own
    stored = await store.enrolment(ENROLMENT)
    assert stored is not None
    assert stored.enrolment is not None
    assert stored.enrolment.patient.first_name == "ANNE"
    assert stored.withdrawal is not None
    assert stored.withdrawal.reason == "autre RCP"
    assert UIDS[0].replace(".", "_") in stored.retrieval


async def test_two_stores_racing_to_create_a_document_both_write(store: ReadModelStore, unique: str) -> None:
    """Two gateway instances (two stores) write the first parts of a new document at once: both apply."""
    settings = load_settings(Settings, mongo_database=f"it_gw_store_{unique}")
    client = create_mongo_client(settings.mongo_url.get_secret_value())
    try:
        other = ReadModelStore(client[settings.database_name()])
        first = enrolled(1, "ANNA")
        mine = [enrolment_patch(patches(first)), enrolment_patch(patches(identity(2, first, "matched")))]
        theirs = [enrolment_patch(patches(catalogue(3, UIDS))), enrolment_patch(patches(withdrawn(4)))]
        results = await asyncio.gather(
            *(store.apply(patch) for patch in mine), *(other.apply(patch) for patch in theirs)
        )
        assert all(result is not None for result in results)
        stored = await store.enrolment(ENROLMENT)
        assert stored is not None
        assert None not in (stored.enrolment, stored.identity, stored.catalogue, stored.withdrawal)
    finally:
        await client.close()


def test_parts_that_overlap_are_never_written_together() -> None:
    first = enrolled(1, "ANNA")
    meeting_details, member = (patch for patch in patches(first) if patch.collection == MEETINGS)
    other_meeting_details = next(p for p in patches(enrolled(2, "ANNE")) if p.path == "enrolment_details")
    assert distinct_parts([(meeting_details, member)])
    assert not distinct_parts([(meeting_details, member), (other_meeting_details, None)])  # same part twice
    retrieval = enrolment_patch(patches(status(5, UIDS[0], 1, "queued")))
    whole = Patch(ENROLMENTS, ENROLMENT, "retrieval", "9", {}, "study-status")
    assert not distinct_parts([(retrieval, None), (whole, None)])  # one part inside another
    similar = Patch(ENROLMENTS, ENROLMENT, f"{retrieval.path}9", "9", {}, "study-status")
    assert distinct_parts([(retrieval, None), (similar, None)])  # a shared prefix is not a part inside another


async def test_a_stored_document_missing_a_field_is_an_error_when_read_or_written(store: ReadModelStore) -> None:
    first = enrolled(1, "ANNA")
    assert await store.apply(enrolment_patch(patches(first))) is not None
    enrolments = store._collections[ENROLMENTS]
    await enrolments.update_one({"_id": ENROLMENT}, {"$unset": {"enrolment.consent": ""}})  # as if renamed
    with pytest.raises(StoredDocumentError, match=r"enrolment\.consent: Field required") as refused:
        await store.enrolment(ENROLMENT)
    assert "ANNA" not in str(refused.value)
    # The Kafka handler's write applies, then the document read back is refused: permanent (dead-lettered).
    with pytest.raises(StoredDocumentError):
        await store.apply(enrolment_patch(patches(identity(2, first, "matched"))))
