"""The identity-matcher's use cases (`handlers.Handlers`) with in-memory fakes: every branch, no server."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest
from identity_matcher.handlers import OUTCOME_NAMESPACE, Handlers, ResolverOptions
from identity_matcher.lifecycle import Acceptance
from identity_matcher.ports import Candidates
from identity_matcher.query_plan import PatientKeys, QueryLevel
from proxymage_shared.dicom import DicomTransientError
from proxymage_shared.dicom.results import PatientRecord, parse_da
from proxymage_shared.errors import PermanentError
from proxymage_shared.events import (
    EnrolmentWithdrawn,
    IdentityResolved,
    ImagingRefresh,
    Patient,
    PatientEnrolled,
    Person,
)
from proxymage_shared.kafka import Delivery
from proxymage_shared.retry import BackoffSchedule, RetryPolicy

from .fakes import FakeDirectory, FakeEnrolmentStore

NOW = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(minutes=2)
DELIVERY = Delivery(topic="t", partition=0, offset=0, key=None)
MARIE = "ESSAI-FICTIF^MARIE"


def record(patient_name: str = MARIE, patient_id: str = "FICTIF-0001") -> PatientRecord:
    return PatientRecord(
        patient_id=patient_id,
        issuer="CHU-FICTIF",
        patient_name=patient_name,
        birth_name=None,
        birth_date_raw="19560412",
        birth_date=parse_da("19560412"),
        sex="F",
        character_sets=(),
    )


def enrolled(
    enrolment_id: str = "enr-1",
    *,
    seconds: int = 0,
    consent: bool = True,
    birth_name: str = "ESSAI-FICTIF",
    sex: str = "F",
) -> PatientEnrolled:
    return PatientEnrolled.model_validate(
        {
            "event_id": uuid.uuid4(),
            "occurred_at": NOW + dt.timedelta(seconds=seconds),
            "enrolment_id": enrolment_id,
            "meeting_id": "m-1",
            "rcp_id": "rcp-1",
            "meeting_title": "RCP fictive",
            "meeting_date": dt.date(2026, 12, 2),
            "centre": "3C fictif",
            "patient": Patient(
                birth_name=birth_name, used_name=None, first_name="Marie", birth_date=dt.date(1956, 4, 12), sex=sex
            ),
            "consent": consent,
            "requested_by": Person(name="Dr Paul FICTIF"),
        },
        strict=False,
    )


def withdrawn(enrolment_id: str = "enr-1", *, seconds: int = 10) -> EnrolmentWithdrawn:
    return EnrolmentWithdrawn.model_validate(
        {
            "event_id": uuid.uuid4(),
            "occurred_at": NOW + dt.timedelta(seconds=seconds),
            "enrolment_id": enrolment_id,
            "reason": "fictive",
        },
        strict=False,
    )


class Harness:
    def __init__(self, directory: FakeDirectory | None = None) -> None:
        self.store = FakeEnrolmentStore()
        self.directory = directory or FakeDirectory(Candidates((record(),), "exact"))
        self.published: list[IdentityResolved] = []
        self.now = NOW
        self.handlers = Handlers(
            self.store,
            self.directory,
            self.publish,
            ResolverOptions(
                pacs_retry=RetryPolicy.uncapped(3, 0.0),
                error_retries=BackoffSchedule((15, 60), jitter=0),
                lease=LEASE,
                timezone=ZoneInfo("Europe/Paris"),
            ),
            clock=lambda: self.now,
        )

    async def publish(self, outcome: IdentityResolved) -> None:
        self.published.append(outcome)

    def statuses(self) -> list[str]:
        return [outcome.status for outcome in self.published]


# --- enrolled events ---------------------------------------------------------------------------------------


async def test_a_matching_enrolment_publishes_matched_and_records_it() -> None:
    harness = Harness()
    event = enrolled()
    await harness.handlers.on_enrolled(event, DELIVERY)
    [outcome] = harness.published
    assert outcome.status == "matched"
    assert [p.patient_id for p in outcome.pacs_patients] == ["FICTIF-0001"]
    assert outcome.source_event_id == event.event_id
    assert outcome.meeting_id == "m-1"
    assert outcome.reason_code is None
    row = harness.store.rows["enr-1"]
    assert (row.status, row.outcome_event_id, row.resolutions) == ("matched", str(outcome.event_id), 1)


async def test_no_match_publishes_unmatched_with_near_misses() -> None:
    harness = Harness(FakeDirectory(Candidates((record("ESSAI-FICTIF^MARIE-CLAIRE"),), "exact")))
    await harness.handlers.on_enrolled(enrolled(), DELIVERY)
    [outcome] = harness.published
    assert outcome.status == "unmatched"
    assert outcome.reason_code == "patient_not_found"


async def test_no_consent_publishes_no_consent_without_any_query() -> None:
    harness = Harness()
    await harness.handlers.on_enrolled(enrolled(consent=False), DELIVERY)
    assert harness.statuses() == ["no_consent"]
    assert harness.published[0].reason_code == "no_consent"
    assert harness.directory.calls == 0


async def test_an_unusable_dcc_identity_is_unmatched_without_any_query() -> None:
    harness = Harness()
    await harness.handlers.on_enrolled(enrolled(birth_name="ESSAI#FICTIF", sex="U"), DELIVERY)
    assert harness.statuses() == ["unmatched"]
    assert harness.published[0].reason_code == "invalid_identity"
    assert harness.directory.calls == 0


async def test_a_transient_mirc_failure_is_retried_in_place() -> None:
    directory = FakeDirectory(Candidates((record(),), "exact"), failures=[DicomTransientError("busy")])
    harness = Harness(directory)
    await harness.handlers.on_enrolled(enrolled(), DELIVERY)
    assert harness.statuses() == ["matched"]
    assert directory.calls == 2


async def test_mirc_failing_every_try_publishes_error_and_schedules_a_durable_retry() -> None:
    directory = FakeDirectory(failures=[DicomTransientError("down"), PermanentError("no"), DicomTransientError("x")])
    harness = Harness(directory)
    await harness.handlers.on_enrolled(enrolled(), DELIVERY)
    assert directory.calls == 3  # the in-place policy's tries
    [outcome] = harness.published
    assert outcome.status == "error"
    assert outcome.reason_code == "identity_error"
    assert outcome.reason is not None
    assert "20/11/2026 à 10:00:15 (heure de Paris)" in outcome.reason
    row = harness.store.rows["enr-1"]
    assert (row.status, row.attempts, row.next_attempt_at) == ("error", 1, NOW + dt.timedelta(seconds=15))


async def test_a_duplicate_enrolled_event_gives_one_outcome() -> None:
    harness = Harness()
    event = enrolled()
    await harness.handlers.on_enrolled(event, DELIVERY)
    await harness.handlers.on_enrolled(event, DELIVERY)
    assert harness.statuses() == ["matched"]
    assert harness.directory.calls == 1


async def test_an_event_seen_but_not_answered_is_resumed_with_the_same_outcome_id() -> None:
    harness = Harness()
    event = enrolled()
    assert await harness.store.accept(event) is Acceptance.NEW  # the process stopped right after this
    await harness.handlers.on_enrolled(event, DELIVERY)
    assert harness.statuses() == ["matched"]
    assert harness.published[0].event_id == uuid.uuid5(OUTCOME_NAMESPACE, f"{event.event_id}:1")


async def test_an_older_enrolled_event_is_stale_and_answered_by_nothing() -> None:
    harness = Harness()
    await harness.handlers.on_enrolled(enrolled(seconds=10), DELIVERY)
    await harness.handlers.on_enrolled(enrolled(seconds=5), DELIVERY)
    assert harness.statuses() == ["matched"]


async def test_a_newer_enrolled_event_supersedes_with_a_new_outcome_id() -> None:
    harness = Harness()
    await harness.handlers.on_enrolled(enrolled(seconds=0), DELIVERY)
    await harness.handlers.on_enrolled(enrolled(seconds=5, consent=False), DELIVERY)
    assert harness.statuses() == ["matched", "no_consent"]
    assert harness.published[0].event_id != harness.published[1].event_id


async def test_an_outcome_superseded_while_resolving_is_not_published() -> None:
    harness = Harness()
    newer = enrolled(seconds=60)

    class Overtaken(FakeDirectory):
        async def find(self, plan: tuple[QueryLevel, ...], vigilance: tuple[PatientKeys, ...] = ()) -> Candidates:
            await harness.store.accept(newer)  # a newer event recorded by another consumer meanwhile
            return await super().find(plan, vigilance)

    harness.handlers = Handlers(
        harness.store,
        Overtaken(Candidates((record(),), "exact")),
        harness.publish,
        ResolverOptions(pacs_retry=RetryPolicy.uncapped(1, 0.0)),
        clock=lambda: NOW,
    )
    await harness.handlers.on_enrolled(enrolled(), DELIVERY)
    assert harness.published == []
    assert harness.store.rows["enr-1"].event_id == str(newer.event_id)


@pytest.mark.parametrize(("closure", "expected"), [("withdrawal", "withdrawn"), ("consent_refused", "no_consent")])
async def test_no_mirc_try_after_a_closure_handled_between_two_tries(closure: str, expected: str) -> None:
    """MIRC busy at the first try; while the resolution waits to try again, the enrolment is withdrawn, or a
    newer enrolled event says consent was withdrawn (handled by another consumer): the next try would send the
    patient's identity to the PACS for an enrolment that may no longer send any DICOM request."""
    harness = Harness()

    class BusyWhileClosed(FakeDirectory):
        async def find(self, plan: tuple[QueryLevel, ...], vigilance: tuple[PatientKeys, ...] = ()) -> Candidates:
            if self.calls == 0:
                if closure == "withdrawal":
                    await harness.handlers.on_withdrawn(withdrawn(seconds=30), DELIVERY)
                else:
                    await harness.handlers.on_enrolled(enrolled(seconds=30, consent=False), DELIVERY)
            return await super().find(plan, vigilance)

    directory = BusyWhileClosed(Candidates((record(),), "exact"), failures=[DicomTransientError("busy")])
    harness.directory = directory
    harness.handlers = Handlers(
        harness.store,
        directory,
        harness.publish,
        ResolverOptions(pacs_retry=RetryPolicy.uncapped(3, 0.0)),
        clock=lambda: NOW,
    )
    await harness.handlers.on_enrolled(enrolled(), DELIVERY)
    assert directory.calls == 1
    assert harness.statuses() == [expected]


