"""What the expert-notifier knows of an enrolment, what it should do about it, and the notifications of one
expert role, as pure values (no I/O).

**Facts** (`EnrolmentFacts`): every inbound fact is recorded *newer wins*, whatever the order in which the
topics deliver them (they are not ordered with each other) and however often they are replayed. Each part
keeps the stamp of the event that set it, `(occurred_at, event_id)` (the id breaks ties, so the fold is
order independent even for two events of the same millisecond; a replay carries the same stamp and changes
nothing):

| part                | from                                   | newer wins by                                    |
|---------------------|----------------------------------------|--------------------------------------------------|
| `enrolled`          | `dcc.patient-enrolled.v1`              | occurred_at (meeting, consent, what the mail says)|
| `consent_given`     | the same, when `consent: true`         | occurred_at (tells "withdrawn" from "never given")|
| `withdrawal`        | `dcc.enrolment-withdrawn.v1`, and      | occurred_at of the withdrawal                    |
|                     | `identity.resolved.v1` `withdrawn`     |                                                  |
| `identity`          | `identity.resolved.v1`                 | the answered DCC event's time, then occurred_at  |
| `selection`         | `dcc.studies-selected.v1`              | occurred_at                                      |
| `studies[UID]`      | `imaging.study-status.v1`              | `version` of the study's job                     |

The stamp is `idempotency.EventStamp` (`Stamp` here), the order of events shared by every service.

Derived: the enrolment is *withdrawn* when its latest withdrawal is not older than its latest enrolled event
(a later enrolled event re-opens it; on a tie the withdrawal wins: a data-protection officer prefers an
e-mail not sent); *consent withdrawn* when the latest enrolled event says `consent: false` (after an earlier
`consent: true`; without one it is "no consent"); *matched* when the latest identity outcome is `matched`
and answers the latest enrolled event (`source_event_id`); a study counts when it is in the current
selection and its latest status is `available`.

**Decision** (`desired`, per role), first row that applies:

| facts                                                        | desired         | role's view (reason_code)       |
|--------------------------------------------------------------|-----------------|---------------------------------|
| enrolment withdrawn                                          | `Cancelled`     | `cancelled` (enrolment_withdrawn)|
| latest enrolled event without consent                        | `Cancelled`     | `cancelled` (consent_withdrawn / |
|                                                              |                 | no_consent)                     |
| no selection, or `expertise_requested: false`                | `NotRequested`  | `skipped` (expertise_not_requested)|
| the meeting day is over (end of the day, site's time zone)   | `MeetingPassed` | `not_sent` (meeting_passed)     |
| enrolment unknown                                            | `Waiting`       | `waiting` (waiting_enrolment)   |
| meeting's experts unknown                                    | `Waiting`       | `waiting` (waiting_meeting)     |
| no on-call expert for the role                               | `NoExpert`      | `skipped` (no_expert)           |
| identity not (yet) `matched` for the current enrolled event  | `Waiting`       | `waiting` (waiting_identity /   |
|                                                              |                 | patient_not_found / identity_error)|
| no selected study `available`                                | `Waiting`       | `waiting` (waiting_available_study)|
| otherwise, on-call expert E                                  | `Wanted(E)`     | E's notification                |

**Notifications**: one `RoleSlot` per (enrolment, role) holds every e-mail ever meant for that role of that
enrolment, one `Notification` per expert address: the unique key of a notification is (enrolment_id, role,
e-mail), so replays and repeated selections find the notification that already exists and never create a
second one. The whole slot is one MongoDB document written with optimistic concurrency, so every decision
below is atomic without transactions.

```
     Wanted(E), domain allowed                 Wanted(E), domain not allowed
               |                                            |
               v                                            v
 +-------->  pending --accepted by the relay (re-checked---> sent      refused
 | retry      | | | |   right before MAIL FROM)
 +------------+ | | +--permanent (5xx), or retries reach the end of the meeting day--> failed
 (transient /   | +--Waiting (e.g. the only available study removed)--> waiting ----+
  configuration)+--Cancelled --> cancelled   MeetingPassed --> not_sent             |
                +--NotRequested / NoExpert / another expert --> skipped             |
  waiting, cancelled, not_sent, skipped --Wanted(E) again (e.g. re-opened)--> pending <-+
```
`sent`, `failed` and `refused` are final: an address gets at most one e-mail per enrolment and role, and a
`sent` one stays `sent` after a withdrawal (it was true when it was sent).

A notification being sent (claimed under a lease) is not closed by the consumers: it is marked `superseded`
and the sender, which re-checks the facts right before the SMTP transaction and again when it records the
outcome, closes it with what is desired then.

The slot's *view* (status and reason of the role, as `expertise.notification.v1` publishes it) is a function
of the slot; every change of the view gets the next `version`. Reasons are a stable code plus the French
text of `proxymage_shared.reasons`; SMTP details are appended in parentheses (relay replies, never patient
data).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Final, Literal, TypeAlias

from proxymage_shared.events import ExpertRole, IdentityStatus, NotificationStatus, RetrievalStatus
from proxymage_shared.idempotency import EventStamp, to_ms
from proxymage_shared.mssante import address_allowed, recipient_domain
from proxymage_shared.reasons import Reason
from proxymage_shared.retry import BackoffSchedule

from expert_notifier.message import PatientFacts

ROLES: tuple[ExpertRole, ...] = ("radiologist", "nuclear_physician")

FailureKind: TypeAlias = Literal["transient", "permanent", "configuration"]


@dataclass(frozen=True, slots=True)
class SendFailure:
    """Why a send did not succeed. `detail` (French) is shown to users and operators: no patient data in it."""

    kind: FailureKind
    detail: str


@dataclass(frozen=True, slots=True)
class ExpertContact:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class MeetingFacts:
    meeting_id: str
    title: str
    date: dt.date
    centre: str
    experts: dict[ExpertRole, ExpertContact | None]


# --- facts, newer wins ----------------------------------------------------------------------------------------


# When a fact happened and which event said it: totally ordered (time to the millisecond, then event id).
Stamp: TypeAlias = EventStamp


@dataclass(frozen=True, slots=True)
class Enrolled:
    """The latest `dcc.patient-enrolled.v1`: what the decision and the e-mail need of it (no birth date)."""

    stamp: Stamp
    meeting_id: str
    meeting_date: dt.date
    consent: bool
    patient: PatientFacts


@dataclass(frozen=True, slots=True)
class IdentityFact:
    """The latest `identity.resolved.v1`, ordered by the DCC event it answers, then by its own time."""

    source_at: dt.datetime
    at: dt.datetime
    event_id: str
    status: IdentityStatus
    source_event_id: str

    def key(self) -> tuple[dt.datetime, dt.datetime, str]:
        return (self.source_at, self.at, self.event_id)


@dataclass(frozen=True, slots=True)
class Selection:
    stamp: Stamp
    expertise_requested: bool
    study_instance_uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StudyFact:
    study_instance_uid: str
    version: int
    status: RetrievalStatus


_IDENTITY_WAIT: Final[dict[str, str]] = {"unmatched": "patient_not_found", "error": "identity_error"}


@dataclass(frozen=True, slots=True)
class EnrolmentFacts:
    """Everything the notifier knows of one enrolment. Each `with_*` is commutative and idempotent."""

    enrolment_id: str
    enrolled: Enrolled | None = None
    consent_given: Stamp | None = None
    withdrawal: Stamp | None = None
    identity: IdentityFact | None = None
    selection: Selection | None = None
    studies: tuple[StudyFact, ...] = ()  # sorted by UID: equal facts are equal values, whatever the order

    def with_enrolled(self, fact: Enrolled) -> EnrolmentFacts:
        facts = self
        if fact.consent and fact.stamp.is_newer_than(self.consent_given):
            facts = replace(facts, consent_given=fact.stamp)
        if fact.stamp.is_newer_than(self.enrolled.stamp if self.enrolled else None):
            facts = replace(facts, enrolled=fact)
        return facts

    def with_withdrawal(self, stamp: Stamp) -> EnrolmentFacts:
        if stamp.is_newer_than(self.withdrawal):
            return replace(self, withdrawal=stamp)
        return self

    def with_identity(self, fact: IdentityFact) -> EnrolmentFacts:
        facts = self
        if fact.status == "withdrawn":
            # The matcher answers a withdrawal with the withdrawal's own id and time: the same stamp as the
            # DCC event, so learning it twice (from both topics) is one fact.
            facts = facts.with_withdrawal(Stamp(fact.source_at, fact.source_event_id))
        if facts.identity is None or fact.key() > facts.identity.key():
            facts = replace(facts, identity=fact)
        return facts

    def with_selection(self, fact: Selection) -> EnrolmentFacts:
        if fact.stamp.is_newer_than(self.selection.stamp if self.selection else None):
            return replace(self, selection=fact)
        return self

    def with_study(self, fact: StudyFact) -> EnrolmentFacts:
        known = next((s for s in self.studies if s.study_instance_uid == fact.study_instance_uid), None)
        if known is not None and known.version >= fact.version:
            return self
        others = [s for s in self.studies if s.study_instance_uid != fact.study_instance_uid]
        return replace(self, studies=tuple(sorted([*others, fact], key=lambda s: s.study_instance_uid)))

    # --- derived ---------------------------------------------------------------------------------------------

    @property
    def expertise_requested(self) -> bool:
        return self.selection is not None and self.selection.expertise_requested

    @property
    def withdrawn(self) -> bool:
        if self.withdrawal is None:
            return False
        # By time alone, not by stamp: on a tie the withdrawal wins (a business rule, see the table above).
        return self.enrolled is None or self.withdrawal.occurred_at >= self.enrolled.stamp.occurred_at

    def closure(self) -> str | None:
        """The reason code that closes the enrolment (nothing more may be sent), or None."""
        if self.withdrawn:
            return "enrolment_withdrawn"
        if self.enrolled is not None and not self.enrolled.consent:
            return "consent_withdrawn" if self.consent_given is not None else "no_consent"
        return None

    def identity_wait(self) -> str | None:
        """None when the current enrolled event is `matched`, else the reason code to wait with."""
        current = self.identity
        if current is None or self.enrolled is None or current.source_event_id != self.enrolled.stamp.event_id:
            return "waiting_identity"
        if current.status == "matched":
            return None
        return _IDENTITY_WAIT.get(current.status, "waiting_identity")

    def available_selected(self) -> tuple[str, ...]:
        if self.selection is None:
            return ()
        selected = set(self.selection.study_instance_uids)
        return tuple(
            s.study_instance_uid for s in self.studies if s.study_instance_uid in selected and s.status == "available"
        )


def slot_id(enrolment_id: str, role: ExpertRole) -> str:
    """The key of a role's slot: (enrolment, role)."""
    # Business ids cannot contain "|" (events.BusinessId), so the key is unambiguous.
    return f"{enrolment_id}|{role}"


