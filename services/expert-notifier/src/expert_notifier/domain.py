"""The expertise notifications of one enrolment and one expert role, as one pure aggregate (no I/O).

One `RoleSlot` per (enrolment, role) holds every e-mail ever meant for that role of that enrolment, one
`Notification` per expert address: the unique key of a notification is (enrolment_id, role, e-mail), so
replays and repeated selections find the notification that already exists and never create a second one.
The whole slot is one MongoDB document written with optimistic concurrency, so every decision below is
atomic without transactions.

What the slot should do comes from the facts known so far (`desired`):

| facts                                          | desired     | effect on the role                          |
|------------------------------------------------|-------------|---------------------------------------------|
| no selection, or `expertise_requested: false`  | `Withdrawn` | pending e-mails skipped; view `skipped`     |
| requested, enrolment or meeting experts unknown| `Waiting`   | view `pending` with what is awaited         |
| requested, no on-call expert for the role      | `NoExpert`  | pending e-mails skipped; view `skipped`     |
| requested, on-call expert E                    | `Wanted(E)` | E's notification created (or reopened if it  |
|                                                |             | was skipped); other pending ones skipped    |

Notification states (`pending` is the only non-final one, apart from reopening a `skipped` one):

```
          created (domain allowed)            created (domain not allowed)
                    |                                      |
                    v                                      v
   +-------->  pending  --accepted by the relay-->  sent   refused
   |  retry     |  |  |
   +------------+  |  +--permanent (5xx, refused recipient), or deadline passed-->  failed
   (transient/     |
    configuration) +--expert replaced / request withdrawn, not in flight-->  skipped --wanted again--> pending
```

A notification being sent (claimed under a lease) cannot be skipped: it is marked `superseded`, and if the
attempt fails it ends `skipped` instead of being retried; if it succeeds it is `sent` (the message was valid
when it was claimed).

The slot's *view* (status and reason of the role, as `expertise.notification.v1` publishes it) is a function
of the slot; every change of the view gets the next `version`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from proxymage_shared.events import ExpertRole, NotificationStatus
from proxymage_shared.retry import BackoffSchedule

from expert_notifier.recipients import address_allowed, recipient_domain

ROLES: tuple[ExpertRole, ...] = ("radiologist", "nuclear_physician")
ROLE_WORDS: dict[ExpertRole, str] = {"radiologist": "radiologist", "nuclear_physician": "nuclear physician"}

FailureKind: TypeAlias = Literal["transient", "permanent", "configuration"]


@dataclass(frozen=True, slots=True)
class SendFailure:
    """Why a send did not succeed. `reason` is shown to users and operators: no patient data in it."""

    kind: FailureKind
    reason: str


@dataclass(frozen=True, slots=True)
class ExpertContact:
    name: str
    email: str


# --- what is wanted -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Withdrawn:
    reason: str = "expertise is not (or no longer) requested for this enrolment"


@dataclass(frozen=True, slots=True)
class Waiting:
    reason: str


@dataclass(frozen=True, slots=True)
class NoExpert:
    reason: str


@dataclass(frozen=True, slots=True)
class Wanted:
    expert: ExpertContact
    allowed: bool
    deadline: dt.datetime


Desired: TypeAlias = Withdrawn | Waiting | NoExpert | Wanted


@dataclass(frozen=True, slots=True)
class MeetingFacts:
    meeting_id: str
    title: str
    date: dt.date
    centre: str
    experts: dict[ExpertRole, ExpertContact | None]


def deadline_for(meeting_date: dt.date, give_up_days_after_meeting: int) -> dt.datetime:
    """Retries stop at the end (UTC) of the `give_up_days_after_meeting`-th day after the meeting."""
    last_day = meeting_date + dt.timedelta(days=give_up_days_after_meeting + 1)
    return dt.datetime.combine(last_day, dt.time.min, tzinfo=dt.UTC)


def desired(
    role: ExpertRole,
    *,
    expertise_requested: bool,
    meeting_id: str | None,
    meeting: MeetingFacts | None,
    allowed_domains: tuple[str, ...],
    give_up_days_after_meeting: int,
) -> Desired:
    if not expertise_requested:
        return Withdrawn()
    if meeting_id is None:
        return Waiting("waiting for the enrolment (dcc.patient-enrolled) to know the meeting")
    if meeting is None:
        return Waiting(f"waiting for the on-call experts of meeting {meeting_id} (dcc.meeting-experts)")
    expert = meeting.experts.get(role)
    if expert is None:
        return NoExpert(f"no on-call {ROLE_WORDS[role]} is configured for meeting {meeting_id}")
    return Wanted(
        expert,
        allowed=address_allowed(expert.email, allowed_domains),
        deadline=deadline_for(meeting.date, give_up_days_after_meeting),
    )


# --- the aggregate ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notification:
    email: str  # lower-cased: the last part of the unique key
    name: str
    status: NotificationStatus
    reason: str | None = None
    attempts: int = 0
    next_attempt_at: dt.datetime | None = None
    deadline: dt.datetime | None = None
    sent_at: dt.datetime | None = None
    superseded: bool = False


SlotMode: TypeAlias = Literal["withdrawn", "waiting", "no_expert", "wanted"]


@dataclass(frozen=True, slots=True)
class View:
    status: NotificationStatus
    reason: str | None


@dataclass(frozen=True, slots=True)
class RoleSlot:
    enrolment_id: str
    role: ExpertRole
    meeting_id: str | None = None
    mode: SlotMode = "waiting"
    mode_reason: str | None = None
    current: str | None = None  # the wanted expert's address when mode == "wanted"
    notifications: tuple[Notification, ...] = ()
    sending: str | None = None  # the address being sent under a lease (the store knows the lease)

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

    def reconcile(self, wanted: Desired, meeting_id: str | None, now: dt.datetime, in_flight: bool) -> RoleSlot:
        """Applies what is wanted now. `in_flight`: the address in `sending` is held by a live lease."""
        slot = replace(self, meeting_id=meeting_id or self.meeting_id)
        keep = wanted.expert.email.lower() if isinstance(wanted, Wanted) else None
        if isinstance(wanted, Wanted):
            reason = f"replaced: the on-call {ROLE_WORDS[self.role]} changed before the e-mail was sent"
        else:
            reason = f"not sent: {wanted.reason}"
        for item in slot.notifications:
            if item.email == keep or item.status != "pending":
                continue
            if in_flight and slot.sending == item.email:
                slot = slot._with(replace(item, superseded=True))
            else:
                slot = slot._with(replace(item, status="skipped", reason=reason, next_attempt_at=None))
        if isinstance(wanted, Withdrawn):
            return replace(slot, mode="withdrawn", mode_reason=wanted.reason, current=None)
        if isinstance(wanted, Waiting):
            return replace(slot, mode="waiting", mode_reason=wanted.reason, current=None)
        if isinstance(wanted, NoExpert):
            return replace(slot, mode="no_expert", mode_reason=wanted.reason, current=None)
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
                    keep,
                    wanted.expert.name,
                    "refused",
                    reason=f"recipient domain {domain} is not in the allowed secure-mail domains: not sent",
                )
            return slot._with(created)
        if existing.status == "skipped":  # wanted again (e.g. the previous expert is back): reopen it
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

    def record_sent(self, email: str, now: dt.datetime) -> RoleSlot:
        item = self.notification(email)
        slot = replace(self, sending=None)
        if item is None or item.status != "pending":
            return slot
        return slot._with(
            replace(item, status="sent", reason=None, attempts=item.attempts + 1, sent_at=now, next_attempt_at=None)
        )

    def record_failure(self, email: str, failure: SendFailure, now: dt.datetime, schedule: BackoffSchedule) -> RoleSlot:
        item = self.notification(email)
        slot = replace(self, sending=None)
        if item is None or item.status != "pending":
            return slot
        attempts = item.attempts + 1
        if failure.kind == "permanent":
            return slot._with(
                replace(item, status="failed", reason=failure.reason, attempts=attempts, next_attempt_at=None)
            )
        if item.superseded:
            return slot._with(
                replace(
                    item,
                    status="skipped",
                    reason=f"not sent: no longer wanted ({failure.reason})",
                    attempts=attempts,
                    next_attempt_at=None,
                    superseded=False,
                )
            )
        next_at = schedule.next_attempt_at(now, attempts)
        if item.deadline is not None and next_at >= item.deadline:
            return slot._with(
                replace(
                    item,
                    status="failed",
                    reason=f"gave up after {attempts} attempts (the meeting is over): {failure.reason}",
                    attempts=attempts,
                    next_attempt_at=None,
                )
            )
        return slot._with(
            replace(
                item,
                reason=f"{failure.reason}; attempt {attempts} failed, next try at {next_at:%Y-%m-%d %H:%M:%S} UTC",
                attempts=attempts,
                next_attempt_at=next_at,
            )
        )

    # --- what the DCC sees ----------------------------------------------------------------------------------

    def view(self) -> View:
        if self.mode == "wanted" and self.current is not None:
            item = self.notification(self.current)
            if item is not None:
                return View(item.status, item.reason)
        reason = self.mode_reason
        if any(n.status == "sent" for n in self.notifications):
            return View("sent", f"an e-mail was sent earlier; now {reason}")
        if self.mode == "waiting":
            return View("pending", reason)
        return View("skipped", reason)
