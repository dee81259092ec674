"""Use cases of the expert-notifier: DCC events and outcomes in, secure e-mails and `expertise.notification` out.

Semantics (CONTRACT.md "Expertise e-mail" and "Lifecycle of an enrolment (v1.1)", ARCHITECTURE.md):
- the six inbound topics (meeting experts, enrolments, selections, withdrawals, identity outcomes, study
  statuses) are not ordered with each other, so every handler only records its fact (newer wins, the pure
  rules of `domain.EnrolmentFacts`) and then *reconciles* the enrolment: from what is known now it decides,
  per role, what must happen (`domain.desired`: wait, send to expert E, cancel, ...), and applies that to
  the role's slot. Reconciling is idempotent: a replayed event, or the same selection three times, changes
  nothing and sends nothing;
- e-mails are sent by a background sender, not by the Kafka handlers (a slow relay must not hold a
  partition): it claims a slot with a due notification under a lease (a conditional update: two
  instances never send the same one), re-decides from the facts as they are then, and again once the TLS
  session with the relay is up, right before the mail transaction (a withdrawal, or the end of the
  meeting day, recorded until then stops the e-mail), and records `sent` immediately after the relay
  accepted the message. The only window for a duplicate e-mail is a crash between the relay's 250 and
  that write (or a send outlasting the lease, which settings forbid): the notification is then still
  `pending` and is sent again when the lease expires. We accept it: the other choice (record first)
  could lose an e-mail;
- roles still `waiting` or `pending` when their meeting day ends are closed by the maintenance round
  (`not_sent`), even if no event comes;
- every change of a role's view is published on `expertise.notification.v1` with the next version, its
  `reason_code` and French `reason`. The view is written with the slot and marked `dirty` until published
  (an outbox): a crash or a Kafka outage between the two delays the publication, never loses it. Event
  ids derive from (slot, version), so a re-publication carries the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Final
from zoneinfo import ZoneInfo

from prometheus_client import Counter, Histogram
from proxymage_shared.dependency_log import Outages
from proxymage_shared.errors import describe
from proxymage_shared.events import (
    EnrolmentWithdrawn,
    ExpertiseNotification,
    ExpertRole,
    IdentityResolved,
    MeetingExperts,
    PatientEnrolled,
    StudiesSelected,
    StudyStatusChanged,
    utc_now,
)
from proxymage_shared.idempotency import LOST_RACE, LostRace, to_ms, until_written
from proxymage_shared.kafka import Delivery
from proxymage_shared.logging import OUTAGES, get_logger
from proxymage_shared.mssante import DEFAULT_ALLOWED_DOMAINS
from proxymage_shared.retry import BackoffSchedule

from expert_notifier.domain import (
    ROLES,
    Desired,
    Enrolled,
    EnrolmentFacts,
    IdentityFact,
    MeetingFacts,
    Notification,
    RoleSlot,
    Selection,
    SendFailure,
    Stamp,
    StudyFact,
    Wanted,
    desired,
    meeting_date_of,
    meeting_end,
    notification_key,
    slot_id,
)
from expert_notifier.message import MailSettings, MeetingText, PatientFacts, build_message, patient_facts, render
from expert_notifier.ports import NotifierRepository, Sender, SlotRecord, SmtpSendError

__all__ = ["Handlers", "LostClaimError", "NotifierOptions", "Sender"]

log = get_logger(__name__)

EMAILS: Final = Counter(
    "proxymage_expertise_emails_total",
    "Expertise e-mail attempts by outcome (sent, failed, retry, configuration, withheld: facts changed "
    "between the claim and the mail transaction).",
    ["outcome"],
)
SEND_SECONDS: Final = Histogram(
    "proxymage_expertise_send_seconds",
    "Duration of one SMTP delivery attempt (connect, STARTTLS, envelope, data).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 90),
)
OUTCOME_NAMESPACE: Final = uuid.UUID("5b8f0d7e-2c61-4f0a-9a3e-7d4c1e2b9f31")

Publish = Callable[[ExpertiseNotification], Awaitable[None]]
SlotChange = Callable[[RoleSlot, SlotRecord | None, dt.datetime], RoleSlot]


@dataclass(frozen=True, slots=True)
class NotifierOptions:
    mail: MailSettings
    envelope_from: str
    allowed_domains: tuple[str, ...] = DEFAULT_ALLOWED_DOMAINS
    # The meeting day ends at midnight in this zone: nothing is sent from then on.
    zone: dt.tzinfo = field(default_factory=lambda: ZoneInfo("Europe/Paris"))
    retries: BackoffSchedule = field(default_factory=BackoffSchedule)
    lease: dt.timedelta = dt.timedelta(minutes=5)
    retention: dt.timedelta = dt.timedelta(days=30)
    republish_after: dt.timedelta = dt.timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class _Decision:
    """What one role of an enrolment should do, decided from the facts read at one moment."""

    wanted: Desired
    meeting_id: str | None
    closes_at: dt.datetime | None

    def apply(self, slot: RoleSlot, now: dt.datetime, *, in_flight: bool) -> RoleSlot:
        return slot.reconcile(self.wanted, self.meeting_id, now, in_flight, self.closes_at)


class Handlers:
    """The expert-notifier's handlers of consumed events, its sender and its maintenance round."""

    def __init__(
        self,
        store: NotifierRepository,
        sender: Sender,
        publish: Publish,
        options: NotifierOptions,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._store = store
        self._sender = sender
        self._publish = publish
        self._options = options
        self._clock = clock
        self.wake = asyncio.Event()

    # --- Kafka handlers: record the fact, then reconcile ---------------------------------------------------

    async def on_meeting_experts(self, event: MeetingExperts, delivery: Delivery) -> None:
        accepted = await self._store.accept_meeting(event)
        enrolments = await self._store.enrolments_of_meeting(event.meeting_id)
        log.info(
            "meeting_experts_received",
            meeting_id=event.meeting_id,
            event_id=str(event.event_id),
            accepted=accepted,
            radiologist=event.on_call_radiologist is not None,
            nuclear_physician=event.on_call_nuclear_physician is not None,
            enrolments=len(enrolments),
        )
        # Even a replayed (not accepted) event reconciles: the previous run may have stopped midway.
        for enrolment_id in enrolments:
            await self.reconcile(enrolment_id)

    async def on_enrolled(self, event: PatientEnrolled, delivery: Delivery) -> None:
        fact = Enrolled(
            stamp=Stamp.of(event.occurred_at, event.event_id),
            meeting_id=event.meeting_id,
            meeting_date=event.meeting_date,
            consent=event.consent,
            patient=patient_facts(event),
        )
        meeting_day = dt.datetime.combine(event.meeting_date, dt.time.min, tzinfo=dt.UTC)
        accepted = await self._store.change_facts(
            event.enrolment_id,
            lambda facts: facts.with_enrolled(fact),
            purge_at=max(self._clock(), meeting_day) + self._options.retention,
        )
        log.info(
            "enrolment_received",
            enrolment_id=event.enrolment_id,
            event_id=str(event.event_id),
            consent=event.consent,
            accepted=accepted,
        )
        await self.reconcile(event.enrolment_id)

    async def on_selected(self, event: StudiesSelected, delivery: Delivery) -> None:
        fact = Selection(
            Stamp.of(event.occurred_at, event.event_id), event.expertise_requested, tuple(event.study_instance_uids)
        )
        accepted = await self._record(event.enrolment_id, lambda facts: facts.with_selection(fact))
        log.info(
            "selection_received",
            enrolment_id=event.enrolment_id,
            event_id=str(event.event_id),
            expertise_requested=event.expertise_requested,
            studies=len(event.study_instance_uids),
            accepted=accepted,
        )
        await self.reconcile(event.enrolment_id)

    async def on_withdrawn(self, event: EnrolmentWithdrawn, delivery: Delivery) -> None:
        stamp = Stamp.of(event.occurred_at, event.event_id)
        accepted = await self._record(event.enrolment_id, lambda facts: facts.with_withdrawal(stamp))
        # The DCC's free-text reason is not logged: it may name the patient.
        log.info(
            "withdrawal_received", enrolment_id=event.enrolment_id, event_id=str(event.event_id), accepted=accepted
        )
        await self.reconcile(event.enrolment_id)

    async def on_identity(self, event: IdentityResolved, delivery: Delivery) -> None:
        fact = IdentityFact(
            # Outcomes from before `source_occurred_at` existed are ordered by their own time.
            source_at=to_ms(event.source_occurred_at or event.occurred_at),
            at=to_ms(event.occurred_at),
            event_id=str(event.event_id),
            status=event.status,
            source_event_id=str(event.source_event_id),
        )
        accepted = await self._record(event.enrolment_id, lambda facts: facts.with_identity(fact))
        log.info(
            "identity_received",
            enrolment_id=event.enrolment_id,
            event_id=str(event.event_id),
            status=event.status,
            accepted=accepted,
        )
        await self.reconcile(event.enrolment_id)

    async def on_study_status(self, event: StudyStatusChanged, delivery: Delivery) -> None:
        fact = StudyFact(event.study_instance_uid, event.version, event.status)
        accepted = await self._record(event.enrolment_id, lambda facts: facts.with_study(fact))
        log.debug(
            "study_status_received",
            enrolment_id=event.enrolment_id,
            study_instance_uid=event.study_instance_uid,
            status=event.status,
            version=event.version,
            accepted=accepted,
        )
        # Even a replay reconciles: the previous run may have stopped between recording and reconciling.
        await self.reconcile(event.enrolment_id)

    async def _record(self, enrolment_id: str, change: Callable[[EnrolmentFacts], EnrolmentFacts]) -> bool:
        # A fact before its enrolment must not live forever: purged like an enrolment would be.
        return await self._store.change_facts(enrolment_id, change, purge_at=self._clock() + self._options.retention)

    # --- reconciliation ----------------------------------------------------------------------------------

    async def _facts(self, enrolment_id: str) -> tuple[EnrolmentFacts, MeetingFacts | None]:
        facts = await self._store.get_facts(enrolment_id) or EnrolmentFacts(enrolment_id)
        meeting_id = facts.enrolled.meeting_id if facts.enrolled is not None else None
        meeting = await self._store.get_meeting(meeting_id) if meeting_id else None
        return facts, meeting

    def _decide(
        self, role: ExpertRole, facts: EnrolmentFacts, meeting: MeetingFacts | None, now: dt.datetime
    ) -> _Decision:
        wanted = desired(
            role, facts, meeting, now=now, zone=self._options.zone, allowed_domains=self._options.allowed_domains
        )
        date = meeting_date_of(facts, meeting)
        return _Decision(
            wanted,
            facts.enrolled.meeting_id if facts.enrolled is not None else None,
            meeting_end(date, self._options.zone) if date is not None else None,
        )

    async def reconcile(self, enrolment_id: str) -> None:
        """Makes each role's slot match what is wanted now (idempotent).

        The slots are decided from the facts read first; a handler of another topic may record a fact and
        reconcile between that read and our writes, and our older decision, written last, would undo its own
        (an e-mail closed as `waiting` that the study's arrival had queued, a withdrawal's cancellation
        reopened as `pending`). So after writing we read the facts again and decide again if they changed:
        either that handler read after our writes, or we read its fact (write then re-read, on both sides)."""
        facts, meeting = await self._facts(enrolment_id)
        while await self._reconcile_with(enrolment_id, facts, meeting):
            now_known = await self._facts(enrolment_id)
            if now_known == (facts, meeting):
                return
            log.info("expertise_decided_again", enrolment_id=enrolment_id)
            facts, meeting = now_known

    async def _reconcile_with(self, enrolment_id: str, facts: EnrolmentFacts, meeting: MeetingFacts | None) -> bool:
        """Writes each role's slot as decided from `facts`; False when there is nothing to write at all."""
        if not facts.expertise_requested and not await self._store.has_slots(enrolment_id):
            return False  # expertise never requested: nothing to say
        now = self._clock()
        for role in ROLES:
            decision = self._decide(role, facts, meeting, now)

            def change(slot: RoleSlot, record: SlotRecord | None, at: dt.datetime, d: _Decision = decision) -> RoleSlot:
                return d.apply(slot, at, in_flight=record is not None and record.leased(at))

            saved = await self._update_slot(enrolment_id, role, change)
            if saved is not None:
                self._log_slot("expertise_reconciled", saved)
        self.wake.set()
        return True

    async def _reconcile_if_changed(
        self, enrolment_id: str, decided_with: tuple[EnrolmentFacts, MeetingFacts | None]
    ) -> None:
        """The sender wrote a decision made from `decided_with`; a handler that recorded a fact meanwhile found
        the slot leased and could only mark the e-mail superseded, and our write then reopened it (a retry
        queued, `pending` shown, for a withdrawn enrolment). Reading again after our write closes that."""
        if await self._facts(enrolment_id) != decided_with:
            log.info("expertise_decided_again", enrolment_id=enrolment_id)
            await self.reconcile(enrolment_id)

    async def _update_slot(
        self,
        enrolment_id: str,
        role: ExpertRole,
        change: SlotChange,
        *,
        token: str | None = None,
        release_lease: bool = False,
    ) -> SlotRecord | None:
        """Read, change, write with optimistic concurrency; publishes the view if it changed.

        With `token`, the change is made only while this worker's claim is the one stored (else
        `LostClaimError`); returns None when nothing had to be written.
        """

        async def attempt() -> SlotRecord | LostRace | None:
            record = await self._store.load_slot(enrolment_id, role)
            if token is not None and (record is None or record.lease_token != token):
                raise LostClaimError(slot_id(enrolment_id, role))
            now = self._clock()
            slot = change(record.slot if record else RoleSlot(enrolment_id, role), record, now)
            if record is not None and slot == record.slot and not release_lease:
                return None
            saved = await self._store.save_slot(record, slot, now, release_lease=release_lease)
            if saved is None:
                return LOST_RACE
            if saved.dirty:
                await self._publish_view(saved)
            return saved

        return await until_written(attempt, what=f"the notification slot {slot_id(enrolment_id, role)}")

    async def _publish_view(self, record: SlotRecord) -> None:
        assert record.view is not None
        slot = record.slot
        reason = record.view.reason
        outcome = ExpertiseNotification(
            event_id=uuid.uuid5(OUTCOME_NAMESPACE, f"{slot_id(slot.enrolment_id, slot.role)}:{record.version}"),
            occurred_at=record.view_at or self._clock(),
            enrolment_id=slot.enrolment_id,
            meeting_id=slot.meeting_id,
            role=slot.role,
            status=record.view.status,
            reason=reason.text if reason else None,
            reason_code=reason.code if reason else None,
            version=record.version,
        )
        await self._publish(outcome)
        await self._store.mark_published(record)
        log.info(
            "expertise_notification_published",
            enrolment_id=slot.enrolment_id,
            role=slot.role,
            status=outcome.status,
            reason_code=outcome.reason_code,
            version=outcome.version,
            event_id=str(outcome.event_id),
        )

    # --- sending -------------------------------------------------------------------------------------------

    async def send_due(self) -> int:
        """Sends every notification that is due now, one claimed slot at a time; returns how many slots."""
        handled = 0
        while True:
            token = uuid.uuid4().hex
            try:
                claimed = await self._store.claim_due(self._clock(), self._options.lease, token)
                if claimed is None:
                    return handled
                handled += 1
                await self._send_claimed(claimed, token)
            except asyncio.CancelledError:
                # Stopping while holding (or taking) a claim: give it back so that the next start, or another
                # instance, goes on without waiting for the lease to expire. If the relay had already accepted
                # the message, this is the documented duplicate window.
                with contextlib.suppress(Exception):
                    await self._store.release_token(token)
                raise

    async def _send_claimed(self, claimed: SlotRecord, token: str) -> None:
        slot = claimed.slot
        enrolment_id, role = slot.enrolment_id, slot.role
        item = slot.due(self._clock())
        if item is None:  # changed between the claim query and now: give the lease back
            with contextlib.suppress(LostClaimError):
                await self._update_slot(enrolment_id, role, _unchanged, token=token, release_lease=True)
            return
        email = item.email
        # First re-check: decide again from the facts as they are now; we hold the lease, so we close the
        # notification ourselves if it is no longer wanted (in_flight=False).
        facts, meeting = await self._facts(enrolment_id)
        decision = self._decide(role, facts, meeting, self._clock())
        go = False

        def begin(current: RoleSlot, _record: SlotRecord | None, now: dt.datetime) -> RoleSlot:
            nonlocal go
            checked = decision.apply(current, now, in_flight=False)
            go = checked.is_due(email, now)
            return checked.begin_send(email) if go else checked

        try:
            await self._update_slot(enrolment_id, role, begin, token=token)
            if not go:
                await self._update_slot(enrolment_id, role, _unchanged, token=token, release_lease=True)
                await self._reconcile_if_changed(enrolment_id, (facts, meeting))
                return
        except LostClaimError:
            return

        written_from = _what_the_email_says(item.name, facts, meeting)

        async def still_wanted() -> bool:
            """Second re-check, once connected to the relay and right before MAIL FROM: still wanted for this
            address, and still true (a meeting renamed or moved, a patient's name corrected, an expert's name
            changed meanwhile: withheld, the next round writes it again from the new facts)."""
            now_facts, now_meeting = await self._facts(enrolment_id)
            wanted = self._decide(role, now_facts, now_meeting, self._clock()).wanted
            return (
                isinstance(wanted, Wanted)
                and wanted.allowed
                and wanted.expert.email.lower() == email
                and _what_the_email_says(wanted.expert.name, now_facts, now_meeting) == written_from
            )

        started = time.perf_counter()
        failure: SendFailure | None = None
        message_id: str | None = None
        sent = False
        try:
            message = self._message(slot, item, facts, meeting)
            message_id = str(message["Message-ID"])
            sent = await self._sender.send(
                message, sender=self._options.envelope_from, recipient=item.email, proceed=still_wanted
            )
        except SmtpSendError as error:
            failure = error.failure
        except _MissingFactsError:
            failure = SendFailure("permanent", "les informations de l'inscription ne sont plus disponibles")
        finally:
            SEND_SECONDS.observe(time.perf_counter() - started)
        # Record the outcome, then close the notification if the facts changed meanwhile (a failed attempt of
        # a withdrawn enrolment ends `cancelled`, not retried).
        facts, meeting = await self._facts(enrolment_id)
        after = self._decide(role, facts, meeting, self._clock())

        def outcome_of(current: RoleSlot, now: dt.datetime) -> RoleSlot:
            if sent:
                return current.record_sent(email, now)
            if failure is not None:
                return current.record_failure(email, failure, now, self._options.retries)
            return current.end_send()

        def record(current: RoleSlot, _record: SlotRecord | None, now: dt.datetime) -> RoleSlot:
            return after.apply(outcome_of(current, now), now, in_flight=False)

        def record_without_claim(current: RoleSlot, stored: SlotRecord | None, now: dt.datetime) -> RoleSlot:
            return after.apply(outcome_of(current, now), now, in_flight=stored is not None and stored.leased(now))

        try:
            await self._update_slot(enrolment_id, role, record, token=token, release_lease=True)
        except LostClaimError:
            # Our claim was taken over (the lease expired): record the outcome all the same, keep theirs.
            await self._update_slot(enrolment_id, role, record_without_claim)
        await self._reconcile_if_changed(enrolment_id, (facts, meeting))
        if sent:
            outcome = "sent"
        elif failure is None:
            outcome = "withheld"
        else:
            outcome = {"permanent": "failed", "transient": "retry", "configuration": "configuration"}[failure.kind]
        EMAILS.labels(outcome).inc()
        fields = {
            "enrolment_id": enrolment_id,
            "role": role,
            "attempt": item.attempts + 1,
            "message_id": message_id,
            "seconds": round(time.perf_counter() - started, 3),
        }
        if sent:
            log.info("expertise_email_sent", **fields)
        elif failure is None:
            log.info("expertise_email_withheld", wanted=type(after.wanted).__name__, **fields)
        elif failure.kind == "configuration":
            log.error("expertise_email_configuration_error", reason=failure.detail, **fields)
        else:
            log.warning("expertise_email_not_sent", kind=failure.kind, reason=failure.detail, **fields)

    def _message(
        self, slot: RoleSlot, item: Notification, facts: EnrolmentFacts, meeting: MeetingFacts | None
    ) -> EmailMessage:
        said = _what_the_email_says(item.name, facts, meeting)
        if said is None:
            raise _MissingFactsError
        rendered = render(*said, self._options.mail)
        return build_message(
            notification_key=notification_key(slot.enrolment_id, slot.role, item.email),
            recipient_name=item.name,
            recipient_email=item.email,
            rendered=rendered,
            settings=self._options.mail,
            now=self._clock(),
        )

    # --- background loops ------------------------------------------------------------------------------------

    async def send_loop(self, stop: asyncio.Event, poll_seconds: float, outages: Outages = OUTAGES) -> None:
        """Sends what is due every `poll_seconds` (or when woken); failing rounds (MongoDB down) are one outage,
        `send_round`, logged once and reminded, not a warning every poll."""
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.send_due()
            except Exception as error:
                outages.down("send_round", describe(error))
            else:
                outages.up("send_round")
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)

    async def maintain(self) -> tuple[int, int]:
        """Closes roles whose meeting day is over, publishes views left unpublished (Kafka was down) and
        purges the facts of enrolments never enrolled (the others go by retention: `store.sweep_expired`)."""
        now = self._clock()
        closed = 0
        for enrolment_id in await self._store.closing(now):
            await self.reconcile(enrolment_id)
            closed += 1
        republished = 0
        for record in await self._store.unpublished(now - self._options.republish_after):
            await self._publish_view(record)
            republished += 1
        purged = await self._store.purge_enrolments(now)
        if republished or purged or closed:
            log.info("maintenance", closed_enrolments=closed, republished=republished, purged_enrolments=purged)
        return republished, purged

    @staticmethod
    def _log_slot(event: str, record: SlotRecord) -> None:
        slot = record.slot
        log.info(
            event,
            enrolment_id=slot.enrolment_id,
            role=slot.role,
            mode=slot.mode,
            status=record.view.status if record.view else None,
            version=record.version,
        )


def _what_the_email_says(
    expert_name: str, facts: EnrolmentFacts, meeting: MeetingFacts | None
) -> tuple[str, PatientFacts, MeetingText] | None:
    """Every fact the e-mail's text is written from (None: not all known), so that the last check before
    sending compares what was written with what is true now."""
    if facts.enrolled is None or meeting is None:
        return None
    return expert_name, facts.enrolled.patient, MeetingText(meeting.title, meeting.date, meeting.centre)


class _MissingFactsError(Exception):
    pass


class LostClaimError(Exception):
    """This worker's lease on a slot expired and another worker claimed it."""


def _unchanged(slot: RoleSlot, _record: SlotRecord | None, _now: dt.datetime) -> RoleSlot:
    return slot
