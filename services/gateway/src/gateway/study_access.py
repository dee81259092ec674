"""Which studies the built-in viewer may read: those `available` for an enrolment, briefly cached.

A study is open to the viewer under the PACS PatientID it was catalogued with, for each enrolment that shows it
`available` (gateway.views.viewable_patient_id: selected, moved completely, identity still linked, neither
withdrawn nor removed). Decisions are cached a few seconds; the Kafka handlers drop them all whenever they see an
enrolment change (applied or not: another gateway instance may have written it first), so a withdrawal or a
removal closes the study at once on every instance. A lookup that was running when the cache was dropped is
answered to its callers but not kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway import views
from gateway.read_model import EnrolmentRecord

DEFAULT_TTL_SECONDS: Final = 5.0
MAX_CACHED: Final = 10_000

# The enrolments whose selection names any of these studies.
Lookup = Callable[[Sequence[str]], Awaitable[list[EnrolmentRecord]]]


@dataclass(frozen=True, slots=True)
class Grant:
    """One enrolment that opens the study, and the PatientID the study must carry."""

    enrolment_id: str
    patient_id: str


def grants_in(records: Sequence[EnrolmentRecord], study_instance_uid: str) -> frozenset[Grant]:
    return frozenset(
        Grant(record.enrolment_id, patient_id)
        for record in records
        if (patient_id := views.viewable_patient_id(record, study_instance_uid)) is not None
    )


class StudyAccess:
    def __init__(
        self,
        lookup: Lookup,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[Grant]]] = {}
        self._pending: dict[str, asyncio.Task[frozenset[Grant]]] = {}
        self._generation = 0

    def forget(self) -> None:
        """Drops every decision (an enrolment changed)."""
        self._generation += 1
        self._cache.clear()
        self._pending.clear()

    def _cached(self, study_instance_uid: str) -> frozenset[Grant] | None:
        hit = self._cache.get(study_instance_uid)
        return hit[1] if hit is not None and hit[0] > self._clock() else None

    def _keep(self, generation: int, found: dict[str, frozenset[Grant]]) -> None:
        if generation != self._generation:
            return  # the read model changed while we looked: the answer may be stale, do not keep it
        if len(self._cache) + len(found) > MAX_CACHED:
            self._cache.clear()
        expires = self._clock() + self._ttl
        for study_instance_uid, grants in found.items():
            self._cache[study_instance_uid] = (expires, grants)

    async def grants(self, study_instance_uid: str) -> frozenset[Grant]:
        """The enrolments that open the study (empty: closed)."""
        cached = self._cached(study_instance_uid)
        if cached is not None:
            return cached
        task = self._pending.get(study_instance_uid)
        if task is None:
            # One lookup per study at a time: a viewer opening a study asks for hundreds of frames at once.
            task = asyncio.ensure_future(self._resolve(study_instance_uid, self._generation))
            self._pending[study_instance_uid] = task
        return await asyncio.shield(task)

    async def grants_of(self, study_instance_uids: Sequence[str]) -> dict[str, frozenset[Grant]]:
        """Grants of several studies with one lookup for those not cached (a study query's answer)."""
        found = {
            study_instance_uid: hit
            for study_instance_uid in dict.fromkeys(study_instance_uids)
            if (hit := self._cached(study_instance_uid)) is not None
        }
        missing = [
            study_instance_uid
            for study_instance_uid in dict.fromkeys(study_instance_uids)
            if study_instance_uid not in found
        ]
        if missing:
            generation = self._generation
            records = await self._lookup(missing)
            looked = {study_instance_uid: grants_in(records, study_instance_uid) for study_instance_uid in missing}
            self._keep(generation, looked)
            found.update(looked)
        return found

    async def _resolve(self, study_instance_uid: str, generation: int) -> frozenset[Grant]:
        try:
            found = grants_in(await self._lookup([study_instance_uid]), study_instance_uid)
            self._keep(generation, {study_instance_uid: found})
            return found
        finally:
            if generation == self._generation:
                self._pending.pop(study_instance_uid, None)