def notification_key(enrolment_id: str, role: ExpertRole, email: str) -> str:
    """The unique key of one e-mail: (enrolment, role, expert address)."""
    return f"{enrolment_id}|{role}|{email.lower()}"


# --- what is wanted -----------------------------------------------------------------------------------------

_NOT_REQUESTED: Final = Reason.of("expertise_not_requested")
_NO_EXPERT: Final = Reason.of("no_expert")
_MEETING_PASSED: Final = Reason.of("meeting_passed")


@dataclass(frozen=True, slots=True)
class NotRequested:
    reason: Reason = _NOT_REQUESTED


@dataclass(frozen=True, slots=True)
class Waiting:
    reason: Reason


@dataclass(frozen=True, slots=True)
class NoExpert:
    reason: Reason = _NO_EXPERT


@dataclass(frozen=True, slots=True)
class Cancelled:
    reason: Reason


@dataclass(frozen=True, slots=True)
class MeetingPassed:
    reason: Reason = _MEETING_PASSED


@dataclass(frozen=True, slots=True)
class Wanted:
    expert: ExpertContact
    allowed: bool
    deadline: dt.datetime


Desired: TypeAlias = NotRequested | Waiting | NoExpert | Cancelled | MeetingPassed | Wanted


def meeting_end(meeting_date: dt.date, zone: dt.tzinfo) -> dt.datetime:
    """The end of the meeting day in the site's time zone, as UTC: nothing is sent from then on."""
    return to_ms(dt.datetime.combine(meeting_date + dt.timedelta(days=1), dt.time.min, tzinfo=zone))


