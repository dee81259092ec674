"""The expert-notifier's use cases (`handlers.Handlers`) with in-memory fakes: every branch, no server."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from expert_notifier.domain import FailureKind, SendFailure, Stamp
from expert_notifier.handlers import Handlers, NotifierOptions
from expert_notifier.message import MailSettings
from expert_notifier.ports import SlotRecord, SmtpSendError
from proxymage_shared.dependency_log import Outages
from proxymage_shared.errors import WriteConflictError
from proxymage_shared.events import (
    EnrolmentWithdrawn,
    Expert,
    ExpertiseNotification,
    ExpertRole,
    IdentityResolved,
    IdentityStatus,
    MeetingExperts,
    Patient,
    PatientEnrolled,
    Person,
    StudiesSelected,
    StudyStatusChanged,
)
from proxymage_shared.kafka import Delivery
from proxymage_shared.retry import BackoffSchedule

from .fakes import FakeNotifierStore, FakeSender

PARIS = ZoneInfo("Europe/Paris")
NOW = dt.datetime(2026, 9, 15, 10, tzinfo=dt.UTC)
MEETING_DATE = dt.date(2026, 9, 17)
DELIVERY = Delivery(topic="test", partition=0, offset=0, key=None)
EXPERT = "jeanne.fictive@chu-fictif.mssante.fr"
UID = "1.2.826.0.1.3680043.10.1"


def fields(minutes: float = 0) -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "occurred_at": NOW + dt.timedelta(minutes=minutes)}


def meeting(*, radiologist: str | None = EXPERT, minutes: float = 0) -> MeetingExperts:
    expert = Expert(name="Dr Jeanne FICTIVE", email=radiologist) if radiologist else None
    return MeetingExperts(
        **fields(minutes), meeting_id="m-1", rcp_id="rcp-1", title="RCP fictive", date=MEETING_DATE,
        centre="3C fictif", on_call_radiologist=expert, on_call_nuclear_physician=None,
    )  # fmt: skip


def enrolled(*, consent: bool = True, minutes: float = 0) -> PatientEnrolled:
    return PatientEnrolled(
        **fields(minutes), enrolment_id="enr-1", meeting_id="m-1", rcp_id="rcp-1", meeting_title="RCP fictive",
        meeting_date=MEETING_DATE, centre="3C fictif",
        patient=Patient(birth_name="FICTIF", used_name=None, first_name="Ida", birth_date=dt.date(1950, 2, 3), sex="F"),
        consent=consent, requested_by=Person(name="Dr FICTIF"),
    )  # fmt: skip


def selected(*, expertise: bool = True, minutes: float = 0) -> StudiesSelected:
    return StudiesSelected(
        **fields(minutes), enrolment_id="enr-1", study_instance_uids=(UID,), expertise_requested=expertise
    )


def identity(source: PatientEnrolled | EnrolmentWithdrawn, status: IdentityStatus = "matched") -> IdentityResolved:
    return IdentityResolved(
        **fields(1), enrolment_id="enr-1", source_event_id=source.event_id, source_occurred_at=source.occurred_at,
        status=status,
    )  # fmt: skip


def available(version: int = 1) -> StudyStatusChanged:
    return StudyStatusChanged(
        **fields(2), enrolment_id="enr-1", study_instance_uid=UID, status="available", version=version, attempts=0
    )


def withdrawn(minutes: float = 5) -> EnrolmentWithdrawn:
    return EnrolmentWithdrawn(**fields(minutes), enrolment_id="enr-1", reason="fictive")


class Harness:
    def __init__(self, store: FakeNotifierStore | None = None, handlers: type[Handlers] = Handlers) -> None:
        self.store = store or FakeNotifierStore()
        self.sender = FakeSender()
        self.published: list[ExpertiseNotification] = []
        self.publish_failures = 0
        self.now = NOW
        options = NotifierOptions(
            mail=MailSettings("Proxymage <p@3c.mssante.test>", None, "https://dcc.invalid/", "3c.mssante.test"),
            envelope_from="p@3c.mssante.test",
            zone=PARIS,
            retries=BackoffSchedule((60,), jitter=0),
        )
        self.handlers = handlers(self.store, self.sender, self.publish, options, clock=lambda: self.now)
        self.enrolled = enrolled()

    async def publish(self, outcome: ExpertiseNotification) -> None:
        if self.publish_failures:
            self.publish_failures -= 1
            raise ConnectionError("Kafka down")
        self.published.append(outcome)

    async def ready(self, *, meeting_last: bool = False) -> None:
        """Every fact an e-mail needs, the meeting's first (or last)."""
        if not meeting_last:
            await self.handlers.on_meeting_experts(meeting(), DELIVERY)
        await self.handlers.on_enrolled(self.enrolled, DELIVERY)
        await self.handlers.on_selected(selected(), DELIVERY)
        await self.handlers.on_identity(identity(self.enrolled), DELIVERY)
        await self.handlers.on_study_status(available(), DELIVERY)
        if meeting_last:
            await self.handlers.on_meeting_experts(meeting(), DELIVERY)

    def views(self, role: ExpertRole = "radiologist") -> list[tuple[str, str | None]]:
        return [(o.status, o.reason_code) for o in self.published if o.role == role]

    def slot(self, role: ExpertRole = "radiologist") -> SlotRecord:
        return self.store.slots[f"enr-1|{role}"]


