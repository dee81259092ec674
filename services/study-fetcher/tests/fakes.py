"""In-memory adapters for the fetcher's use cases (`study_fetcher.ports`), with the semantics of the MongoDB
stores: conditional job writes on the revision, claims under leases, transfers leased per study, and the
enrolment store's acceptance rules (the store's own pure functions, on plain documents)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from proxymage_shared.dicom import MoveProgress, StudyRecord
from proxymage_shared.events import PacsPatientRef
from proxymage_shared.mongo import Document
from study_fetcher import domain
from study_fetcher.domain import Job
from study_fetcher.ports import (
    Acceptance,
    AfterSave,
    Enrolment,
    IdentityOutcome,
    ListedStudy,
    MoveControl,
    OnProgress,
    StoredJob,
    StudyPresence,
    Transfer,
    job_key_of,
)
from study_fetcher.store import CLAIMABLE_STATES, FREE, Judge, enrolment_of, event_judge, identity_judge, listed_fields


@dataclass
class JobRow:
    stored: StoredJob
    due_at: dt.datetime | None
    waiting: bool = False
    retired: bool = False
    unpublished: bool = False


class FakeJobStore:
    def __init__(self) -> None:
        self.rows: dict[str, JobRow] = {}
        self.renewals = 0
        # Called before each `save`: a test simulates a concurrent writer there (`bump`).
        self.before_save: Callable[[StoredJob], None] | None = None
        self.fail_claim: Exception | None = None
        self.fail_waiting: Exception | None = None  # raised once by `waiting_for_peer`
        self.fail_get: Exception | None = None  # raised once by `get`
        self.fail_delete: Exception | None = None  # raised by every `delete` while set
        self.reads = 0  # calls of `get`

    def bump(self, job_key: str) -> None:
        """A concurrent writer changed the job (a new revision)."""
        row = self.rows[job_key]
        row.stored = replace(row.stored, revision=row.stored.revision + 1)

    def job(self, job_key: str) -> Job:
        return self.rows[job_key].stored.job

    async def get(self, job_key: str) -> StoredJob | None:
        self.reads += 1
        if self.fail_get is not None:
            error, self.fail_get = self.fail_get, None
            raise error
        row = self.rows.get(job_key)
        return row.stored if row else None

    async def of_enrolment(self, enrolment_id: str) -> list[StoredJob]:
        return [row.stored for row in self.rows.values() if row.stored.enrolment_id == enrolment_id]

    async def live_users(self, study_instance_uid: str, states: Iterable[str]) -> int:
        wanted = set(states)
        return sum(
            1
            for row in self.rows.values()
            if row.stored.study_instance_uid == study_instance_uid
            and row.stored.job.state in wanted
            and not row.retired
        )

    async def any_of_study(self, study_instance_uid: str) -> bool:
        return any(row.stored.study_instance_uid == study_instance_uid for row in self.rows.values())

    async def waiting_for_peer(self, peer: str) -> list[StoredJob]:
        if self.fail_waiting is not None:
            error, self.fail_waiting = self.fail_waiting, None
            raise error
        return [row.stored for row in self.rows.values() if domain.waiting_for(row.stored.job) == peer]

    def take_over(self, job_key: str, owner: str, until: dt.datetime) -> None:
        """Another worker claimed the job (its lease had expired)."""
        row = self.rows[job_key]
        row.stored = replace(row.stored, lease_owner=owner, lease_until=until, revision=row.stored.revision + 1)

    async def retire(self, enrolment_id: str) -> None:
        for row in self.rows.values():
            if row.stored.enrolment_id == enrolment_id:
                row.retired, row.due_at = True, None

    async def delete(self, job_key: str) -> None:
        if self.fail_delete is not None:
            raise self.fail_delete
        self.rows.pop(job_key, None)

    async def insert(self, enrolment_id: str, study_instance_uid: str, job: Job, now: dt.datetime) -> StoredJob | None:
        job_key = job_key_of(enrolment_id, study_instance_uid)
        if job_key in self.rows:
            return None
        stored = StoredJob(job_key, enrolment_id, study_instance_uid, job, 1, None, FREE, now)
        self.rows[job_key] = JobRow(stored, domain.due_at(job, now, FREE), unpublished=job.version > 0)
        return stored

    async def save(
        self, stored: StoredJob, job: Job, now: dt.datetime, *, then: AfterSave | None = None
    ) -> StoredJob | None:
        if self.before_save is not None:
            self.before_save(stored)
        row = self.rows.get(stored.job_key)
        if row is None or row.stored.revision != stored.revision:
            return None
        row.stored = replace(row.stored, job=job, revision=stored.revision + 1, updated_at=now)
        row.due_at = domain.due_at(job, now, stored.lease_until)
        if job.version != stored.job.version:
            row.unpublished = True
        if then is not None:
            await then(row.stored)
        return row.stored

    async def set_deadline(self, enrolment_id: str, deadline: dt.datetime) -> None:
        for row in self.rows.values():
            if row.stored.enrolment_id == enrolment_id and row.stored.job.deadline != deadline:
                job = replace(row.stored.job, deadline=deadline)
                row.stored = replace(row.stored, job=job, revision=row.stored.revision + 1)

    def _claim(self, row: JobRow, owner: str, now: dt.datetime, lease: dt.timedelta) -> StoredJob:
        row.stored = replace(row.stored, lease_owner=owner, lease_until=now + lease, revision=row.stored.revision + 1)
        row.waiting = False
        return row.stored

    async def claim_due(self, owner: str, now: dt.datetime, lease: dt.timedelta) -> StoredJob | None:
        if self.fail_claim is not None:
            error, self.fail_claim = self.fail_claim, None
            raise error
        due = [
            row
            for row in self.rows.values()
            if row.stored.job.state in CLAIMABLE_STATES
            and row.due_at is not None
            and row.due_at <= now
            and row.stored.lease_until <= now
            and not row.retired
        ]
        if not due:
            return None
        return self._claim(min(due, key=lambda row: row.due_at or FREE), owner, now, lease)

    async def claim_companions(
        self, study_instance_uid: str, owner: str, now: dt.datetime, lease: dt.timedelta
    ) -> list[StoredJob]:
        return [
            self._claim(row, owner, now, lease)
            for row in self.rows.values()
            if row.stored.study_instance_uid == study_instance_uid
            and row.stored.job.state in CLAIMABLE_STATES
            and not row.stored.job.held
            and row.stored.lease_until <= now
            and not row.retired
        ]

    def _owned(self, job_keys: list[str], owner: str) -> list[JobRow]:
        return [self.rows[key] for key in job_keys if key in self.rows and self.rows[key].stored.lease_owner == owner]

    async def renew(self, job_keys: list[str], owner: str, until: dt.datetime) -> int:
        self.renewals += 1
        owned = self._owned(job_keys, owner)
        for row in owned:
            row.stored = replace(row.stored, lease_until=until)
            if row.stored.job.state == "retrieving":
                row.due_at = until
        return len(owned)

    async def release(self, job_keys: list[str], owner: str) -> None:
        for row in self._owned(job_keys, owner):
            row.stored = replace(row.stored, lease_owner=None, lease_until=FREE)

    async def postpone(self, job_key: str, owner: str, due_at: dt.datetime) -> None:
        for row in self._owned([job_key], owner):
            row.stored = replace(row.stored, lease_owner=None, lease_until=FREE)
            row.due_at, row.waiting = due_at, True

    async def wake_waiters(self, study_instance_uid: str, now: dt.datetime) -> None:
        for row in self.rows.values():
            if row.stored.study_instance_uid == study_instance_uid and row.waiting:
                row.due_at, row.waiting = now, False

    async def mark_published(self, job_key: str, version: int) -> None:
        row = self.rows.get(job_key)
        if row is not None and row.stored.job.version == version:
            row.unpublished = False

    async def unpublished(self, older_than: dt.datetime, limit: int = 100) -> list[StoredJob]:
        pending = [row.stored for row in self.rows.values() if row.unpublished and row.stored.updated_at <= older_than]
        return pending[:limit]


class FakeTransferStore:
    def __init__(self) -> None:
        self.transfers: dict[str, Transfer] = {}

    def _owned(self, study_instance_uid: str, owner: str) -> Transfer | None:
        transfer = self.transfers.get(study_instance_uid)
        return transfer if transfer is not None and transfer.lease_owner == owner else None

    def _set(self, transfer: Transfer) -> None:
        self.transfers[transfer.study_instance_uid] = transfer

    async def claim(
        self, study_instance_uid: str, owner: str, now: dt.datetime, lease: dt.timedelta
    ) -> Transfer | None:
        transfer = self.transfers.get(study_instance_uid)
        if transfer is None:
            transfer = Transfer(study_instance_uid, owner, now + lease)
        elif transfer.lease_until <= now:
            transfer = replace(transfer, lease_owner=owner, lease_until=now + lease)
        else:
            return None
        self._set(transfer)
        return transfer

    async def renew(self, study_instance_uid: str, owner: str, until: dt.datetime) -> bool:
        if (transfer := self._owned(study_instance_uid, owner)) is None:
            return False
        self._set(replace(transfer, lease_until=until))
        return True

    async def count_move(self, study_instance_uid: str, owner: str, now: dt.datetime) -> None:
        if (transfer := self._owned(study_instance_uid, owner)) is not None:
            self._set(replace(transfer, moves=transfer.moves + 1, verified_instances=None, verified_at=None))

    async def release(
        self, study_instance_uid: str, owner: str, *, verified_instances: int | None, now: dt.datetime
    ) -> None:
        if (transfer := self._owned(study_instance_uid, owner)) is None:
            return
        transfer = replace(transfer, lease_owner=None, lease_until=FREE)
        if verified_instances is not None:
            transfer = replace(transfer, verified_instances=verified_instances, verified_at=now)
        self._set(transfer)

    async def forget_verification(self, study_instance_uid: str, owner: str) -> None:
        if (transfer := self._owned(study_instance_uid, owner)) is not None:
            self._set(replace(transfer, verified_instances=None, verified_at=None))

    async def get(self, study_instance_uid: str) -> Transfer | None:
        return self.transfers.get(study_instance_uid)

    async def request_purge(self, study_instance_uid: str, now: dt.datetime) -> None:
        transfer = self.transfers.get(study_instance_uid) or Transfer(study_instance_uid, None, FREE)
        self._set(replace(transfer, purge_pending=True))

    async def forget(self, study_instance_uid: str, owner: str) -> None:
        transfer = self._owned(study_instance_uid, owner)
        if transfer is not None and not transfer.purge_pending:
            del self.transfers[study_instance_uid]

    async def purge_settled(self, study_instance_uid: str, owner: str) -> None:
        if (transfer := self._owned(study_instance_uid, owner)) is not None:
            self._set(replace(transfer, purge_pending=False))

    async def pending_purges(self, limit: int = 100) -> list[str]:
        return [uid for uid, transfer in self.transfers.items() if transfer.purge_pending][:limit]


class FakeEnrolmentStore:
    """The enrolment documents as plain dicts, judged and written by the store's own rules."""

    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}

    async def get(self, enrolment_id: str) -> Enrolment | None:
        doc = self.docs.get(enrolment_id)
        return enrolment_of(doc) if doc else None

    async def expired(self, cutoff: dt.date) -> list[str]:
        return [key for key, doc in self.docs.items() if (doc.get("meeting_date") or "9999") < cutoff.isoformat()]

    async def forget(self, enrolment_id: str, cutoff: dt.date) -> bool:
        if enrolment_id not in await self.expired(cutoff):
            return False
        del self.docs[enrolment_id]
        return True

    def _accept(self, enrolment_id: str, judge: Judge) -> Acceptance:
        current = self.docs.get(enrolment_id)
        acceptance, update = judge(current)
        if acceptance is Acceptance.NEW:
            self.docs[enrolment_id] = {**(current or {"_id": enrolment_id}), **update}
        return acceptance

    def _done(self, enrolment_id: str, kind: str, event_id: str) -> None:
        doc = self.docs.get(enrolment_id)
        if doc is not None and doc.get(f"{kind}_event_id") == event_id:
            doc[f"{kind}_done"] = True

    async def accept_identity(self, enrolment_id: str, outcome: IdentityOutcome) -> Acceptance:
        return self._accept(enrolment_id, identity_judge(outcome))

    async def identity_done(self, enrolment_id: str, event_id: str) -> None:
        self._done(enrolment_id, "identity", event_id)

    async def catalogue_listed(
        self, enrolment_id: str, identity_event_id: str | None, studies: tuple[ListedStudy, ...]
    ) -> bool:
        doc = self.docs.get(enrolment_id)
        if doc is None or doc.get("identity_event_id") != identity_event_id:
            return False
        doc.update(listed_fields(identity_event_id, studies))
        return True

    async def accept_selection(self, enrolment_id: str, event_id: str, at: dt.datetime) -> Acceptance:
        return self._accept(enrolment_id, event_judge("selection", event_id, at))

    async def selection_done(self, enrolment_id: str, event_id: str) -> None:
        self._done(enrolment_id, "selection", event_id)

    async def accept_refresh(self, enrolment_id: str, event_id: str, at: dt.datetime) -> Acceptance:
        return self._accept(enrolment_id, event_judge("refresh", event_id, at))

    async def refresh_done(self, enrolment_id: str, event_id: str) -> None:
        self._done(enrolment_id, "refresh", event_id)

    async def catalogue_outcome(
        self, enrolment_id: str, *, failed_attempts: int, due_at: dt.datetime | None, now: dt.datetime
    ) -> None:
        doc = self.docs.get(enrolment_id)
        if doc is not None:
            doc.update(
                catalogue_attempts=failed_attempts,
                catalogue_due_at=due_at,
                catalogue_lease_until=FREE,
                catalogued_at=now,
            )

    async def claim_due_catalogue(self, now: dt.datetime, lease: dt.timedelta) -> Enrolment | None:
        for doc in self.docs.values():
            due_at, lease_until = doc.get("catalogue_due_at"), doc.get("catalogue_lease_until")
            if due_at is not None and due_at <= now and lease_until is not None and lease_until <= now:
                doc["catalogue_lease_until"] = now + lease
                return enrolment_of(doc)
        return None