def meeting_date_of(facts: EnrolmentFacts, meeting: MeetingFacts | None) -> dt.date | None:
    """The meeting's own event is authoritative; the enrolled event's copy serves until it is known."""
    if meeting is not None:
        return meeting.date
    return facts.enrolled.meeting_date if facts.enrolled is not None else None


def desired(
    role: ExpertRole,
    facts: EnrolmentFacts,
    meeting: MeetingFacts | None,
    *,
    now: dt.datetime,
    zone: dt.tzinfo,
    allowed_domains: tuple[str, ...],
) -> Desired:
    """What the role's slot should do now. `meeting` is the enrolled event's meeting (None when unknown)."""
    closure = facts.closure()
    if closure is not None:
        return Cancelled(Reason.of(closure))
    if not facts.expertise_requested:
        return NotRequested()
    date = meeting_date_of(facts, meeting)
    if date is not None and now >= meeting_end(date, zone):
        return MeetingPassed()
    if facts.enrolled is None:
        return Waiting(Reason.of("waiting_enrolment"))
    if meeting is None:
        return Waiting(Reason.of("waiting_meeting"))
    expert = meeting.experts.get(role)
    if expert is None:
        return NoExpert()
    waiting_for = facts.identity_wait()
    if waiting_for is not None:
        return Waiting(Reason.of(waiting_for))
    if not facts.available_selected():
        return Waiting(Reason.of("waiting_available_study"))
    return Wanted(
        expert, allowed=address_allowed(expert.email, allowed_domains), deadline=meeting_end(meeting.date, zone)
    )