# --- recording facts and reconciling -------------------------------------------------------------------------


async def test_facts_without_a_request_for_expertise_write_no_slot() -> None:
    harness = Harness()
    await harness.handlers.on_meeting_experts(meeting(), DELIVERY)
    await harness.handlers.on_enrolled(harness.enrolled, DELIVERY)
    await harness.handlers.on_identity(identity(harness.enrolled), DELIVERY)
    assert harness.store.slots == {}
    assert harness.published == []


async def test_a_ready_enrolment_gets_one_email_for_the_on_call_expert() -> None:
    harness = Harness()
    await harness.ready()
    assert harness.views() == [
        ("waiting", "waiting_identity"),
        ("waiting", "waiting_available_study"),
        ("pending", None),
    ]
    assert harness.views("nuclear_physician") == [("skipped", "no_expert")]
    assert await harness.handlers.send_due() == 1
    [(message, recipient)] = harness.sender.sent
    assert recipient == EXPERT
    assert message["To"] is not None
    assert harness.views()[-1] == ("sent", None)
    assert harness.slot().lease_token is None
    assert await harness.handlers.send_due() == 0


async def test_replayed_events_change_nothing_and_send_nothing_more() -> None:
    harness = Harness()
    await harness.ready()
    await harness.handlers.send_due()
    published = list(harness.published)
    await harness.ready()  # the same facts again (new event ids, same times): nothing newer
    await harness.handlers.on_study_status(available(), DELIVERY)
    assert harness.published == published
    assert await harness.handlers.send_due() == 0
    assert len(harness.sender.sent) == 1


async def test_the_meeting_arriving_last_reconciles_its_enrolments() -> None:
    harness = Harness()
    await harness.ready(meeting_last=True)
    assert harness.views()[-2:] == [("waiting", "waiting_meeting"), ("pending", None)]


async def test_an_older_meeting_event_is_not_accepted_but_still_reconciles() -> None:
    harness = Harness()
    await harness.ready()
    await harness.handlers.on_meeting_experts(meeting(radiologist=None, minutes=-10), DELIVERY)
    assert harness.views()[-1] == ("pending", None)


async def test_a_withdrawal_before_sending_cancels_and_nothing_is_sent() -> None:
    harness = Harness()
    await harness.ready()
    await harness.handlers.on_withdrawn(withdrawn(), DELIVERY)
    assert harness.views()[-1] == ("cancelled", "enrolment_withdrawn")
    assert await harness.handlers.send_due() == 0
    assert harness.sender.sent == []


async def test_a_withdrawn_identity_outcome_cancels_like_the_withdrawal() -> None:
    harness = Harness()
    await harness.ready()
    await harness.handlers.on_identity(identity(withdrawn(), "withdrawn"), DELIVERY)
    assert harness.views()[-1] == ("cancelled", "enrolment_withdrawn")