Answer = StudyPresence | None | Exception


@dataclass
class FakePacs:
    """MIRC and the viewer store: answers set per study; `move` runs `on_move` (a test's script) if given."""

    studies: dict[str, list[StudyRecord] | Exception] = field(default_factory=dict)  # by patient id
    mirc: dict[str, Answer] = field(default_factory=dict)
    viewer: dict[str, Answer] = field(default_factory=dict)
    move_result: int | Exception = 0
    on_move: Callable[[str, Callable[[MoveProgress], None], threading.Event | None], object] | None = None
    moves: list[str] = field(default_factory=list)
    moved_to_viewer: int | None = None  # what the viewer holds after a move (None: unchanged)
    budget_full: Exception | None = None  # raised by `move` before it starts (MIRC's budget stayed full)

    async def studies_of(self, patient: PacsPatientRef) -> list[StudyRecord]:
        answer = self.studies.get(patient.patient_id, [])
        if isinstance(answer, Exception):
            raise answer
        return answer

    @staticmethod
    def _answer(answers: dict[str, Answer], study_instance_uid: str) -> StudyPresence | None:
        answer = answers.get(study_instance_uid)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def in_mirc(self, study_instance_uid: str) -> StudyPresence | None:
        return self._answer(self.mirc, study_instance_uid)

    async def in_viewer(self, study_instance_uid: str) -> StudyPresence | None:
        return self._answer(self.viewer, study_instance_uid)

    async def move(self, study_instance_uid: str, on_progress: OnProgress, control: MoveControl) -> int:
        cancel, on_started = control.cancel, control.on_started
        if self.budget_full is not None:  # no slot of MIRC's budget came: nothing sent
            raise self.budget_full
        if on_started is not None:
            await on_started()
        self.moves.append(study_instance_uid)
        if self.on_move is not None:
            scripted = self.on_move(study_instance_uid, on_progress, cancel)
            if asyncio.iscoroutine(scripted):
                await scripted
        if isinstance(self.move_result, Exception):
            raise self.move_result
        if self.moved_to_viewer is not None:
            self.viewer[study_instance_uid] = StudyPresence(self.moved_to_viewer)
        return self.move_result


@dataclass
class FakePurge:
    held: set[str] = field(default_factory=set)
    deleted: list[str] = field(default_factory=list)
    error: Exception | None = None

    async def delete_study(self, study_instance_uid: str) -> int:
        if self.error is not None:
            raise self.error
        self.deleted.append(study_instance_uid)
        present = study_instance_uid in self.held
        self.held.discard(study_instance_uid)
        return int(present)
