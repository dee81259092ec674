"""What the identity-matcher's use cases (`handlers.py`) need of the world, as protocols, and the typed values
the adapters return: the enrolment store (`store.EnrolmentStore`; an in-memory fake in the tests) and the
patient directory (`directory.MircDirectory`, a C-FIND client underneath)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from proxymage_shared.dicom import PatientRecord
from proxymage_shared.events import EnrolmentWithdrawn, IdentityStatus, PatientEnrolled

from identity_matcher.lifecycle import Acceptance
from identity_matcher.query_plan import PatientKeys, QueryLevel


@dataclass(frozen=True, slots=True)
class Candidates:
    records: tuple[PatientRecord, ...]
    level: str  # which level of the plan answered (for logs and the outcome's reason)


@dataclass(frozen=True, slots=True)
class StoredEnrolment:
    """What the store keeps of an enrolment that the use cases read back."""

    enrolment_id: str
    # The newest enrolled event that was current (None: only a withdrawal was ever seen).
    enrolled: PatientEnrolled | None
    # Failed resolutions of the current event in a row (`error` outcomes), for the durable backoff.
    attempts: int
    # Outcomes recorded so far for the enrolment: numbers the next outcome's event id.
    resolutions: int


@dataclass(frozen=True, slots=True)
class Claim:
    """An enrolled event taken, under a lease, to be resolved again (a due retry or a DCC refresh)."""

    event: PatientEnrolled
    attempts: int
    resolutions: int


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """An outcome as recorded once published: it answers the lifecycle event `event_id`."""

    enrolment_id: str
    event_id: str
    status: IdentityStatus
    attempts: int  # failed resolutions in a row (`error`), else 0
    next_attempt_at: dt.datetime | None  # the durable retry of an `error`
    outcome_event_id: str
    at: dt.datetime


class EnrolmentRepository(Protocol):
    async def accept(self, event: PatientEnrolled) -> Acceptance:
        """Records the enrolled event as the current lifecycle event, unless duplicate or stale."""
        ...

    async def accept_withdrawal(self, event: EnrolmentWithdrawn) -> Acceptance:
        """Records the withdrawal as the current lifecycle event, unless duplicate or stale."""
        ...

    async def is_current(self, enrolment_id: str, event_id: str) -> bool: ...

    async def record(self, outcome: RecordedOutcome) -> bool:
        """Stores the outcome answering its lifecycle event; False if a newer one replaced that meanwhile."""
        ...

    async def claim_due_retry(self, now: dt.datetime, lease: dt.timedelta) -> Claim | None: ...

    async def claim_for_refresh(self, enrolment_id: str, now: dt.datetime, lease: dt.timedelta) -> Claim | None: ...

    async def enrolment(self, enrolment_id: str) -> StoredEnrolment | None: ...


class PatientDirectory(Protocol):
    """Finds the PACS patients a query plan answers (`directory.MircDirectory`)."""

    async def find(self, plan: tuple[QueryLevel, ...], vigilance: tuple[PatientKeys, ...] = ()) -> Candidates: ...
