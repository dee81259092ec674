"""In-memory adapters for the expert-notifier's use cases (`expert_notifier.ports`), with the semantics of the
MongoDB store: newer meeting wins by stamp, facts changed by the pure rules, slots written only if their
revision is the one read, leases, the outbox (`dirty`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from email.message import EmailMessage

from expert_notifier.domain import ROLES, EnrolmentFacts, ExpertContact, MeetingFacts, RoleSlot, Stamp, slot_id
from expert_notifier.ports import Proceed, SlotRecord, SmtpSendError
from proxymage_shared.events import Expert, ExpertRole, MeetingExperts
from proxymage_shared.idempotency import to_ms


@dataclass
class FakeNotifierStore:
    meetings: dict[str, tuple[Stamp, MeetingFacts]] = field(default_factory=dict)
    facts: dict[str, tuple[EnrolmentFacts, dt.datetime]] = field(default_factory=dict)
    slots: dict[str, SlotRecord] = field(default_factory=dict)
    # Conflicts to simulate: this many `save_slot` calls lose to a concurrent writer first.
    lost_saves: int = 0
    # Called before each `save_slot` (a concurrent writer acting between a read and a write).
    before_save: Callable[[], Awaitable[None]] | None = None
    # Called with each claim made (another writer acting right after it); returns the claim to hand out.
    after_claim: Callable[[SlotRecord], Awaitable[SlotRecord]] | None = None

    async def accept_meeting(self, event: MeetingExperts) -> bool:
        stamp = Stamp.of(event.occurred_at, event.event_id)
        known = self.meetings.get(event.meeting_id)
        if known is not None and not stamp.is_newer_than(known[0]):
            return False

        def contact(expert: Expert | None) -> ExpertContact | None:
            return None if expert is None else ExpertContact(expert.name, expert.email)

        experts: dict[ExpertRole, ExpertContact | None] = {
            "radiologist": contact(event.on_call_radiologist),
            "nuclear_physician": contact(event.on_call_nuclear_physician),
        }
        self.meetings[event.meeting_id] = (
            stamp,
            MeetingFacts(event.meeting_id, event.title, event.date, event.centre, experts),
        )
        return True

    async def get_meeting(self, meeting_id: str) -> MeetingFacts | None:
        known = self.meetings.get(meeting_id)
        return None if known is None else known[1]

    async def enrolments_of_meeting(self, meeting_id: str) -> list[str]:
        return sorted(
            key
            for key, (facts, _) in self.facts.items()
            if facts.enrolled is not None and facts.enrolled.meeting_id == meeting_id
        )

    async def change_facts(
        self, enrolment_id: str, change: Callable[[EnrolmentFacts], EnrolmentFacts], *, purge_at: dt.datetime
    ) -> bool:
        known = self.facts.get(enrolment_id)
        before = known[0] if known is not None else EnrolmentFacts(enrolment_id)
        after = change(before)
        if known is not None and after == before:
            return False
        purge = to_ms(purge_at) if known is None else max(to_ms(purge_at), known[1])
        self.facts[enrolment_id] = (after, purge)
        return True

    async def get_facts(self, enrolment_id: str) -> EnrolmentFacts | None:
        known = self.facts.get(enrolment_id)
        return None if known is None else known[0]

    async def purge_enrolments(self, now: dt.datetime) -> int:
        orphans = [key for key, (facts, purge) in self.facts.items() if facts.enrolled is None and purge <= now]
        for enrolment_id in orphans:
            del self.facts[enrolment_id]
            for role in ROLES:
                self.slots.pop(slot_id(enrolment_id, role), None)
        return len(orphans)

    async def load_slot(self, enrolment_id: str, role: ExpertRole) -> SlotRecord | None:
        return self.slots.get(slot_id(enrolment_id, role))

    async def has_slots(self, enrolment_id: str) -> bool:
        return any(slot_id(enrolment_id, role) in self.slots for role in ROLES)

    async def save_slot(
        self, before: SlotRecord | None, slot: RoleSlot, now: dt.datetime, *, release_lease: bool = False
    ) -> SlotRecord | None:
        if self.before_save is not None:
            await self.before_save()
        if self.lost_saves:
            self.lost_saves -= 1
            return None
        key = slot_id(slot.enrolment_id, slot.role)
        stored = self.slots.get(key)
        if (stored is None) != (before is None) or (
            stored is not None and before is not None and stored.rev != before.rev
        ):
            return None
        record = SlotRecord.next(before, slot, now, release_lease=release_lease)
        self.slots[key] = record
        return record

    async def claim_due(self, now: dt.datetime, lease: dt.timedelta, token: str) -> SlotRecord | None:
        due = [
            (due_at, key)
            for key, record in self.slots.items()
            if (due_at := record.slot.next_due_at()) is not None and due_at <= now and not record.leased(now)
        ]
        if not due:
            return None
        key = min(due)[1]
        record = self.slots[key]
        claimed = replace(record, lease_until=to_ms(now + lease), lease_token=token, rev=record.rev + 1)
        self.slots[key] = claimed
        return claimed if self.after_claim is None else await self.after_claim(claimed)

    async def release_token(self, token: str) -> None:
        for key, record in self.slots.items():
            if record.lease_token == token:
                slot = replace(record.slot, sending=None)
                self.slots[key] = replace(record, slot=slot, lease_until=None, lease_token=None, rev=record.rev + 1)

    async def mark_published(self, record: SlotRecord) -> None:
        key = slot_id(record.slot.enrolment_id, record.slot.role)
        stored = self.slots.get(key)
        if stored is not None and stored.version == record.version and stored.dirty:
            self.slots[key] = replace(stored, dirty=False)

    async def closing(self, now: dt.datetime, limit: int = 100) -> list[str]:
        found = {
            record.slot.enrolment_id
            for record in self.slots.values()
            if record.slot.closes_at is not None and record.slot.is_open() and record.slot.closes_at <= now
        }
        return sorted(found)[:limit]

    async def unpublished(self, older_than: dt.datetime, limit: int = 100) -> list[SlotRecord]:
        found = [
            record
            for record in self.slots.values()
            if record.dirty and record.view_at is not None and record.view_at <= older_than
        ]
        return found[:limit]


@dataclass
class FakeSender:
    """Accepts every message (after asking `proceed`), or fails with each of `failures` in turn."""

    sent: list[tuple[EmailMessage, str]] = field(default_factory=list)
    failures: list[SmtpSendError | Exception] = field(default_factory=list)
    # Runs once the "TLS session is up", before `proceed` (a withdrawal recorded meanwhile, say).
    on_connect: Callable[[], Awaitable[None]] | None = None

    async def send(self, message: EmailMessage, *, sender: str, recipient: str, proceed: Proceed | None = None) -> bool:
        if self.failures:
            raise self.failures.pop(0)
        if self.on_connect is not None:
            await self.on_connect()
        if proceed is not None and not await proceed():
            return False
        self.sent.append((message, recipient))
        return True
