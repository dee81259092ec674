"""Which studies the built-in viewer may read: those `available` for an enrolment, briefly cached.

A study is open to the viewer under the PACS PatientID it was catalogued with, for each enrolment that shows it
`available` (gateway.views.viewable_patient_id: selected, moved completely, identity still linked, neither
withdrawn nor removed). Decisions are cached a few seconds; the projector drops them all whenever it sees an
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

from proxymage_shared.mongo import Document

from gateway import views

DEFAULT_TTL_SECONDS: Final = 5.0
MAX_CACHED: Final = 10_000

# The enrolments whose selection names any of these studies.
Lookup = Callable[[Sequence[str]], Awaitable[list[Document]]]


@dataclass(frozen=True, slots=True)
class Grant:
    """One enrolment that opens the study, and the PatientID the study must carry."""

    enrolment_id: str
    patient_id: str


def grants_in(documents: Sequence[Document], uid: str) -> frozenset[Grant]:
    return frozenset(
        Grant(str(document["_id"]), patient_id)
        for document in documents
        if (patient_id := views.viewable_patient_id(document, uid)) is not None
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

    def _cached(self, uid: str) -> frozenset[Grant] | None:
        hit = self._cache.get(uid)
        return hit[1] if hit is not None and hit[0] > self._clock() else None

    def _keep(self, generation: int, found: dict[str, frozenset[Grant]]) -> None:
        if generation != self._generation:
            return  # the read model changed while we looked: the answer may be stale, do not keep it
        if len(self._cache) + len(found) > MAX_CACHED:
            self._cache.clear()
        expires = self._clock() + self._ttl
        for uid, grants in found.items():
            self._cache[uid] = (expires, grants)

    async def grants(self, uid: str) -> frozenset[Grant]:
        """The enrolments that open the study (empty: closed)."""
        cached = self._cached(uid)
        if cached is not None:
            return cached
        task = self._pending.get(uid)
        if task is None:
            # One lookup per study at a time: a viewer opening a study asks for hundreds of frames at once.
            task = asyncio.ensure_future(self._resolve(uid, self._generation))
            self._pending[uid] = task
        return await asyncio.shield(task)

    async def grants_of(self, uids: Sequence[str]) -> dict[str, frozenset[Grant]]:
        """Grants of several studies with one lookup for those not cached (a study query's answer)."""
        found = {uid: hit for uid in dict.fromkeys(uids) if (hit := self._cached(uid)) is not None}
        missing = [uid for uid in dict.fromkeys(uids) if uid not in found]
        if missing:
            generation = self._generation
            documents = await self._lookup(missing)
            looked = {uid: grants_in(documents, uid) for uid in missing}
            self._keep(generation, looked)
            found.update(looked)
        return found

    async def _resolve(self, uid: str, generation: int) -> frozenset[Grant]:
        try:
            found = grants_in(await self._lookup([uid]), uid)
            self._keep(generation, {uid: found})
            return found
        finally:
            if generation == self._generation:
                self._pending.pop(uid, None)
