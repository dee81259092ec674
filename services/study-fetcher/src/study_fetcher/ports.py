"""What the fetcher's use cases (`handlers.py`, `worker.py`, `cleanup.py`, `retention.py`, `recovery.py`) need of
the world and of each other, as protocols, and the typed values and errors the adapters return: the three stores
(`store.py`; in-memory fakes in the tests), the two DICOM peers (`pacs.DicomPacs`), the viewer store's REST API
(`pacs.OrthancRest`), and the job updater and viewer cleaner the composition root (`app.py`) passes around.

A StudyInstanceUID is `study_instance_uid` in every name here; a job's id, "<enrolment_id>|<study_instance_uid>",
is its `job_key` (`job_key_of`).
"""

from __future__ import annotations

import datetime as dt
import enum
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from proxymage_shared.dicom import MoveProgress, StudyRecord
from proxymage_shared.errors import TransientError
from proxymage_shared.events import ImagingCatalogued, PacsPatientRef, StudyStatusChanged

from study_fetcher.domain import Input, Job, Owner
from study_fetcher.lifecycle import Lifecycle, LifecycleStatus

Clock = Callable[[], dt.datetime]
PublishStatus = Callable[[StudyStatusChanged], Awaitable[None]]
PublishCatalogue = Callable[[ImagingCatalogued], Awaitable[None]]
OnProgress = Callable[[MoveProgress], None]  # told each pending C-MOVE response's counts, on the event loop
OnStarted = Callable[[], Awaitable[None]]
# Run by `JobRepository.save` once the job is written, before its bookkeeping (the work schedule's entries).
AfterSave = Callable[["StoredJob"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MoveControl:
    """How a move is steered: setting `cancel` cancels it (MoveCancelledError); `on_started` is awaited just before
    the C-MOVE is sent (once a slot of MIRC's budget is held), never if it is not."""

    cancel: threading.Event | None = None
    on_started: OnStarted | None = None


def job_key_of(enrolment_id: str, study_instance_uid: str) -> str:
    """A job's id (a BusinessId cannot contain `|`)."""
    return f"{enrolment_id}|{study_instance_uid}"


def owner_of(patient: PacsPatientRef) -> Owner:
    return (patient.patient_id, patient.issuer)


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A job as stored: the domain's `Job` and what the store keeps around it (revision, lease)."""

    job_key: str
    enrolment_id: str
    study_instance_uid: str
    job: Job
    revision: int  # every write is conditional on it
    lease_owner: str | None
    lease_until: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Transfer:
    """A study's transfer: who moves it now (lease), how many moves were made, the last verified one and
    whether a purge from the viewer store is owed."""

    study_instance_uid: str
    lease_owner: str | None
    lease_until: dt.datetime
    moves: int = 0
    verified_instances: int | None = None
    verified_at: dt.datetime | None = None
    purge_pending: bool = False


class Acceptance(enum.Enum):
    NEW = "new"  # newer than what we handled: act on it
    RESUME = "resume"  # the same event, its effects possibly incomplete (redelivery after a crash): act again
    DUPLICATE = "duplicate"  # the same event, fully handled: nothing to do
    STALE = "stale"  # older than what we handled: nothing to do


@dataclass(frozen=True, slots=True)
class Enrolment:
    enrolment_id: str
    meeting_date: dt.date | None
    pacs_patients: tuple[PacsPatientRef, ...]
    catalogue_attempts: int
    identity_event_id: str | None = None
    identity_source_id: str | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


@dataclass(frozen=True, slots=True)
class ListedStudy:
    """One study of a catalogue: which linked PACS patient it was listed for."""

    study_instance_uid: str
    owner: Owner


@dataclass(frozen=True, slots=True)
class IdentityOutcome:
    """An `identity.resolved.v1` outcome as the enrolment store records it."""

    event_id: str
    at: dt.datetime
    status: LifecycleStatus
    source_event_id: str
    source_at: dt.datetime
    meeting_date: dt.date | None
    pacs_patients: tuple[PacsPatientRef, ...]


class JobRepository(Protocol):
    """The jobs, one per (enrolment, study); every write of a job is conditional (`save`)."""

    async def get(self, job_key: str) -> StoredJob | None: ...
    async def of_enrolment(self, enrolment_id: str) -> list[StoredJob]: ...
    async def live_users(self, study_instance_uid: str, states: Iterable[str]) -> int: ...
    async def any_of_study(self, study_instance_uid: str) -> bool: ...
    async def waiting_for_peer(self, peer: str) -> list[StoredJob]: ...
    async def retire(self, enrolment_id: str) -> None: ...
    async def delete(self, job_key: str) -> None: ...
    async def insert(
        self, enrolment_id: str, study_instance_uid: str, job: Job, now: dt.datetime
    ) -> StoredJob | None: ...
    async def save(
        self, stored: StoredJob, job: Job, now: dt.datetime, *, then: AfterSave | None = None
    ) -> StoredJob | None: ...
    async def set_deadline(self, enrolment_id: str, deadline: dt.datetime) -> None: ...
    async def claim_due(self, owner: str, now: dt.datetime, lease: dt.timedelta) -> StoredJob | None: ...
    async def claim_companions(
        self, study_instance_uid: str, owner: str, now: dt.datetime, lease: dt.timedelta
    ) -> list[StoredJob]: ...
    async def renew(self, job_keys: list[str], owner: str, until: dt.datetime) -> int: ...
    async def release(self, job_keys: list[str], owner: str) -> None: ...
    async def postpone(self, job_key: str, owner: str, due_at: dt.datetime) -> None: ...
    async def wake_waiters(self, study_instance_uid: str, now: dt.datetime) -> None: ...
    async def mark_published(self, job_key: str, version: int) -> None: ...
    async def unpublished(self, older_than: dt.datetime, limit: int = 100) -> list[StoredJob]: ...


class TransferRepository(Protocol):
    """One transfer per study; its writes are conditional on the lease's owner."""

    async def claim(
        self, study_instance_uid: str, owner: str, now: dt.datetime, lease: dt.timedelta
    ) -> Transfer | None: ...
    async def renew(self, study_instance_uid: str, owner: str, until: dt.datetime) -> bool: ...
    async def count_move(self, study_instance_uid: str, owner: str, now: dt.datetime) -> None: ...
    async def release(
        self, study_instance_uid: str, owner: str, *, verified_instances: int | None, now: dt.datetime
    ) -> None: ...
    async def forget_verification(self, study_instance_uid: str, owner: str) -> None: ...
    async def get(self, study_instance_uid: str) -> Transfer | None: ...
    async def request_purge(self, study_instance_uid: str, now: dt.datetime) -> None: ...
    async def forget(self, study_instance_uid: str, owner: str) -> None: ...
    async def purge_settled(self, study_instance_uid: str, owner: str) -> None: ...
    async def pending_purges(self, limit: int = 100) -> list[str]: ...


class EnrolmentRepository(Protocol):
    """Per enrolment: linked patients, meeting date, catalogue, and which identity/selection/refresh was
    handled (`accept_*`: whether an event is new, a redelivery, a duplicate or stale; `*_done`: its effects are
    complete)."""

    async def get(self, enrolment_id: str) -> Enrolment | None: ...
    async def expired(self, cutoff: dt.date) -> list[str]: ...
    async def forget(self, enrolment_id: str, cutoff: dt.date) -> bool: ...
    async def accept_identity(self, enrolment_id: str, outcome: IdentityOutcome) -> Acceptance: ...
    async def identity_done(self, enrolment_id: str, event_id: str) -> None: ...
    async def catalogue_listed(
        self, enrolment_id: str, identity_event_id: str | None, studies: tuple[ListedStudy, ...]
    ) -> bool: ...
    async def accept_selection(self, enrolment_id: str, event_id: str, at: dt.datetime) -> Acceptance: ...
    async def selection_done(self, enrolment_id: str, event_id: str) -> None: ...
    async def accept_refresh(self, enrolment_id: str, event_id: str, at: dt.datetime) -> Acceptance: ...
    async def refresh_done(self, enrolment_id: str, event_id: str) -> None: ...
    async def catalogue_outcome(
        self, enrolment_id: str, *, failed_attempts: int, due_at: dt.datetime | None, now: dt.datetime
    ) -> None: ...
    async def claim_due_catalogue(self, now: dt.datetime, lease: dt.timedelta) -> Enrolment | None: ...


@dataclass(frozen=True, slots=True)
class StudyPresence:
    """A study as a study-level C-FIND by UID shows it: `None` when the peer does not hold it."""

    instances: int | None


class Pacs(Protocol):
    """MIRC (C-FIND, C-MOVE to the viewer store) and the viewer store (C-FIND)."""

    async def studies_of(self, patient: PacsPatientRef) -> list[StudyRecord]: ...
    async def in_mirc(self, study_instance_uid: str) -> StudyPresence | None: ...
    async def in_viewer(self, study_instance_uid: str) -> StudyPresence | None: ...
    async def move(self, study_instance_uid: str, on_progress: OnProgress, control: MoveControl) -> int:
        """The completed sub-operations of a complete move; raises the DICOM errors otherwise."""
        ...


class ViewerStoreUnavailableError(TransientError):
    """The viewer store's REST API did not answer as expected."""


class ViewerPurge(Protocol):
    async def delete_study(self, study_instance_uid: str) -> int:
        """Deletes the study from the viewer store; returns how many copies; `ViewerStoreUnavailableError`."""
        ...


class JobChanges(Protocol):
    """The one way a job changes (`updater.JobUpdater`): an input applied to the stored job, re-read on
    concurrent writes, and every new version published."""

    async def apply(
        self, stored: StoredJob, event: Input, *, lease_owner: str | None = None
    ) -> tuple[StoredJob, bool]: ...
    async def publish(self, stored: StoredJob, *, published: Callable[[], None] | None = None) -> None: ...


class ViewerCleanup(Protocol):
    """Purges owed of removed studies from the viewer store (`cleanup.ViewerCleaner`)."""

    async def request(self, study_instance_uid: str) -> None:
        """Owes a purge of the study and tries it at once."""
        ...

    async def settle(self, study_instance_uid: str) -> None:
        """Runs an owed purge if the study is free and unused; leaves it owed otherwise."""
        ...