async def test_consent_withdrawn_by_a_newer_enrolled_event_cancels() -> None:
    harness = Harness()
    await harness.ready()
    await harness.handlers.on_enrolled(enrolled(consent=False, minutes=5), DELIVERY)
    assert harness.views()[-1] == ("cancelled", "consent_withdrawn")


async def test_a_slot_that_keeps_changing_gives_up_with_a_write_conflict() -> None:
    harness = Harness(FakeNotifierStore(lost_saves=3))
    await harness.ready()  # three lost races: retried
    assert harness.views()[-1] == ("pending", None)
    harness.store.lost_saves = 10
    with pytest.raises(WriteConflictError):
        await harness.handlers.on_withdrawn(withdrawn(), DELIVERY)


def run_once_before_save(harness: Harness, other: Callable[[], Awaitable[None]], *, skip: int = 0) -> None:
    """Runs `other` (a handler of another topic) once, right before the `skip`+1-th slot write: between that
    writer's read of the facts and its write."""
    remaining = skip

    async def hook() -> None:
        nonlocal remaining
        if remaining:
            remaining -= 1
            return
        harness.store.before_save = None
        await other()

    harness.store.before_save = hook


async def test_an_outcome_judged_with_old_facts_does_not_undo_the_email_a_newer_fact_queued() -> None:
    """The identity outcome read the facts before the study became available; the study's handler, meanwhile,
    queued the e-mail. Written last with its old decision (waiting for a study), the outcome closed it: the
    expert was never told. It must read the facts again after writing and decide again."""
    harness = Harness()
    await harness.handlers.on_meeting_experts(meeting(), DELIVERY)
    await harness.handlers.on_enrolled(harness.enrolled, DELIVERY)
    await harness.handlers.on_selected(selected(), DELIVERY)

    async def study_available() -> None:
        await harness.handlers.on_study_status(available(), DELIVERY)

    run_once_before_save(harness, study_available)
    await harness.handlers.on_identity(identity(harness.enrolled), DELIVERY)
    assert harness.views()[-1] == ("pending", None)
    assert await harness.handlers.send_due() == 1
    assert [recipient for _, recipient in harness.sender.sent] == [EXPERT]


async def test_a_withdrawal_handled_while_a_study_queues_the_email_still_cancels_it() -> None:
    """The study's handler decided to send with the facts before the withdrawal; written after the withdrawal's
    cancellation, its decision reopened the e-mail: the DCC was told `pending` for a withdrawn enrolment."""
    harness = Harness()
    await harness.handlers.on_meeting_experts(meeting(), DELIVERY)
    await harness.handlers.on_enrolled(harness.enrolled, DELIVERY)
    await harness.handlers.on_selected(selected(), DELIVERY)
    await harness.handlers.on_identity(identity(harness.enrolled), DELIVERY)

    async def withdraw() -> None:
        await harness.handlers.on_withdrawn(withdrawn(), DELIVERY)

    run_once_before_save(harness, withdraw)
    await harness.handlers.on_study_status(available(), DELIVERY)
    assert harness.views()[-1] == ("cancelled", "enrolment_withdrawn")
    assert harness.slot().slot.next_due_at() is None
    assert await harness.handlers.send_due() == 0
    assert harness.sender.sent == []


# --- sending -----------------------------------------------------------------------------------------------


async def test_a_withdrawal_recorded_while_connecting_stops_the_email() -> None:
    harness = Harness()
    await harness.ready()

    async def withdraw() -> None:
        await harness.handlers.on_withdrawn(withdrawn(), DELIVERY)

    harness.sender.on_connect = withdraw
    assert await harness.handlers.send_due() == 1
    assert harness.sender.sent == []
    assert harness.views()[-1] == ("cancelled", "enrolment_withdrawn")
    assert harness.slot().lease_token is None
    assert harness.slot().slot.sending is None


