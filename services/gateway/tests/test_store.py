"""The store's write rules without a server: a lost insert race is told by the shared rule, and a write that keeps
losing ends in the shared transient `WriteConflictError` (`proxymage_shared.idempotency`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from gateway.projection import ENROLMENTS, patches
from gateway.store import ReadModelStore
from proxymage_shared.errors import TransientError, WriteConflictError
from proxymage_shared.idempotency import WRITE_ATTEMPTS
from pymongo.errors import OperationFailure

from .test_projection import enrolled


@dataclass
class RacingCollection:
    """Every conditional upsert fails on a duplicate `_id` (`code`), and the document read back never holds the part:
    another writer keeps inserting the document first, as far as the store can tell."""

    code: int
    message: str = "E11000 duplicate key error"
    writes: int = 0

    async def find_one_and_update(self, *_: object, **__: object) -> None:
        self.writes += 1
        raise OperationFailure(self.message, code=self.code)

    async def find_one(self, *_: object) -> dict[str, object]:
        return {"_id": "enr-1"}


@pytest.mark.parametrize(("code", "message"), [(11000, "E11000"), (11001, "E11001"), (1, "duplicate key value")])
async def test_a_write_that_keeps_losing_the_race_is_a_transient_write_conflict(code: int, message: str) -> None:
    collection = RacingCollection(code, message)
    store = ReadModelStore({ENROLMENTS: collection, "meetings": None, "rcps": None, "audit": None})  # type: ignore[arg-type]
    patch = next(patch for patch in patches(enrolled(1, "A")) if patch.collection == ENROLMENTS)
    with pytest.raises(WriteConflictError, match=r"enrolments document 'enr-1' \(enrolment\) kept changing") as lost:
        await store.apply(patch)
    assert isinstance(lost.value, TransientError)  # the Kafka handler tries the event again
    assert collection.writes == WRITE_ATTEMPTS


async def test_another_write_failure_is_not_taken_for_a_race() -> None:
    collection = RacingCollection(2, "BadValue")
    store = ReadModelStore({ENROLMENTS: collection, "meetings": None, "rcps": None, "audit": None})  # type: ignore[arg-type]
    patch = next(patch for patch in patches(enrolled(1, "A")) if patch.collection == ENROLMENTS)
    with pytest.raises(OperationFailure):
        await store.apply(patch)
    assert collection.writes == 1