# --- the aggregate ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    email: str  # lower-cased: the last part of the unique key
    name: str
    status: NotificationStatus
    reason: Reason | None = None
    attempts: int = 0
    next_attempt_at: dt.datetime | None = None
    deadline: dt.datetime | None = None
    sent_at: dt.datetime | None = None
    superseded: bool = False


SlotMode: TypeAlias = Literal["not_requested", "waiting", "no_expert", "cancelled", "meeting_passed", "wanted"]

# Notifications that may still change on their own (the sender or the facts move them on).
OPEN: Final = frozenset({"pending", "waiting"})
# Not sent, and not final: the same address is wanted again (re-opened enrolment, expert back, study back).
REOPENABLE: Final = frozenset({"waiting", "skipped", "cancelled", "not_sent"})
MODE_STATUS: Final[dict[SlotMode, NotificationStatus]] = {
    "not_requested": "skipped",
    "waiting": "waiting",
    "no_expert": "skipped",
    "cancelled": "cancelled",
    "meeting_passed": "not_sent",
    "wanted": "pending",
}


def mode_of(wanted: Desired) -> SlotMode:
    if isinstance(wanted, NotRequested):
        return "not_requested"
    if isinstance(wanted, Waiting):
        return "waiting"
    if isinstance(wanted, NoExpert):
        return "no_expert"
    if isinstance(wanted, Cancelled):
        return "cancelled"
    if isinstance(wanted, MeetingPassed):
        return "meeting_passed"
    return "wanted"