async def test_a_meeting_changed_while_connecting_is_not_mailed_with_its_old_title() -> None:
    """The e-mail was written from the facts of the first check; the meeting's new title (another topic)
    arrives while connecting, for the same expert: the last check must see that the written e-mail is no longer
    true and withhold it, and the next round sends it rewritten."""
    harness = Harness()
    await harness.ready()
    renamed = meeting(minutes=5).model_copy(update={"title": "RCP fictive renommée"})

    async def rename() -> None:
        harness.sender.on_connect = None
        await harness.handlers.on_meeting_experts(renamed, DELIVERY)

    harness.sender.on_connect = rename
    assert await harness.handlers.send_due() == 2  # withheld, then sent rewritten
    assert [str(message["Subject"]) for message, _ in harness.sender.sent] == [
        "Demande d'expertise – RCP fictive renommée du 17/09/2026"
    ]
    assert harness.views()[-1] == ("sent", None)


async def test_facts_changed_between_the_claim_and_the_first_check_release_the_claim() -> None:
    harness = Harness()
    await harness.ready()

    async def then_withdrawn(claimed: SlotRecord) -> SlotRecord:
        # Recorded by a consumer right after the claim (it sees the lease: superseded).
        await harness.store.change_facts("enr-1", lambda f: f.with_withdrawal(_stamp(withdrawn())), purge_at=NOW)
        return claimed

    harness.store.after_claim = then_withdrawn
    assert await harness.handlers.send_due() == 1
    assert harness.sender.sent == []
    assert harness.views()[-1] == ("cancelled", "enrolment_withdrawn")
    assert harness.slot().lease_token is None


async def test_a_claimed_slot_with_nothing_due_any_more_gives_its_lease_back() -> None:
    harness = Harness()
    await harness.ready()

    async def then_moved_later(claimed: SlotRecord) -> SlotRecord:
        # Its notification moved later (as a retry's would) between the claim query and the check.
        later = replace(claimed.slot.notifications[0], next_attempt_at=NOW + dt.timedelta(hours=1))
        moved = replace(claimed, slot=replace(claimed.slot, notifications=(later,)))
        harness.store.slots["enr-1|radiologist"] = moved
        return moved

    harness.store.after_claim = then_moved_later
    assert await harness.handlers.send_due() == 1
    assert harness.sender.sent == []
    assert harness.slot().lease_token is None


async def test_a_claim_taken_over_before_sending_sends_nothing() -> None:
    harness = Harness()
    await harness.ready()

    async def then_taken_over(claimed: SlotRecord) -> SlotRecord:
        harness.store.slots["enr-1|radiologist"] = replace(claimed, lease_token="another-worker")
        return claimed

    harness.store.after_claim = then_taken_over
    assert await harness.handlers.send_due() == 1
    assert harness.sender.sent == []
    assert harness.slot().lease_token == "another-worker"


async def test_a_claim_taken_over_during_the_send_still_records_it_sent() -> None:
    harness = Harness()
    await harness.ready()

    async def taken_over() -> None:
        key = "enr-1|radiologist"
        later = harness.now + dt.timedelta(hours=1)
        harness.store.slots[key] = replace(harness.store.slots[key], lease_token="another", lease_until=later)

    harness.sender.on_connect = taken_over
    assert await harness.handlers.send_due() == 1
    assert len(harness.sender.sent) == 1
    assert harness.views()[-1] == ("sent", None)
    assert harness.slot().lease_token == "another"  # theirs is kept


@pytest.mark.parametrize(
    ("kind", "view"),
    [
        ("transient", ("pending", "send_retrying")),
        ("configuration", ("pending", "smtp_configuration")),
        ("permanent", ("failed", "send_failed")),
    ],
)
async def test_a_failed_send_is_retried_or_failed_by_its_kind(kind: FailureKind, view: tuple[str, str]) -> None:
    harness = Harness()
    await harness.ready()
    harness.sender.failures = [SmtpSendError(SendFailure(kind, "le relais a répondu 4xx"))]
    assert await harness.handlers.send_due() == 1
    assert harness.views()[-1] == view
    assert harness.slot().slot.notifications[0].attempts == 1
    if kind == "permanent":
        return
    assert await harness.handlers.send_due() == 0  # not due before its delay
    harness.now += dt.timedelta(seconds=60)
    assert await harness.handlers.send_due() == 1
    assert harness.views()[-1] == ("sent", None)


