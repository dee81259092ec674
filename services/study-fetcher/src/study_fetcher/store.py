"""The fetcher's state in its own MongoDB database (`proxymage_fetcher`): four collections.

- `jobs`: one document per (enrolment, StudyInstanceUID), `_id` = the job's key, "<enrolment_id>|<uid>"
  (`ports.job_key_of`; a BusinessId cannot contain `|`), the StudyInstanceUID in `study_uid`. The domain
  fields (state, version, attempts...) plus scheduling and ownership:
  `due_at` (when a worker may start it), `lease_owner`/`lease_until` (the worker running it), `revision`
  (every write is conditional on it: optimistic concurrency without transactions), `unpublished` (the
  current version is not yet acknowledged by Kafka: a crash between the write and the publication is
  repaired by re-publishing, the single-document version of an outbox), `waiting_for` (the peer a waiting
  job waits for, "mirc" or "viewer", `domain.waiting_for`; indexed, so that the jobs to bring forward when the
  peer answers again are found without a scan; absent on jobs written before it: unknown, they keep their
  backoff).
- `schedule`: the claimable work, so that a worker's poll reads it rather than every job (finished ones
  included). One document per job a worker may claim now or later (`_id` = the job's key) with a lower bound
  of the job's `due_at` and `lease_until`; see `Schedule` for the rules that keep it one.
- `transfers`: one document per StudyInstanceUID (its `_id`): the lease of the worker moving it (so two enrolments
  selecting the same study cause one move), a move counter and the last verified complete move.
- `enrolments`: what the catalogue needs (linked PACS patients, meeting date), the current catalogue
  (`catalogue_studies`, each StudyInstanceUID in `uid`) and the latest selection, identity and refresh
  handled, so stale or replayed events change nothing.

Retention (`study_fetcher.retention`): the enrolments past their meeting date's retention are found by one
query on `enrolments.meeting_date` (ISO text, indexed); their jobs by `enrolment_id`. A job being deleted is
first `retired`: it no longer keeps its study in the viewer store, and no worker starts it.

Everything is a single-document insert or conditional update, on MongoDB and FerretDB alike (no `$expr`,
no TTL index, no positional updates; unique keys only through `_id` and `insert_one`), with the mechanisms of
`proxymage_shared.idempotency`. The stores return the typed values of `study_fetcher.ports`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar
from uuid import uuid4

from proxymage_shared.events import PacsPatientRef
from proxymage_shared.idempotency import LOST_RACE, EventStamp, LostRace, is_duplicate_key, until_written
from proxymage_shared.mongo import Document
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from study_fetcher.domain import Job, Owner, Progress, State, waiting_for
from study_fetcher.domain import due_at as _due_at
from study_fetcher.lifecycle import Lifecycle, LifecycleStatus, advance
from study_fetcher.ports import (
    Acceptance,
    AfterSave,
    Enrolment,
    IdentityOutcome,
    ListedStudy,
    StoredJob,
    Transfer,
    job_key_of,
    owner_of,
)

__all__ = ["Acceptance", "Enrolment", "EnrolmentStore", "JobStore", "StoredJob", "Transfer", "TransferStore"]

_T = TypeVar("_T")

# "Not leased": a lease that expired long ago (comparisons with $lte need a value, not null).
FREE: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # fixed width: text order is time order


async def _inserted(collection: AsyncCollection[Document], doc: Document) -> bool:
    """Inserts `doc`; False if its `_id` is taken (a concurrent or earlier writer)."""
    try:
        await collection.insert_one(doc)
    except OperationFailure as error:
        if not is_duplicate_key(error):
            raise
        return False
    return True


def _opt_time(value: Any) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else None


def _job_fields(job: Job) -> Document:
    return {
        "state": job.state,
        "version": job.version,
        "attempts": job.attempts,
        "next_attempt_at": job.next_attempt_at,
        "deadline": job.deadline,
        "reason": job.reason,
        "progress": None if job.progress is None else {"done": job.progress.done, "total": job.progress.total},
        "selected_at": job.selected_at,
        "removed_at": job.removed_at,
        "reason_code": job.reason_code,
        "held": job.held,
        "owner": list(job.owner) if job.owner is not None else None,
        "waiting_for": waiting_for(job),
    }


def _owner(value: Any) -> Owner | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return (str(value[0]), None if value[1] is None else str(value[1]))
    return None


def _stored(doc: Document) -> StoredJob:
    progress = doc.get("progress")
    state: State = doc["state"]
    job = Job(
        state=state,
        version=int(doc["version"]),
        attempts=int(doc["attempts"]),
        next_attempt_at=_opt_time(doc.get("next_attempt_at")),
        deadline=_opt_time(doc.get("deadline")),
        reason=doc.get("reason"),
        progress=Progress(int(progress["done"]), int(progress["total"])) if progress else None,
        selected_at=doc["selected_at"].astimezone(dt.UTC),
        removed_at=_opt_time(doc.get("removed_at")),
        reason_code=doc.get("reason_code"),
        held=bool(doc.get("held", False)),
        owner=_owner(doc.get("owner")),
    )
    return StoredJob(
        job_key=doc["_id"],
        enrolment_id=doc["enrolment_id"],
        study_instance_uid=doc["study_uid"],
        job=job,
        revision=int(doc["revision"]),
        lease_owner=doc.get("lease_owner"),
        lease_until=doc["lease_until"].astimezone(dt.UTC),
        updated_at=doc["updated_at"].astimezone(dt.UTC),
    )


CLAIMABLE_STATES: Final = ("queued", "not_yet_available", "retrieving")


def _claimable(now: dt.datetime) -> Document:
    """The claim's conditions on a job document, besides its `_id`."""
    return {"state": {"$in": list(CLAIMABLE_STATES)}, **_due_by(now), "retired": {"$ne": True}}