def _closed(item: Notification, wanted: Desired) -> Notification:
    """An open notification that is not (or no longer) the one wanted."""
    if isinstance(wanted, Wanted):
        status: NotificationStatus = "skipped"
        reason = Reason.of("expert_replaced")
    elif isinstance(wanted, Waiting):
        status, reason = "waiting", wanted.reason
    elif isinstance(wanted, Cancelled):
        status, reason = "cancelled", wanted.reason
    elif isinstance(wanted, MeetingPassed):
        if item.attempts:
            status = "failed"
            reason = Reason.of("send_failed", f"{item.attempts} essai(s) sans succès avant la fin de la réunion")
        else:
            status, reason = "not_sent", wanted.reason
    else:
        status, reason = "skipped", wanted.reason
    return replace(item, status=status, reason=reason, next_attempt_at=None, superseded=False)


@dataclass(frozen=True, slots=True)
class View:
    status: NotificationStatus
    reason: Reason | None


@dataclass(frozen=True, slots=True)
class RoleSlot:
    enrolment_id: str
    role: ExpertRole
    meeting_id: str | None = None
    mode: SlotMode = "waiting"
    mode_reason: Reason | None = None
    current: str | None = None  # the wanted expert's address when mode == "wanted"
    notifications: tuple[Notification, ...] = ()
    sending: str | None = None  # the address being sent under a lease (the store knows the lease)
    closes_at: dt.datetime | None = None  # end of the meeting day, when known

    def notification(self, email: str) -> Notification | None:
        key = email.lower()
        return next((n for n in self.notifications if n.email == key), None)

    def _with(self, updated: Notification) -> RoleSlot:
        others = tuple(n for n in self.notifications if n.email != updated.email)
        if len(others) == len(self.notifications):
            return replace(self, notifications=(*self.notifications, updated))
        return replace(
            self, notifications=tuple(updated if n.email == updated.email else n for n in self.notifications)
        )

    # --- reconciliation with what is wanted ---------------------------------------------------------------

    def reconcile(
        self,
        wanted: Desired,
        meeting_id: str | None,
        now: dt.datetime,
        in_flight: bool,
        closes_at: dt.datetime | None = None,
    ) -> RoleSlot:
        """Applies what is wanted now. `in_flight`: the address in `sending` is held by someone else's lease."""
        slot = replace(self, meeting_id=meeting_id or self.meeting_id, closes_at=closes_at or self.closes_at)
        keep = wanted.expert.email.lower() if isinstance(wanted, Wanted) else None
        for item in slot.notifications:
            if item.email == keep or item.status not in OPEN:
                continue
            if in_flight and slot.sending == item.email and item.status == "pending":
                slot = slot._with(replace(item, superseded=True))  # the sender closes it (it re-checks)
            else:
                slot = slot._with(_closed(item, wanted))
        if not isinstance(wanted, Wanted):
            return replace(slot, mode=mode_of(wanted), mode_reason=wanted.reason, current=None)
        assert keep is not None
        slot = replace(slot, mode="wanted", mode_reason=None, current=keep)
        existing = slot.notification(keep)
        if existing is None:
            if wanted.allowed:
                created = Notification(
                    keep, wanted.expert.name, "pending", next_attempt_at=now, deadline=wanted.deadline
                )
            else:
                domain = recipient_domain(keep) or "?"
                created = Notification(
                    keep, wanted.expert.name, "refused", reason=Reason.of("recipient_not_allowed", f"domaine {domain}")
                )
            return slot._with(created)
        if existing.status in REOPENABLE:
            return slot._with(
                replace(
                    existing,
                    status="pending",
                    reason=None,
                    attempts=0,
                    next_attempt_at=now,
                    deadline=wanted.deadline,
                    superseded=False,
                    name=wanted.expert.name,
                )
            )
        if existing.status == "pending":
            return slot._with(replace(existing, superseded=False, name=wanted.expert.name, deadline=wanted.deadline))
        return slot  # sent, failed, refused: final, never sent again

    # --- sending ------------------------------------------------------------------------------------------

    def due(self, now: dt.datetime) -> Notification | None:
        return next((item for item in self.notifications if self.is_due(item.email, now)), None)

    def is_due(self, email: str, now: dt.datetime) -> bool:
        item = self.notification(email)
        return (
            item is not None
            and item.status == "pending"
            and not item.superseded
            and item.next_attempt_at is not None
            and item.next_attempt_at <= now
        )

    def next_due_at(self) -> dt.datetime | None:
        dates = [
            n.next_attempt_at
            for n in self.notifications
            if n.status == "pending" and not n.superseded and n.next_attempt_at is not None
        ]
        return min(dates) if dates else None

    def begin_send(self, email: str) -> RoleSlot:
        return replace(self, sending=email.lower())

    def end_send(self) -> RoleSlot:
        """The claimed send did not happen (the facts changed before the SMTP transaction)."""
        return replace(self, sending=None)

    def record_sent(self, email: str, now: dt.datetime) -> RoleSlot:
        item = self.notification(email)
        slot = replace(self, sending=None)
        if item is None or item.status != "pending":
            return slot
        return slot._with(
            replace(
                item,
                status="sent",
                reason=None,
                attempts=item.attempts + 1,
                sent_at=now,
                next_attempt_at=None,
                superseded=False,
            )
        )

    def record_failure(self, email: str, failure: SendFailure, now: dt.datetime, schedule: BackoffSchedule) -> RoleSlot:
        """A failed attempt. A superseded notification stays pending (not due): the sender then reconciles."""
        item = self.notification(email)
        slot = replace(self, sending=None)
        if item is None or item.status != "pending":
            return slot
        attempts = item.attempts + 1
        if failure.kind == "permanent":
            return slot._with(
                replace(
                    item,
                    status="failed",
                    reason=Reason.of("send_failed", failure.detail),
                    attempts=attempts,
                    next_attempt_at=None,
                )
            )
        next_at = schedule.next_attempt_at(now, attempts)
        if item.deadline is not None and next_at >= item.deadline:
            detail = f"{attempts} essai(s), la réunion est passée ; dernier échec : {failure.detail}"
            return slot._with(
                replace(
                    item,
                    status="failed",
                    reason=Reason.of("send_failed", detail),
                    attempts=attempts,
                    next_attempt_at=None,
                    superseded=False,
                )
            )
        code = "smtp_configuration" if failure.kind == "configuration" else "send_retrying"
        detail = f"essai {attempts} : {failure.detail} ; prochain essai à {next_at:%H:%M:%S} UTC le {next_at:%d/%m/%Y}"
        return slot._with(replace(item, reason=Reason.of(code, detail), attempts=attempts, next_attempt_at=next_at))

    # --- what the DCC sees ----------------------------------------------------------------------------------

    def view(self) -> View:
        if self.mode == "wanted" and self.current is not None:
            item = self.notification(self.current)
            if item is not None:
                return View(item.status, item.reason)
        reason = self.mode_reason
        if any(n.status == "sent" for n in self.notifications):
            # Sent stays sent: it was true when it was sent; the reason says what changed since.
            return View("sent", Reason.of(reason.code, "un e-mail avait déjà été envoyé") if reason else None)
        if self.mode == "meeting_passed":
            failed = next((n for n in self.notifications if n.status == "failed"), None)
            if failed is not None:
                return View("failed", failed.reason)
        return View(MODE_STATUS[self.mode], reason)

    def is_open(self) -> bool:
        """The role may still change without a new event (the end of the meeting day closes it)."""
        return self.view().status in OPEN