# --- withdrawals -------------------------------------------------------------------------------------------


async def test_a_withdrawal_publishes_withdrawn_naming_the_meeting_known_so_far() -> None:
    harness = Harness()
    await harness.handlers.on_enrolled(enrolled(), DELIVERY)
    withdrawal = withdrawn()
    await harness.handlers.on_withdrawn(withdrawal, DELIVERY)
    assert harness.statuses() == ["matched", "withdrawn"]
    outcome = harness.published[-1]
    assert (outcome.meeting_id, outcome.reason_code) == ("m-1", "enrolment_withdrawn")
    assert outcome.source_event_id == withdrawal.event_id
    # A new current event starts its own count of resolutions.
    assert outcome.event_id == uuid.uuid5(OUTCOME_NAMESPACE, f"{withdrawal.event_id}:1")


async def test_a_withdrawal_of_an_enrolment_never_seen_is_withdrawn_without_meeting() -> None:
    harness = Harness()
    await harness.handlers.on_withdrawn(withdrawn(), DELIVERY)
    [outcome] = harness.published
    assert (outcome.status, outcome.meeting_id, outcome.meeting_date) == ("withdrawn", None, None)
    # An older enrolled event arriving later is stale: no query, no outcome.
    await harness.handlers.on_enrolled(enrolled(seconds=0), DELIVERY)
    assert harness.statuses() == ["withdrawn"]
    assert harness.directory.calls == 0


