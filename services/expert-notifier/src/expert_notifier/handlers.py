"""Use cases of the expert-notifier: DCC events in, secure e-mails and `expertise.notification` out.

Semantics (CONTRACT.md "Expertise e-mail", ARCHITECTURE.md):
- the three inbound topics are not ordered with each other, so every handler only records its fact
  (newer event wins) and then *reconciles* the enrolment: from what is known now it decides, per role,
  which expert must get an e-mail (`domain.desired`), and applies that to the role's slot. Reconciling is
  idempotent: a replayed event, or the same selection three times, changes nothing and sends nothing;
- e-mails are sent by a background sender, not by the Kafka handlers (a slow relay must not hold a
  partition): it claims a slot with a due notification under a lease (a conditional update: two
  instances never send the same one), sends, and records `sent` immediately after the relay accepted the
  message. The only window for a duplicate e-mail is a crash between the relay's 250 and that write (or a
  send outlasting the lease, which settings forbid): the notification is then still `pending` and is sent
  again when the lease expires. We accept it: the other choice (record first) could lose an e-mail;
- every change of a role's view is published on `expertise.notification.v1` with the next version. The
  view is written with the slot and marked `dirty` until published (an outbox): a crash or a Kafka outage
  between the two delays the publication, never loses it. Event ids derive from (slot, version), so a
  re-publication carries the same id.
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
from typing import Final, Protocol

from prometheus_client import Counter, Histogram
from proxymage_shared.errors import TransientError
from proxymage_shared.events import (
    ExpertiseNotification,
    ExpertRole,
    MeetingExperts,
    PatientEnrolled,
    StudiesSelected,
    utc_now,
)
from proxymage_shared.kafka import Delivery
from proxymage_shared.logging import get_logger
from proxymage_shared.retry import BackoffSchedule

from expert_notifier.domain import ROLES, Desired, Notification, RoleSlot, SendFailure, desired
from expert_notifier.message import MailSettings, MeetingText, build_message, patient_facts, render
from expert_notifier.smtp import SmtpSendError
from expert_notifier.store import NotifierStore, SlotRecord, notification_key, slot_id

log = get_logger(__name__)

EMAILS: Final = Counter(
    "proxymage_expertise_emails_total",
    "Expertise e-mail attempts by outcome (sent, failed, retry, configuration) and new refusals/skips.",
    ["outcome"],
)
SEND_SECONDS: Final = Histogram(
    "proxymage_expertise_send_seconds",
    "Duration of one SMTP delivery attempt (connect, STARTTLS, envelope, data).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 90),
)
OUTCOME_NAMESPACE: Final = uuid.UUID("5b8f0d7e-2c61-4f0a-9a3e-7d4c1e2b9f31")
SLOT_WRITE_ATTEMPTS: Final = 10

Publish = Callable[[ExpertiseNotification], Awaitable[None]]


class Sender(Protocol):
    async def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None: ...


@dataclass(frozen=True, slots=True)
class NotifierOptions:
    mail: MailSettings
    envelope_from: str
    allowed_domains: tuple[str, ...] = ("*.mssante.fr",)
    give_up_days_after_meeting: int = 1
    retries: BackoffSchedule = field(default_factory=BackoffSchedule)
    lease: dt.timedelta = dt.timedelta(minutes=5)
    retention: dt.timedelta = dt.timedelta(days=30)
    republish_after: dt.timedelta = dt.timedelta(seconds=10)


class Notifier:
    def __init__(
        self,
        store: NotifierStore,
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
        meeting_day = dt.datetime.combine(event.meeting_date, dt.time.min, tzinfo=dt.UTC)
        accepted = await self._store.accept_enrolment(
            event.enrolment_id,
            event.occurred_at,
            meeting_id=event.meeting_id,
            patient=patient_facts(event),
            purge_at=max(self._clock(), meeting_day) + self._options.retention,
        )
        log.info("enrolment_received", enrolment_id=event.enrolment_id, event_id=str(event.event_id), accepted=accepted)
        await self.reconcile(event.enrolment_id)

    async def on_selected(self, event: StudiesSelected, delivery: Delivery) -> None:
        accepted = await self._store.accept_selection(
            event.enrolment_id,
            event.occurred_at,
            expertise_requested=event.expertise_requested,
            purge_at=self._clock() + self._options.retention,
        )
        log.info(
            "selection_received",
            enrolment_id=event.enrolment_id,
            event_id=str(event.event_id),
            expertise_requested=event.expertise_requested,
            accepted=accepted,
        )
        await self.reconcile(event.enrolment_id)

    # --- reconciliation ----------------------------------------------------------------------------------

    async def reconcile(self, enrolment_id: str) -> None:
        """Makes each role's slot match what is wanted now (idempotent)."""
        enrolment = await self._store.get_enrolment(enrolment_id)
        requested = bool(enrolment is not None and enrolment.expertise_requested)
        if not requested and not await self._store.has_slots(enrolment_id):
            return  # expertise never requested: nothing to say
        meeting_id = enrolment.meeting_id if enrolment is not None and enrolment.patient is not None else None
        meeting = await self._store.get_meeting(meeting_id) if meeting_id else None
        for role in ROLES:
            wanted = desired(
                role,
                expertise_requested=requested,
                meeting_id=meeting_id,
                meeting=meeting,
                allowed_domains=self._options.allowed_domains,
                give_up_days_after_meeting=self._options.give_up_days_after_meeting,
            )
            saved = await self._update_slot(enrolment_id, role, _reconciler(wanted, meeting_id))
            if saved is not None:
                self._log_slot("expertise_reconciled", saved)
        self.wake.set()

    async def _update_slot(
        self,
        enrolment_id: str,
        role: ExpertRole,
        change: Callable[[RoleSlot, SlotRecord | None, dt.datetime], RoleSlot],
        *,
        token: str | None = None,
        release_lease: bool = False,
    ) -> SlotRecord | None:
        """Read, change, write with optimistic concurrency; publishes the view if it changed.

        With `token`, the change is made only while this worker's claim is the one stored (else
        `LostClaimError`); returns None when nothing had to be written.
        """
        for _ in range(SLOT_WRITE_ATTEMPTS):
            record = await self._store.load_slot(enrolment_id, role)
            if token is not None and (record is None or record.lease_token != token):
                raise LostClaimError(slot_id(enrolment_id, role))
            now = self._clock()
            slot = change(record.slot if record else RoleSlot(enrolment_id, role), record, now)
            if record is not None and slot == record.slot and not release_lease:
                return None
            saved = await self._store.save_slot(record, slot, now, release_lease=release_lease)
            if saved is None:
                continue
            if saved.dirty:
                await self._publish_view(saved)
            return saved
        raise TransientError(f"the notification slot {slot_id(enrolment_id, role)} kept changing; try again")

    async def _publish_view(self, record: SlotRecord) -> None:
        assert record.view is not None
        slot = record.slot
        outcome = ExpertiseNotification(
            event_id=uuid.uuid5(OUTCOME_NAMESPACE, f"{slot_id(slot.enrolment_id, slot.role)}:{record.version}"),
            occurred_at=record.view_at or self._clock(),
            enrolment_id=slot.enrolment_id,
            meeting_id=slot.meeting_id,
            role=slot.role,
            status=record.view.status,
            reason=record.view.reason,
            version=record.version,
        )
        await self._publish(outcome)
        await self._store.mark_published(record)
        log.info(
            "expertise_notification_published",
            enrolment_id=slot.enrolment_id,
            role=slot.role,
            status=outcome.status,
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
        item = slot.due(self._clock())
        try:
            if item is None:  # changed between the claim query and now: give the lease back
                await self._update_slot(slot.enrolment_id, slot.role, _unchanged, token=token, release_lease=True)
                return
            email = item.email

            def begin(current: RoleSlot, _record: SlotRecord | None, now: dt.datetime) -> RoleSlot:
                if not current.is_due(email, now):  # skipped or superseded since the claim
                    raise _NoLongerDueError
                return current.begin_send(email)

            await self._update_slot(slot.enrolment_id, slot.role, begin, token=token)
        except _NoLongerDueError:
            await self._update_slot(slot.enrolment_id, slot.role, _unchanged, token=token, release_lease=True)
            return
        except LostClaimError:
            return
        started = time.perf_counter()
        failure: SendFailure | None = None
        message_id: str | None = None
        try:
            message = await self._message(slot, item)
            message_id = str(message["Message-ID"])
            await self._sender.send(message, sender=self._options.envelope_from, recipient=item.email)
        except SmtpSendError as error:
            failure = error.failure
        except _MissingFactsError as error:
            failure = SendFailure("permanent", str(error))
        finally:
            SEND_SECONDS.observe(time.perf_counter() - started)
        now_failure = failure

        def record(current: RoleSlot, _record: SlotRecord | None, now: dt.datetime) -> RoleSlot:
            if now_failure is None:
                return current.record_sent(email, now)
            return current.record_failure(email, now_failure, now, self._options.retries)

        try:
            await self._update_slot(slot.enrolment_id, slot.role, record, token=token, release_lease=True)
        except LostClaimError:
            # Our claim was taken over (the lease expired): record the outcome all the same, keep theirs.
            await self._update_slot(slot.enrolment_id, slot.role, record)
        outcome = "sent" if failure is None else ("failed" if failure.kind == "permanent" else failure.kind)
        EMAILS.labels(outcome if outcome != "transient" else "retry").inc()
        fields = {
            "enrolment_id": slot.enrolment_id,
            "role": slot.role,
            "attempt": item.attempts + 1,
            "message_id": message_id,
            "seconds": round(time.perf_counter() - started, 3),
        }
        if failure is None:
            log.info("expertise_email_sent", **fields)
        elif failure.kind == "configuration":
            log.error("expertise_email_configuration_error", reason=failure.reason, **fields)
        else:
            log.warning("expertise_email_not_sent", kind=failure.kind, reason=failure.reason, **fields)

    async def _message(self, slot: RoleSlot, item: Notification) -> EmailMessage:
        enrolment = await self._store.get_enrolment(slot.enrolment_id)
        if enrolment is None or enrolment.patient is None or enrolment.meeting_id is None:
            raise _MissingFactsError("the enrolment's details are no longer available (retention passed): not sent")
        meeting = await self._store.get_meeting(enrolment.meeting_id)
        if meeting is None:
            raise _MissingFactsError("the meeting's details are no longer available: not sent")
        rendered = render(
            item.name, enrolment.patient, MeetingText(meeting.title, meeting.date, meeting.centre), self._options.mail
        )
        return build_message(
            notification_key=notification_key(slot.enrolment_id, slot.role, item.email),
            recipient_name=item.name,
            recipient_email=item.email,
            rendered=rendered,
            settings=self._options.mail,
            now=self._clock(),
        )

    # --- background loops ------------------------------------------------------------------------------------

    async def send_loop(self, stop: asyncio.Event, poll_seconds: float) -> None:
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.send_due()
            except Exception as error:
                log.warning("send_round_failed", error=type(error).__name__, detail=str(error)[:300])
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
            try:
                await asyncio.wait(waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)

    async def maintain(self) -> tuple[int, int]:
        """Publishes views left unpublished (Kafka was down) and purges expired enrolments."""
        now = self._clock()
        republished = 0
        for record in await self._store.unpublished(now - self._options.republish_after):
            await self._publish_view(record)
            republished += 1
        purged = await self._store.purge_enrolments(now)
        if republished or purged:
            log.info("maintenance", republished=republished, purged_enrolments=purged)
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


class _MissingFactsError(Exception):
    pass


class _NoLongerDueError(Exception):
    pass


class LostClaimError(Exception):
    """This worker's lease on a slot expired and another worker claimed it."""


def _reconciler(
    wanted: Desired, meeting_id: str | None
) -> Callable[[RoleSlot, SlotRecord | None, dt.datetime], RoleSlot]:
    def change(slot: RoleSlot, record: SlotRecord | None, now: dt.datetime) -> RoleSlot:
        return slot.reconcile(wanted, meeting_id, now, in_flight=record is not None and record.leased(now))

    return change


def _unchanged(slot: RoleSlot, _record: SlotRecord | None, _now: dt.datetime) -> RoleSlot:
    return slot
