"""What the expert-notifier's use cases (`handlers.py`) need of the world, as protocols, and the typed values
they exchange: the store (`store.NotifierStore`; an in-memory fake in the tests) and the secure-mail sender
(`smtp.SmtpSender`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from email.message import EmailMessage
from typing import Protocol

from proxymage_shared.events import ExpertRole, MeetingExperts
from proxymage_shared.idempotency import to_ms

from expert_notifier.domain import EnrolmentFacts, MeetingFacts, RoleSlot, SendFailure, View


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """A slot as stored: the aggregate plus what only the store manages."""

    slot: RoleSlot
    rev: int = 0
    version: int = 0
    view: View | None = None
    view_at: dt.datetime | None = None
    published_meeting_id: str | None = None
    lease_until: dt.datetime | None = None
    lease_token: str | None = None
    dirty: bool = False

    def leased(self, now: dt.datetime) -> bool:
        return self.lease_until is not None and self.lease_until > now

    @staticmethod
    def next(before: SlotRecord | None, slot: RoleSlot, now: dt.datetime, *, release_lease: bool) -> SlotRecord:
        """The record that stores `slot` after `before` (None: the first). When the role's view (status,
        reason, meeting) changes, it gets the next version and is marked to be published (`dirty`)."""
        base = before or SlotRecord(slot=slot)
        view = slot.view()
        changed = view != base.view or slot.meeting_id != base.published_meeting_id
        return replace(
            base,
            slot=slot,
            rev=base.rev + 1,
            version=base.version + 1 if changed else base.version,
            view=view,
            view_at=to_ms(now) if changed else base.view_at,
            published_meeting_id=slot.meeting_id,
            dirty=True if changed else base.dirty,
            lease_until=None if release_lease else base.lease_until,
            lease_token=None if release_lease else base.lease_token,
        )


class NotifierRepository(Protocol):
    """The notifier's state: meetings, each enrolment's facts, each role's slot (`store.NotifierStore`)."""

    async def accept_meeting(self, event: MeetingExperts) -> bool:
        """Writes the meeting if the event is newer than the stored one; False for a replay or an older event."""
        ...

    async def get_meeting(self, meeting_id: str) -> MeetingFacts | None: ...

    async def enrolments_of_meeting(self, meeting_id: str) -> list[str]: ...

    async def change_facts(
        self, enrolment_id: str, change: Callable[[EnrolmentFacts], EnrolmentFacts], *, purge_at: dt.datetime
    ) -> bool:
        """Applies `change` to the enrolment's facts; False if it changed nothing. `purge_at` only ever moves
        the deletion of facts never enrolled later."""
        ...

    async def get_facts(self, enrolment_id: str) -> EnrolmentFacts | None: ...

    async def purge_enrolments(self, now: dt.datetime) -> int: ...

    async def load_slot(self, enrolment_id: str, role: ExpertRole) -> SlotRecord | None: ...

    async def has_slots(self, enrolment_id: str) -> bool: ...

    async def save_slot(
        self, before: SlotRecord | None, slot: RoleSlot, now: dt.datetime, *, release_lease: bool = False
    ) -> SlotRecord | None:
        """Stores `SlotRecord.next(before, slot, ...)` if nobody changed the slot since `before` was read;
        None on a conflict (read again)."""
        ...

    async def claim_due(self, now: dt.datetime, lease: dt.timedelta, token: str) -> SlotRecord | None:
        """Takes one slot with a due notification, under a lease, so that no other instance sends it."""
        ...

    async def release_token(self, token: str) -> None: ...

    async def mark_published(self, record: SlotRecord) -> None: ...

    async def closing(self, now: dt.datetime, limit: int = 100) -> list[str]: ...

    async def unpublished(self, older_than: dt.datetime, limit: int = 100) -> list[SlotRecord]: ...


# Asked once the relay's TLS session is up, right before the mail transaction: still send?
Proceed = Callable[[], Awaitable[bool]]


class SmtpSendError(Exception):
    """A send failed, as `failure` classifies it (`smtp.classify`). Not a ProxymageError: the detail (the
    message) may quote the relay's replies, so a log shows `errors.describe`, the type only."""

    def __init__(self, failure: SendFailure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


class Sender(Protocol):
    """Sends one e-mail (`smtp.SmtpSender`): True once the relay accepted it, False when `proceed` said no
    right before the mail transaction; `SmtpSendError` (classified) on failure."""

    async def send(
        self, message: EmailMessage, *, sender: str, recipient: str, proceed: Proceed | None = None
    ) -> bool: ...