async def test_a_withdrawal_older_than_the_enrolled_event_is_stale() -> None:
    harness = Harness()
    await harness.handlers.on_enrolled(enrolled(seconds=20), DELIVERY)
    await harness.handlers.on_withdrawn(withdrawn(seconds=10), DELIVERY)
    assert harness.statuses() == ["matched"]


# --- refresh -----------------------------------------------------------------------------------------------


async def test_a_refresh_resolves_a_resolved_enrolment_again_at_once() -> None:
    harness = Harness()
    await harness.handlers.on_enrolled(enrolled(), DELIVERY)
    await harness.handlers.on_refresh(refresh("enr-1"), DELIVERY)
    assert harness.statuses() == ["matched", "matched"]
    assert harness.published[0].event_id != harness.published[1].event_id
    assert harness.directory.calls == 2


@pytest.mark.parametrize("case", ["unknown", "withdrawn", "no_consent", "leased"])
async def test_a_refresh_queries_nothing_for_an_enrolment_it_may_not_resolve(case: str) -> None:
    harness = Harness()
    if case != "unknown":
        await harness.handlers.on_enrolled(enrolled(consent=case != "no_consent"), DELIVERY)
    if case == "withdrawn":
        await harness.handlers.on_withdrawn(withdrawn(), DELIVERY)
    if case == "leased":
        assert await harness.store.claim_for_refresh("enr-1", NOW, LEASE) is not None
    published, calls = len(harness.published), harness.directory.calls
    await harness.handlers.on_refresh(refresh("enr-1"), DELIVERY)
    assert (len(harness.published), harness.directory.calls) == (published, calls)


def refresh(enrolment_id: str) -> ImagingRefresh:
    return ImagingRefresh(event_id=uuid.uuid4(), occurred_at=NOW, enrolment_id=enrolment_id)


# --- durable retries ---------------------------------------------------------------------------------------


async def test_retry_due_resolves_an_error_once_due_and_counts_failed_attempts() -> None:
    directory = FakeDirectory(Candidates((record(),), "exact"), failures=[DicomTransientError("down")] * 6)
    harness = Harness(directory)
    await harness.handlers.on_enrolled(enrolled(), DELIVERY)
    assert await harness.handlers.retry_due() == 0  # not due yet
    harness.now = NOW + dt.timedelta(seconds=15)
    assert await harness.handlers.retry_due() == 1  # fails again: second delay
    row = harness.store.rows["enr-1"]
    assert (row.status, row.attempts, row.next_attempt_at) == ("error", 2, harness.now + dt.timedelta(seconds=60))
    harness.now += dt.timedelta(seconds=60)
    assert await harness.handlers.retry_due() == 1
    assert harness.statuses() == ["error", "error", "matched"]
    assert harness.store.rows["enr-1"].attempts == 0
    assert await harness.handlers.retry_due() == 0