def _due_by(moment: Any) -> Document:
    return {"due_at": {"$lte": moment}, "lease_until": {"$lte": moment}}


def _slot(doc: Document | None) -> tuple[dt.datetime, dt.datetime] | None:
    """(due_at, lease_until) of a job a worker may claim now or later; None for one it never will (gone,
    final, held, retired)."""
    if doc is None or doc.get("retired") is True or doc.get("state") not in CLAIMABLE_STATES:
        return None
    due_at, lease_until = doc.get("due_at"), doc.get("lease_until")
    if not isinstance(due_at, dt.datetime) or not isinstance(lease_until, dt.datetime):
        return None
    return due_at, lease_until


# The documents recording the one-time migrations at start: jobs of a database created before `schedule`
# existed were scheduled; entries due later were moved out of `schedule` (their `_id`s have no `|`, so they are
# no job's key, and no `due_at`, so no claim or promotion reads them).
_SCHEDULED_MARK: Final = "scheduled-existing-jobs"
_SPLIT_MARK: Final = "split-later-entries"
# In `schedule_later`: a lower bound of the claim time of every entry there (`at`), so that a claim knows
# with one read by `_id` whether some entry must be promoted.
_EARLIEST: Final = "earliest"
# Entries whose claim time is further than this from now wait in `schedule_later`, so that a claim reads
# the work due about now only, however many jobs wait for a retry later.
HORIZON: Final = dt.timedelta(seconds=30)


def _claim_time(due_at: dt.datetime, lease_until: dt.datetime) -> dt.datetime:
    return max(due_at, lease_until)


class _Entries:
    """One collection of schedule entries: `_id` = the job's key, `due_at`, `lease_until`, `token` (changed by
    every write, so that a write based on an earlier read can be made conditional on nothing having changed)."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def get(self, job_key: str) -> Document | None:
        return await self.collection.find_one({"_id": job_key})

    async def lower(self, job_key: str, bounds: dict[str, dt.datetime], *, create: bool) -> None:
        """Brings the entry's bounds down to those given (a missing entry is created, the missing bound FREE)."""
        update: Document = {"$min": bounds, "$set": {"token": uuid4().hex}}
        if missing := {name: FREE for name in ("due_at", "lease_until") if name not in bounds}:
            update["$setOnInsert"] = missing
        await self.collection.update_one({"_id": job_key}, update, upsert=create)

    async def put(self, entry: Document | None, job_key: str, slot: tuple[dt.datetime, dt.datetime]) -> bool:
        """Sets the entry to `slot`, if it is still as `entry` was read (None: absent). False otherwise."""
        if entry is None:
            return await _inserted(
                self.collection, {"_id": job_key, "due_at": slot[0], "lease_until": slot[1], "token": uuid4().hex}
            )
        update = {"$set": {"due_at": slot[0], "lease_until": slot[1], "token": uuid4().hex}}
        return (await self.collection.update_one(_unchanged(entry), update)).matched_count == 1

    async def drop(self, entry: Document | None) -> bool:
        """Deletes the entry, if it is still as `entry` was read. False if it changed."""
        if entry is None:
            return True
        return (await self.collection.delete_one(_unchanged(entry))).deleted_count == 1

    async def due_by(self, moment: dt.datetime) -> list[Document]:
        return [doc async for doc in self.collection.find(_due_by(moment))]


def _unchanged(entry: Document) -> Document:
    return {"_id": entry["_id"], "token": entry.get("token")}