async def test_a_withdrawal_handled_while_a_failed_attempt_is_recorded_cancels_the_retry() -> None:
    """The sender read the facts after a failed attempt, then a withdrawal was handled (the slot still leased:
    it only marks the e-mail superseded), then the sender wrote its retry with the old decision: the DCC saw
    `pending` (retrying) for a withdrawn enrolment until the next attempt. The sender must read again."""
    harness = Harness()
    await harness.ready()
    harness.sender.failures = [SmtpSendError(SendFailure("transient", "le relais a répondu 4xx"))]

    async def withdraw() -> None:
        await harness.handlers.on_withdrawn(withdrawn(), DELIVERY)

    run_once_before_save(harness, withdraw, skip=1)  # the sender's first write begins the send, its second records
    assert await harness.handlers.send_due() == 1
    assert harness.views()[-1] == ("cancelled", "enrolment_withdrawn")
    assert harness.slot().slot.next_due_at() is None
    assert harness.slot().lease_token is None
    harness.now += dt.timedelta(seconds=60)
    assert await harness.handlers.send_due() == 0
    assert harness.sender.sent == []


async def test_stopping_while_sending_gives_the_claim_back() -> None:
    harness = Harness()
    await harness.ready()
    harness.sender.failures = [asyncio.CancelledError()]
    with pytest.raises(asyncio.CancelledError):
        await harness.handlers.send_due()
    assert harness.slot().lease_token is None
    assert harness.slot().lease_until is None


async def test_the_send_loop_reports_failed_rounds_as_one_outage_without_their_message_and_goes_on() -> None:
    harness = Harness()
    stop = asyncio.Event()
    rounds = 0
    notices: list[tuple[str, dict[str, Any]]] = []

    async def failing(now: dt.datetime, lease: dt.timedelta, token: str) -> SlotRecord | None:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            stop.set()
        raise RuntimeError("a message quoting FICTIF Ida")

    harness.store.claim_due = failing  # type: ignore[method-assign]
    outages = Outages(lambda level, event, fields: notices.append((event, fields)))
    await asyncio.wait_for(harness.handlers.send_loop(stop, poll_seconds=0.01, outages=outages), timeout=5)
    assert rounds == 3
    assert notices == [("dependency_down", {"dependency": "send_round", "error": "RuntimeError"})]
    assert "FICTIF" not in repr(notices)


# --- maintenance -------------------------------------------------------------------------------------------


async def test_maintenance_closes_roles_whose_meeting_day_is_over() -> None:
    harness = Harness()
    await harness.ready()
    harness.now = dt.datetime(2026, 9, 17, 22, 0, tzinfo=dt.UTC)  # midnight in Paris: the day is over
    await harness.handlers.maintain()
    assert harness.views()[-1] == ("not_sent", "meeting_passed")
    assert await harness.handlers.send_due() == 0


async def test_maintenance_publishes_views_left_unpublished() -> None:
    harness = Harness()
    harness.publish_failures = 1
    await harness.handlers.on_meeting_experts(meeting(), DELIVERY)
    await harness.handlers.on_enrolled(harness.enrolled, DELIVERY)
    with pytest.raises(ConnectionError):
        await harness.handlers.on_selected(selected(), DELIVERY)
    harness.now += dt.timedelta(seconds=30)
    assert await harness.handlers.maintain() == (1, 0)
    assert harness.views() == [("waiting", "waiting_identity")]
    assert await harness.handlers.maintain() == (0, 0)


async def test_maintenance_purges_facts_of_enrolments_never_enrolled() -> None:
    harness = Harness()
    await harness.handlers.on_selected(selected(), DELIVERY)
    assert harness.views() == [("waiting", "waiting_enrolment")]
    assert await harness.handlers.maintain() == (0, 0)
    harness.now += dt.timedelta(days=31)
    assert await harness.handlers.maintain() == (0, 1)
    assert harness.store.facts == {}
    assert harness.store.slots == {}


def _stamp(event: EnrolmentWithdrawn) -> Stamp:
    return Stamp.of(event.occurred_at, event.event_id)
