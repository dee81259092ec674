"""In-memory adapters for the identity-matcher's use cases (`identity_matcher.ports`), with the semantics of
the MongoDB store: the same lifecycle decision, conditional writes keyed by the current event, leases."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from identity_matcher.lifecycle import Acceptance, Current, LifecycleEvent, LifecycleKind, decide
from identity_matcher.ports import Candidates, Claim, RecordedOutcome, StoredEnrolment
from identity_matcher.query_plan import PatientKeys, QueryLevel
from identity_matcher.store import PENDING
from proxymage_shared.events import EnrolmentWithdrawn, PatientEnrolled
from proxymage_shared.idempotency import to_ms

QUERYABLE = ("matched", "unmatched", "error")


@dataclass(frozen=True, slots=True)
class Row:
    kind: LifecycleKind
    event_id: str
    occurred_at: dt.datetime
    enrolled: PatientEnrolled | None
    consent: bool | None
    status: str = PENDING
    attempts: int = 0
    resolutions: int = 0
    next_attempt_at: dt.datetime | None = None
    lease_until: dt.datetime | None = None
    outcome_event_id: str | None = None

    def free(self, now: dt.datetime) -> bool:
        return self.lease_until is None or self.lease_until <= now

    def claim(self) -> Claim:
        assert self.enrolled is not None
        return Claim(self.enrolled, self.attempts, self.resolutions)


@dataclass
class FakeEnrolmentStore:
    rows: dict[str, Row] = field(default_factory=dict)

    def _accept(self, enrolment_id: str, incoming: Row) -> Acceptance:
        row = self.rows.get(enrolment_id)
        current = None
        if row is not None:
            current = Current(LifecycleEvent(row.kind, row.event_id, row.occurred_at), answered=row.status != PENDING)
        acceptance = decide(current, LifecycleEvent(incoming.kind, incoming.event_id, incoming.occurred_at))
        if acceptance is Acceptance.NEW:
            self.rows[enrolment_id] = incoming
        return acceptance

    async def accept(self, event: PatientEnrolled) -> Acceptance:
        row = Row("enrolled", str(event.event_id), to_ms(event.occurred_at), event, event.consent)
        return self._accept(event.enrolment_id, row)

    async def accept_withdrawal(self, event: EnrolmentWithdrawn) -> Acceptance:
        known = self.rows.get(event.enrolment_id)
        # The enrolled event kept so far stays (it names the meeting).
        enrolled, consent = (known.enrolled, known.consent) if known is not None else (None, None)
        row = Row("withdrawn", str(event.event_id), to_ms(event.occurred_at), enrolled, consent)
        return self._accept(event.enrolment_id, row)

    async def is_current(self, enrolment_id: str, event_id: str) -> bool:
        row = self.rows.get(enrolment_id)
        return row is not None and row.event_id == event_id

    async def record(self, outcome: RecordedOutcome) -> bool:
        row = self.rows.get(outcome.enrolment_id)
        if row is None or row.event_id != outcome.event_id:
            return False
        self.rows[outcome.enrolment_id] = replace(
            row,
            status=outcome.status,
            attempts=outcome.attempts,
            next_attempt_at=outcome.next_attempt_at,
            lease_until=None,
            outcome_event_id=outcome.outcome_event_id,
            resolutions=row.resolutions + 1,
        )
        return True

    def _take(self, enrolment_id: str, now: dt.datetime, lease: dt.timedelta) -> Claim:
        row = replace(self.rows[enrolment_id], lease_until=now + lease)
        self.rows[enrolment_id] = row
        return row.claim()

    async def claim_due_retry(self, now: dt.datetime, lease: dt.timedelta) -> Claim | None:
        for enrolment_id, row in self.rows.items():
            due = row.next_attempt_at is not None and row.next_attempt_at <= now
            if row.status == "error" and row.kind != "withdrawn" and row.consent is True and due and row.free(now):
                return self._take(enrolment_id, now, lease)
        return None

    async def claim_for_refresh(self, enrolment_id: str, now: dt.datetime, lease: dt.timedelta) -> Claim | None:
        row = self.rows.get(enrolment_id)
        if row is None or row.kind == "withdrawn" or row.consent is not True or row.status not in QUERYABLE:
            return None
        if not row.free(now):
            return None
        return self._take(enrolment_id, now, lease)

    async def enrolment(self, enrolment_id: str) -> StoredEnrolment | None:
        row = self.rows.get(enrolment_id)
        if row is None:
            return None
        return StoredEnrolment(enrolment_id, row.enrolled, row.attempts, row.resolutions)


@dataclass
class FakeDirectory:
    """Answers every plan with `answers`, after failing with each of `failures` in turn."""

    answers: Candidates = field(default_factory=lambda: Candidates((), "exact"))
    failures: list[Exception] = field(default_factory=list)
    calls: int = 0

    async def find(self, plan: tuple[QueryLevel, ...], vigilance: tuple[PatientKeys, ...] = ()) -> Candidates:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.answers