class Schedule:
    """The claimable work, in two collections: `schedule`, the entries claimable within `HORIZON` (what a claim
    reads), and `schedule_later`, the others, promoted to `schedule` by the claims as their time comes.

    An entry is, per claimable job, a lower bound of when it can be claimed (`due_at`, `lease_until`). A claim
    picks the earliest entry due in `schedule`, then takes the job by `_id` with the claim's full conditions:
    an entry that is early, or whose job is gone or never claimable again, only costs a rejected write, after
    which the entry is `repair`ed. What must never happen is a claimable job without an entry, or with entries
    all later than the job, or an entry in `schedule_later` not promoted by its time, so:
    - a write that may make a job claimable sooner (insert, save, release, postpone, wake) first `lower`s an
      entry (`$min`, created if missing; into `schedule_later` only if the new bounds are beyond the horizon):
      a crash after it leaves an early entry, which is harmless;
    - after the write, the entries are `settle`d to the job's exact values (in the collection its time
      belongs to; the other entry deleted), each guarded by the entry's `token` read before the job was: a
      concurrent settle working from an older read of the job then fails its guard, and a settle that fails
      its own falls back to `lower`, so the last write is never stale;
    - writes that only delay a job (claims, retire) leave the entries early;
    - `schedule_later`'s `earliest` document is lowered to the lowest bound written (the entry's time after a
      `$min` is never below it) before any entry there is written (a crash then leaves it early) and again
      after (a promotion that computed it again meanwhile, without that entry, then fails its guard or is
      corrected), so it is never above an entry's time; a claim reads it by `_id` and, once it is within the
      horizon, promotes the entries due and computes it again (guarded by its token).
    A job is then claimable at most a poll after its time, and a claim reads only the entries due about now.
    """

    def __init__(
        self,
        database: AsyncDatabase[Document],
        jobs: AsyncCollection[Document],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._soon = _Entries(database["schedule"])
        self._later = _Entries(database["schedule_later"])
        self._jobs = jobs
        self._clock = clock

    async def ensure_indexes(self) -> None:
        await self._soon.collection.create_index([("due_at", ASCENDING)])
        soon = self._soon.collection
        if await soon.find_one({"_id": _SCHEDULED_MARK}) is None:
            # A database from before `schedule`: every job that can be claimed gets its entry, once (replicas
            # starting together both do it: `lower` is idempotent).
            cursor = self._jobs.find(
                {"state": {"$in": list(CLAIMABLE_STATES)}, "due_at": {"$ne": None}, "retired": {"$ne": True}},
                {"due_at": 1, "lease_until": 1, "state": 1},
            )
            async for doc in cursor:
                if (slot := _slot(doc)) is not None:
                    await self.lower(str(doc["_id"]), due_at=slot[0], lease_until=slot[1])
            await soon.update_one({"_id": _SCHEDULED_MARK}, {"$set": {"done": True}}, upsert=True)
        if await soon.find_one({"_id": _SPLIT_MARK}) is None:
            # A database from before `schedule_later`: the entries due later move there, once.
            beyond = self._clock() + HORIZON
            async for entry in soon.find({"due_at": {"$ne": None}}):
                if _claim_time(entry["due_at"], entry["lease_until"]) > beyond:
                    await self.settle(str(entry["_id"]))
            await soon.update_one({"_id": _SPLIT_MARK}, {"$set": {"done": True}}, upsert=True)

    async def earliest_due(self, now: dt.datetime, skip: list[str]) -> Document | None:
        await self.promote(now)
        return await self._soon.collection.find_one(
            {**_due_by(now), "_id": {"$nin": skip}}, sort=[("due_at", ASCENDING)]
        )

    async def promote(self, now: dt.datetime) -> None:
        """Moves the entries of `schedule_later` claimable within the horizon of `now` to `schedule`."""
        until = now + HORIZON
        earliest = await self._later.get(_EARLIEST)
        if earliest is None or earliest["at"] > until:
            return
        for entry in await self._later.due_by(until):
            await self._soon.lower(
                str(entry["_id"]), {"due_at": entry["due_at"], "lease_until": entry["lease_until"]}, create=True
            )
            await self._later.drop(entry)  # changed meanwhile: it stays, and `earliest` is below it
        times = [
            _claim_time(doc["due_at"], doc["lease_until"])
            async for doc in self._later.collection.find({"due_at": {"$ne": None}}, {"due_at": 1, "lease_until": 1})
        ]
        # No entry left: a time no claim reaches, so that the next write there lowers it.
        at = min(times, default=dt.datetime.max.replace(tzinfo=dt.UTC))
        await self._later.collection.update_one(_unchanged(earliest), {"$set": {"at": at, "token": uuid4().hex}})

    async def _lower_earliest(self, at: dt.datetime) -> None:
        await self._later.collection.update_one(
            {"_id": _EARLIEST}, {"$min": {"at": at}, "$set": {"token": uuid4().hex}}, upsert=True
        )

    async def _write_later(self, write: Callable[[], Awaitable[_T]], bound: dt.datetime) -> _T:
        """Runs a write of `schedule_later` whose entry's time is never below `bound`, keeping `earliest` right."""
        await self._lower_earliest(bound)
        try:
            return await write()
        finally:
            await self._lower_earliest(bound)

    def _is_later(self, moment: dt.datetime) -> bool:
        return moment > self._clock() + HORIZON

    async def lower(
        self,
        job_key: str,
        *,
        due_at: dt.datetime | None = None,
        lease_until: dt.datetime | None = None,
        create: bool = True,
    ) -> None:
        """Makes sure the job has an entry no later than the bounds given (the missing bound FREE), or, with
        `create=False`, lowers the entries it has."""
        bounds = {name: value for name, value in (("due_at", due_at), ("lease_until", lease_until)) if value}
        if not bounds:
            return
        if not create:
            await self._soon.lower(job_key, bounds, create=False)
            if await self._later.get(job_key) is not None:
                await self._write_later(lambda: self._later.lower(job_key, bounds, create=False), min(bounds.values()))
            return
        if self._is_later(max(bounds.values())):
            await self._write_later(lambda: self._later.lower(job_key, bounds, create=True), min(bounds.values()))
        else:
            await self._soon.lower(job_key, bounds, create=True)

    async def repair(self, job_key: str, doc: Document | None, soon: Document | None, later: Document | None) -> bool:
        """Sets the job's entries to the job `doc` (read after the entries `soon` and `later` were): one entry,
        in the collection its time belongs to, or none if it is never claimable. False if an entry changed
        since it was read."""
        slot = _slot(doc)
        if slot is None:
            dropped_soon = await self._soon.drop(soon)
            return await self._later.drop(later) and dropped_soon
        if self._is_later(_claim_time(*slot)):
            placed = await self._write_later(lambda: self._later.put(later, job_key, slot), _claim_time(*slot))
            return placed and await self._soon.drop(soon)
        placed = await self._soon.put(soon, job_key, slot)
        return placed and await self._later.drop(later)

    async def settle(self, job_key: str, doc: Document | None = None, *, read: bool = True) -> None:
        """After a write of job `job_key`: its entries take the job's values (`doc` as written, or read again)."""
        soon, later = await self._soon.get(job_key), await self._later.get(job_key)
        if read:
            doc = await self._jobs.find_one({"_id": job_key})
        if await self.repair(job_key, doc, soon, later):
            return
        # A concurrent write changed an entry: make sure the job has one not later than it now is.
        if (slot := _slot(await self._jobs.find_one({"_id": job_key}))) is not None:
            await self.lower(job_key, due_at=slot[0], lease_until=slot[1])

    async def later_entry(self, job_key: str) -> Document | None:
        return await self._later.get(job_key)


class JobStore:
    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._jobs: AsyncCollection[Document] = database["jobs"]
        self._schedule = Schedule(database, self._jobs)

    async def ensure_indexes(self) -> None:
        await self._jobs.create_index([("due_at", ASCENDING)])
        await self._jobs.create_index([("study_uid", ASCENDING), ("state", ASCENDING)])
        await self._jobs.create_index([("enrolment_id", ASCENDING)])
        await self._jobs.create_index([("unpublished", ASCENDING), ("updated_at", ASCENDING)])
        await self._jobs.create_index([("waiting_for", ASCENDING)])
        await self._schedule.ensure_indexes()

    async def get(self, job_key: str) -> StoredJob | None:
        doc = await self._jobs.find_one({"_id": job_key})
        return _stored(doc) if doc else None

    async def of_enrolment(self, enrolment_id: str) -> list[StoredJob]:
        return [_stored(doc) async for doc in self._jobs.find({"enrolment_id": enrolment_id})]

    async def of_study(self, study_instance_uid: str) -> list[StoredJob]:
        return [_stored(doc) async for doc in self._jobs.find({"study_uid": study_instance_uid})]

    async def live_users(self, study_instance_uid: str, states: Iterable[str]) -> int:
        """Jobs in `states` that still need the study (a retired job, of an enrolment past its retention, not)."""
        return await self._jobs.count_documents(
            {"study_uid": study_instance_uid, "state": {"$in": list(states)}, "retired": {"$ne": True}}
        )

    async def any_of_study(self, study_instance_uid: str) -> bool:
        return await self._jobs.find_one({"study_uid": study_instance_uid}, {"_id": 1}) is not None

    async def waiting_for_peer(self, peer: str) -> list[StoredJob]:
        """The jobs waiting because `peer` was unreachable (`waiting_for`, indexed). Bringing one forward is a
        `save`, which moves its schedule entry from `schedule_later` to `schedule` like any earlier due time."""
        return [_stored(doc) async for doc in self._jobs.find({"waiting_for": peer})]

    async def retire(self, enrolment_id: str) -> None:
        """Marks the enrolment's jobs as leaving (retention): they no longer count as users of their study and
        are never started again, so a purge owed for their study runs even before they are deleted."""
        await self._jobs.update_many(
            {"enrolment_id": enrolment_id, "retired": {"$ne": True}}, {"$set": {"retired": True, "due_at": None}}
        )

    async def delete(self, job_key: str) -> None:
        await self._jobs.delete_one({"_id": job_key})
        await self._schedule.settle(job_key)

    async def insert(self, enrolment_id: str, study_instance_uid: str, job: Job, now: dt.datetime) -> StoredJob | None:
        """Creates the job; None if it exists already (a concurrent or earlier handler created it)."""
        doc: Document = {
            "_id": job_key_of(enrolment_id, study_instance_uid),
            "enrolment_id": enrolment_id,
            "study_uid": study_instance_uid,
            **_job_fields(job),
            "revision": 1,
            "due_at": _due_at(job, now, FREE),
            "lease_owner": None,
            "lease_until": FREE,
            "waiting": False,
            "unpublished": job.version > 0,
            "updated_at": now,
        }
        if doc["due_at"] is not None:
            await self._schedule.lower(doc["_id"], due_at=doc["due_at"], lease_until=FREE)
        if not await _inserted(self._jobs, doc):
            await self._schedule.settle(doc["_id"])
            return None
        await self._schedule.settle(doc["_id"], doc, read=False)
        return _stored(doc)

    async def save(
        self, stored: StoredJob, job: Job, now: dt.datetime, *, then: AfterSave | None = None
    ) -> StoredJob | None:
        """Writes `job` if nobody changed the document since `stored` was read; None otherwise (re-read). `then`
        runs once it is written, before the schedule's entries are settled: publishing the new version need not
        wait for them (a crash in between leaves an entry early, which is harmless, see `Schedule`)."""
        fields = {
            **_job_fields(job),
            "revision": stored.revision + 1,
            "due_at": _due_at(job, now, stored.lease_until),
            "updated_at": now,
        }
        if job.version != stored.job.version:
            fields["unpublished"] = True
        # Writing a job as running (its start, a move's progress) keeps its claim time, the later of `due_at`
        # and `lease_until`: its lease's end, which the write does not change (`lease_until` is not written,
        # `due_at` gets the lease's end as read, never later). It makes nothing claimable sooner: no `lower`.
        # A job already running has its entry settled to that lease (start, renewals): nothing to settle either,
        # which spares each progress update four of its five MongoDB commands.
        running = job.state == "retrieving" and not job.held
        lower = fields["due_at"] is not None and not running
        settle = not (running and stored.job.state == "retrieving" and not stored.job.held)
        if lower:
            await self._schedule.lower(stored.job_key, due_at=fields["due_at"])
        doc = await self._jobs.find_one_and_update(
            {"_id": stored.job_key, "revision": stored.revision},
            {"$set": fields},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            if lower:
                await self._schedule.settle(stored.job_key)  # our early entry, if we made one, is set right
            return None
        saved = _stored(doc)
        if then is not None:
            await then(saved)
        if settle and (fields["due_at"] is not None or _due_at(stored.job, now, stored.lease_until) is not None):
            # Settling reads the entries, then works from the job as read after them. Right after the write, the
            # written job is that read; once `then` ran (a publication, maybe slow), another writer may have
            # changed the job meanwhile: it is read again after the entries, as the guards require.
            if then is None:
                await self._schedule.settle(stored.job_key, doc, read=False)
            else:
                await self._schedule.settle(stored.job_key)
        return saved

    async def set_deadline(self, enrolment_id: str, deadline: dt.datetime) -> None:
        await self._jobs.update_many(
            {"enrolment_id": enrolment_id, "deadline": {"$ne": deadline}},
            {"$set": {"deadline": deadline}, "$inc": {"revision": 1}},
        )

    # --- work distribution ---------------------------------------------------------------------------------

    async def claim_due(self, owner: str, now: dt.datetime, lease: dt.timedelta) -> StoredJob | None:
        """Takes the most overdue job that no live worker holds (queued, waiting and due, or retrieving
        under an expired lease).

        The candidates come from `schedule` (live work only), earliest due first; each is taken by `_id` on
        the claim's full conditions, and an entry whose job does not meet them is repaired and skipped."""
        tried: list[str] = []
        while (entry := await self._schedule.earliest_due(now, tried)) is not None:
            job_key = str(entry["_id"])
            doc = await self._jobs.find_one_and_update(
                {"_id": job_key, **_claimable(now)},
                {"$set": {"lease_owner": owner, "lease_until": now + lease, "waiting": False}, "$inc": {"revision": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return _stored(doc)
            tried.append(job_key)
            later = await self._schedule.later_entry(job_key)
            await self._schedule.repair(job_key, await self._jobs.find_one({"_id": job_key}), entry, later)
        return None

    async def claim_companions(
        self, study_instance_uid: str, owner: str, now: dt.datetime, lease: dt.timedelta
    ) -> list[StoredJob]:
        """Takes every other unheld job waiting for the same study, due or not: one move serves them all."""
        claimed: list[StoredJob] = []
        candidates = self._jobs.find(
            {
                "study_uid": study_instance_uid,
                "state": {"$in": ["queued", "not_yet_available", "retrieving"]},
                # A held job is not admitted for its enrolment yet: never move a study on its behalf.
                "held": {"$ne": True},
                "lease_until": {"$lte": now},
                "retired": {"$ne": True},
            }
        )
        async for candidate in candidates:
            doc = await self._jobs.find_one_and_update(
                {
                    "_id": candidate["_id"],
                    "lease_until": {"$lte": now},
                    "held": {"$ne": True},
                    "retired": {"$ne": True},
                },
                {"$set": {"lease_owner": owner, "lease_until": now + lease, "waiting": False}, "$inc": {"revision": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if doc:
                claimed.append(_stored(doc))
        return claimed

    async def renew(self, job_keys: list[str], owner: str, until: dt.datetime) -> int:
        """Extends `owner`'s leases of `job_keys` (conditional on the owner); how many it still holds."""
        result = await self._jobs.update_many(
            {"_id": {"$in": job_keys}, "lease_owner": owner, "state": "retrieving"},
            {"$set": {"lease_until": until, "due_at": until}},
        )
        result_other = await self._jobs.update_many(
            {"_id": {"$in": job_keys}, "lease_owner": owner, "state": {"$ne": "retrieving"}},
            {"$set": {"lease_until": until}},
        )
        for job_key in job_keys:  # later bounds: not needed for correctness, they spare other workers rejected claims
            await self._schedule.settle(job_key)
        return result.matched_count + result_other.matched_count

    async def release(self, job_keys: list[str], owner: str) -> None:
        for job_key in job_keys:  # no longer leased, it is claimable no later than its due time: never without entry
            await self._schedule.lower(job_key, lease_until=FREE, create=False)
        await self._jobs.update_many(
            {"_id": {"$in": job_keys}, "lease_owner": owner}, {"$set": {"lease_owner": None, "lease_until": FREE}}
        )
        for job_key in job_keys:
            await self._schedule.settle(job_key)

    async def postpone(self, job_key: str, owner: str, due_at: dt.datetime) -> None:
        """Gives a claimed job back, to be looked at again at `due_at` or when its study's transfer ends."""
        await self._schedule.lower(job_key, due_at=due_at, lease_until=FREE)
        await self._jobs.update_one(
            {"_id": job_key, "lease_owner": owner},
            {"$set": {"lease_owner": None, "lease_until": FREE, "due_at": due_at, "waiting": True}},
        )
        await self._schedule.settle(job_key)

    async def wake_waiters(self, study_instance_uid: str, now: dt.datetime) -> None:
        waiting = self._jobs.find({"study_uid": study_instance_uid, "waiting": True}, {"_id": 1})
        for job_key in [str(doc["_id"]) async for doc in waiting]:
            await self._schedule.lower(job_key, due_at=now)
            await self._jobs.update_one({"_id": job_key, "waiting": True}, {"$set": {"due_at": now, "waiting": False}})
            await self._schedule.settle(job_key)

    # --- publication (outbox) -----------------------------------------------------------------------------

    async def mark_published(self, job_key: str, version: int) -> None:
        await self._jobs.update_one({"_id": job_key, "version": version}, {"$set": {"unpublished": False}})

    async def unpublished(self, older_than: dt.datetime, limit: int = 100) -> list[StoredJob]:
        cursor = self._jobs.find({"unpublished": True, "updated_at": {"$lte": older_than}}).limit(limit)
        return [_stored(doc) async for doc in cursor]


def _transfer(doc: Document) -> Transfer:
    verified = doc.get("verified_instances")
    return Transfer(
        study_instance_uid=str(doc["_id"]),
        lease_owner=doc.get("lease_owner"),
        lease_until=doc["lease_until"].astimezone(dt.UTC),
        moves=int(doc.get("moves") or 0),
        verified_instances=None if verified is None else int(verified),
        verified_at=_opt_time(doc.get("verified_at")),
        purge_pending=doc.get("purge_pending") is True,
    )


class TransferStore:
    """One document per study: who moves it now (lease), how many moves were made, the last verified one."""

    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._transfers: AsyncCollection[Document] = database["transfers"]

    async def claim(
        self, study_instance_uid: str, owner: str, now: dt.datetime, lease: dt.timedelta
    ) -> Transfer | None:
        """The study's transfer, leased to `owner`; None while another worker holds it."""
        doc = await self._transfers.find_one_and_update(
            {"_id": study_instance_uid, "lease_until": {"$lte": now}},
            {"$set": {"lease_owner": owner, "lease_until": now + lease}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return _transfer(doc)
        fresh: Document = {
            "_id": study_instance_uid,
            "lease_owner": owner,
            "lease_until": now + lease,
            "moves": 0,
            "verified_instances": None,
            "verified_at": None,
        }
        return _transfer(fresh) if await _inserted(self._transfers, fresh) else None

    async def renew(self, study_instance_uid: str, owner: str, until: dt.datetime) -> bool:
        """Extends `owner`'s lease; False when `owner` no longer holds it (another worker took the study over)."""
        result = await self._transfers.update_one(
            {"_id": study_instance_uid, "lease_owner": owner}, {"$set": {"lease_until": until}}
        )
        return result.matched_count == 1

    async def count_move(self, study_instance_uid: str, owner: str, now: dt.datetime) -> None:
        await self._transfers.update_one(
            {"_id": study_instance_uid, "lease_owner": owner},
            {
                "$inc": {"moves": 1},
                "$set": {"last_move_at": now, "moved_by": owner, "verified_instances": None, "verified_at": None},
            },
        )

    async def release(
        self, study_instance_uid: str, owner: str, *, verified_instances: int | None, now: dt.datetime
    ) -> None:
        fields: Document = {"lease_owner": None, "lease_until": FREE}
        if verified_instances is not None:
            fields.update({"verified_instances": verified_instances, "verified_at": now})
        await self._transfers.update_one({"_id": study_instance_uid, "lease_owner": owner}, {"$set": fields})

    async def forget_verification(self, study_instance_uid: str, owner: str) -> None:
        await self._transfers.update_one(
            {"_id": study_instance_uid, "lease_owner": owner},
            {"$set": {"verified_instances": None, "verified_at": None}},
        )

    async def get(self, study_instance_uid: str) -> Transfer | None:
        doc = await self._transfers.find_one({"_id": study_instance_uid})
        return _transfer(doc) if doc else None

    # --- purges owed to the viewer store (consent/enrolment withdrawn, corrected identity) ------------------

    async def request_purge(self, study_instance_uid: str, now: dt.datetime) -> None:
        """Remembers that the study must leave the viewer store once no live job uses it (durable: a purge
        that cannot run now, because a move holds the study or the viewer store is down, runs later)."""
        await self._transfers.update_one(
            {"_id": study_instance_uid},
            {
                "$set": {"purge_pending": True, "purge_requested_at": now},
                "$setOnInsert": {"lease_owner": None, "lease_until": FREE, "moves": 0, "verified_instances": None},
            },
            upsert=True,
        )

    async def forget(self, study_instance_uid: str, owner: str) -> None:
        """Deletes the study's document (no job uses it any more and no purge is owed): it is leased to
        `owner`, so no move of the study runs; a later move starts a fresh one."""
        await self._transfers.delete_one(
            {"_id": study_instance_uid, "lease_owner": owner, "purge_pending": {"$ne": True}}
        )

    async def purge_settled(self, study_instance_uid: str, owner: str) -> None:
        await self._transfers.update_one(
            {"_id": study_instance_uid, "lease_owner": owner}, {"$set": {"purge_pending": False}}
        )

    async def pending_purges(self, limit: int = 100) -> list[str]:
        cursor = self._transfers.find({"purge_pending": True}, {"_id": 1}).limit(limit)
        return [str(doc["_id"]) async for doc in cursor]


def enrolment_of(doc: Document) -> Enrolment:
    """The enrolment a stored document describes (its catalogue counts only if listed for the current
    identity outcome)."""
    meeting_date = doc.get("meeting_date")
    patients = tuple(PacsPatientRef(**patient) for patient in doc.get("pacs_patients") or ())
    status: LifecycleStatus = doc.get("identity_status") or "pending"
    listed = doc.get("catalogue_studies")
    catalogue: dict[str, Owner] | None = None if status in ("matched", "pending") else {}
    if (
        status == "matched"
        and isinstance(listed, list)
        and doc.get("catalogue_identity") == doc.get("identity_event_id")
    ):
        catalogue = {item["uid"]: (item["patient_id"], item.get("issuer")) for item in listed}
    return Enrolment(
        enrolment_id=doc["_id"],
        meeting_date=dt.date.fromisoformat(meeting_date) if meeting_date else None,
        pacs_patients=patients,
        catalogue_attempts=int(doc.get("catalogue_attempts") or 0),
        identity_event_id=doc.get("identity_event_id"),
        identity_source_id=doc.get("identity_source_id"),
        lifecycle=Lifecycle(
            status=status,
            patients=frozenset(owner_of(patient) for patient in patients),
            catalogue=catalogue,
            closed_at=_opt_time(doc.get("closed_at")),
            closed_by=doc.get("closed_by"),
            reopened_at=_opt_time(doc.get("reopened_at")),
        ),
    )


Judge = Callable[[Document | None], tuple[Acceptance, Document]]


def acceptance_of(current: Document | None, kind: str, event_id: str, at: dt.datetime, order: str | None) -> Acceptance:
    """Whether event `event_id` (time `at`, or position `order`) of `kind` is new for the enrolment document
    `current`. Without `order`, events are ordered by `EventStamp` (time, then event id: two events of the same
    millisecond are ordered by id, where a bare time comparison once judged the later-arriving one stale)."""
    if current is None:
        return Acceptance.NEW
    current_id = current.get(f"{kind}_event_id")
    if current_id == event_id:
        return Acceptance.DUPLICATE if current.get(f"{kind}_done") else Acceptance.RESUME
    if order is not None:
        return Acceptance.STALE if str(current.get(f"{kind}_order") or "") >= order else Acceptance.NEW
    previous_at = current.get(f"{kind}_at")
    if previous_at is not None and not EventStamp.of(at, event_id).is_newer_than(
        EventStamp.of(previous_at, current_id)
    ):
        return Acceptance.STALE
    return Acceptance.NEW


def event_judge(
    kind: str,
    event_id: str,
    at: dt.datetime,
    fields: Callable[[Document | None], Document] = lambda _: {},
    order: str | None = None,
) -> Judge:
    """Judges event `event_id` (time `at`) of `kind` against the enrolment document, and says what recording it
    as the enrolment's latest of `kind` writes if it is new: `fields(current document)` with the event's id and
    time and `<kind>_done` false (set by the store's `done` once its effects are complete)."""

    def judge(current: Document | None) -> tuple[Acceptance, Document]:
        acceptance = acceptance_of(current, kind, event_id, at, order)
        if acceptance is not Acceptance.NEW:
            return acceptance, {}
        update = {**fields(current), f"{kind}_event_id": event_id, f"{kind}_at": at, f"{kind}_done": False}
        if order is not None:
            update[f"{kind}_order"] = order
        return acceptance, update

    return judge


def identity_judge(outcome: IdentityOutcome) -> Judge:
    """Identity outcomes are ordered by the DCC event they answer, then by publication: an outcome of a
    superseded enrolled event published late (after a withdrawal's) never re-opens the enrolment."""
    order = f"{_text(outcome.source_at)}|{_text(outcome.at)}"
    return event_judge(
        "identity", outcome.event_id, outcome.at, lambda current: identity_fields(current, outcome), order
    )


def identity_fields(current: Document | None, outcome: IdentityOutcome) -> Document:
    """What a new identity outcome writes: the enrolment's lifecycle after it; a closure (no consent,
    withdrawn) remembers its event time so that older selections are voided whatever their arrival order."""
    previous = enrolment_of(current).lifecycle if current is not None else Lifecycle()
    patients = frozenset(owner_of(patient) for patient in outcome.pacs_patients)
    life = advance(previous, outcome.status, outcome.source_at, patients)
    update: Document = {
        "identity_status": life.status,
        "identity_source_id": outcome.source_event_id,
        "pacs_patients": [patient.model_dump() for patient in outcome.pacs_patients if owner_of(patient) in patients],
        "closed_at": life.closed_at,
        "closed_by": life.closed_by,
        "reopened_at": life.reopened_at,
    }
    if outcome.meeting_date is not None:
        update["meeting_date"] = outcome.meeting_date.isoformat()
    return update


def listed_fields(identity_event_id: str | None, studies: tuple[ListedStudy, ...]) -> Document:
    """The stored catalogue: `catalogue_studies` holds each study's StudyInstanceUID in `uid`."""
    return {
        "catalogue_studies": [
            {"uid": study.study_instance_uid, "patient_id": study.owner[0], "issuer": study.owner[1]}
            for study in studies
        ],
        "catalogue_identity": identity_event_id,
    }


class EnrolmentStore:
    """Per enrolment: linked patients, meeting date, and which identity/selection/refresh was handled."""

    def __init__(self, database: AsyncDatabase[Document]) -> None:
        self._enrolments: AsyncCollection[Document] = database["enrolments"]

    async def ensure_indexes(self) -> None:
        await self._enrolments.create_index([("catalogue_due_at", ASCENDING)])
        await self._enrolments.create_index([("meeting_date", ASCENDING)])

    async def expired(self, cutoff: dt.date) -> list[str]:
        """The enrolments whose meeting is before `cutoff` (an unknown meeting date is kept)."""
        cursor = self._enrolments.find({"meeting_date": {"$lt": cutoff.isoformat()}}, {"_id": 1})
        return [str(doc["_id"]) async for doc in cursor]

    async def forget(self, enrolment_id: str, cutoff: dt.date) -> bool:
        """Deletes the enrolment's document (catalogue included) if its meeting is still before `cutoff`."""
        result = await self._enrolments.delete_one({"_id": enrolment_id, "meeting_date": {"$lt": cutoff.isoformat()}})
        return result.deleted_count == 1

    async def get(self, enrolment_id: str) -> Enrolment | None:
        doc = await self._enrolments.find_one({"_id": enrolment_id})
        return enrolment_of(doc) if doc else None

    async def _accept(self, enrolment_id: str, kind: str, judge: Judge) -> Acceptance:
        """Records an event as the enrolment's latest of `kind` if `judge` finds it new. A concurrent writer
        may change the document between our read and write: the event is then judged again (`until_written`)."""
        id_field = f"{kind}_event_id"

        async def attempt() -> Acceptance | LostRace:
            current = await self._enrolments.find_one({"_id": enrolment_id})
            acceptance, update = judge(current)
            if acceptance is not Acceptance.NEW:
                return acceptance
            if current is None:
                inserted = await _inserted(self._enrolments, {"_id": enrolment_id, **update})
                return Acceptance.NEW if inserted else LOST_RACE
            replaced = await self._enrolments.update_one(
                {"_id": enrolment_id, id_field: current.get(id_field)}, {"$set": update}
            )
            return Acceptance.NEW if replaced.matched_count else LOST_RACE

        return await until_written(attempt, what=f"enrolment {enrolment_id} ({kind})")

    async def _done(self, enrolment_id: str, kind: str, event_id: str) -> None:
        await self._enrolments.update_one(
            {"_id": enrolment_id, f"{kind}_event_id": event_id}, {"$set": {f"{kind}_done": True}}
        )

    async def accept_identity(self, enrolment_id: str, outcome: IdentityOutcome) -> Acceptance:
        """Records the enrolment's new lifecycle outcome (`identity_judge`)."""
        return await self._accept(enrolment_id, "identity", identity_judge(outcome))

    async def catalogue_listed(
        self, enrolment_id: str, identity_event_id: str | None, studies: tuple[ListedStudy, ...]
    ) -> bool:
        """Records the current catalogue (uid -> linked patient) of the identity outcome `identity_event_id`;
        False when a newer outcome replaced it meanwhile (its own listing will follow)."""
        result = await self._enrolments.update_one(
            {"_id": enrolment_id, "identity_event_id": identity_event_id},
            {"$set": listed_fields(identity_event_id, studies)},
        )
        return result.matched_count == 1

    async def identity_done(self, enrolment_id: str, event_id: str) -> None:
        await self._done(enrolment_id, "identity", event_id)

    async def accept_selection(self, enrolment_id: str, event_id: str, at: dt.datetime) -> Acceptance:
        return await self._accept(enrolment_id, "selection", event_judge("selection", event_id, at))

    async def selection_done(self, enrolment_id: str, event_id: str) -> None:
        await self._done(enrolment_id, "selection", event_id)

    async def accept_refresh(self, enrolment_id: str, event_id: str, at: dt.datetime) -> Acceptance:
        return await self._accept(enrolment_id, "refresh", event_judge("refresh", event_id, at))

    async def refresh_done(self, enrolment_id: str, event_id: str) -> None:
        await self._done(enrolment_id, "refresh", event_id)

    # --- catalogue retries -------------------------------------------------------------------------------

    async def catalogue_outcome(
        self, enrolment_id: str, *, failed_attempts: int, due_at: dt.datetime | None, now: dt.datetime
    ) -> None:
        """After a catalogue: `failed_attempts` consecutive failures so far, retried at `due_at` (None: done)."""
        await self._enrolments.update_one(
            {"_id": enrolment_id},
            {
                "$set": {
                    "catalogue_attempts": failed_attempts,
                    "catalogue_due_at": due_at,
                    "catalogue_lease_until": FREE,
                    "catalogued_at": now,
                }
            },
        )

    async def claim_due_catalogue(self, now: dt.datetime, lease: dt.timedelta) -> Enrolment | None:
        doc = await self._enrolments.find_one_and_update(
            {"catalogue_due_at": {"$lte": now}, "catalogue_lease_until": {"$lte": now}},
            {"$set": {"catalogue_lease_until": now + lease}},
            return_document=ReturnDocument.AFTER,
        )
        return enrolment_of(doc) if doc else None
