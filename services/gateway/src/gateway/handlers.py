"""The Kafka handler of every topic the gateway consumes: project the event into the read model, then announce
what changed on the SSE streams (`gateway.live`).

Each applied patch (a stale or replayed event applies nothing and says nothing) is announced after it is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from proxymage_shared.events import Event
from proxymage_shared.kafka import Delivery
from proxymage_shared.logging import get_logger

from gateway import views
from gateway.live import enrolment_message, enrolment_stream, meeting_stream, rcp_stream
from gateway.ports import Announcer, ReadModelWriter
from gateway.projection import ENROLMENTS, MEETINGS, Json, Patch, patches, study_key
from gateway.read_model import EnrolmentRecord, MeetingRecord, Record
from gateway.viewer import ViewerLinks

log = get_logger(__name__)
MEETING_CACHE_SIZE: Final = 10_000


class Handlers:
    """Subscribed to every consumed topic (`handle`): project, then announce."""

    def __init__(
        self,
        store: ReadModelWriter,
        hub: Announcer,
        links: ViewerLinks,
        on_enrolment_change: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._hub = hub
        self._links = links
        # Told after every applied enrolment patch (the viewer's access cache drops its decisions).
        self._on_enrolment_change = on_enrolment_change
        # What enrolments last said about each meeting: every enrolment repeats it, a write only when it changes.
        self._meeting_details: dict[str, dict[str, Json]] = {}

    def _unchanged_meeting_details(self, patch: Patch) -> bool:
        if patch.collection != MEETINGS or patch.path != "enrolment_details":
            return False
        facts = {key: value for key, value in patch.value.items() if key not in ("event_id", "occurred_at")}
        if self._meeting_details.get(patch.key) == facts:
            return True
        if len(self._meeting_details) >= MEETING_CACHE_SIZE:
            self._meeting_details.clear()
        self._meeting_details[patch.key] = facts
        return False

    async def handle(self, event: Event, delivery: Delivery | None = None) -> None:
        made = patches(event)
        written: list[Patch] = []  # member patches already written with their meeting's details
        for patch in made:
            if self._unchanged_meeting_details(patch):
                continue
            if patch.kind == "member":
                if not any(patch is done for done in written):
                    await self._store.add_member(patch)  # nothing to announce: the enrolment's own patch does
                continue
            # A meeting's details and its new member go in one write (written only if the details apply).
            member = next(
                (p for p in made if p.kind == "member" and (p.collection, p.key) == (patch.collection, patch.key)),
                None,
            )
            record = await self._store.apply(patch, member)
            if member is not None and record is not None:
                written.append(member)
            # Told even when nothing was written here: another gateway instance may have applied it first.
            if patch.collection == ENROLMENTS and self._on_enrolment_change is not None:
                self._on_enrolment_change()
            if record is None:
                log.debug("stale_event", event_id=str(event.event_id), part=patch.path, collection=patch.collection)
                continue
            self.announce(patch, record)

    def announce(self, patch: Patch, record: Record) -> None:
        self._announce(patch, record)
        if patch.kind == "selection" and isinstance(record, EnrolmentRecord):
            # The topics are consumed independently: study states may have been projected before the selection
            # that makes them count (and were then announced as not selected). Say each one again, now selected.
            for study_instance_uid in views.selected_uids(record):
                path = f"retrieval.{study_key(study_instance_uid)}"
                if study_key(study_instance_uid) in record.retrieval:
                    again = Patch(ENROLMENTS, patch.key, path, patch.order,
                                  {"study_instance_uid": study_instance_uid}, "study-status")  # fmt: skip
                    self._announce(again, record)

    def _announce(self, patch: Patch, record: Record) -> None:
        if isinstance(record, EnrolmentRecord):
            data = enrolment_message(patch, record, self._links)
            self._hub.publish(enrolment_stream(patch.key), patch.kind, data)
            target = views.meeting_of(record)
            if target:
                summary = views.summary_view(record).model_dump(mode="json")
                self._hub.publish(meeting_stream(target), patch.kind, {**data, "summary": summary})
        elif isinstance(record, MeetingRecord):
            meeting = views.meeting_view(patch.key, record).model_dump(mode="json")
            self._hub.publish(meeting_stream(patch.key), "meeting", {"meeting": meeting})
        else:
            rcp = views.rcp_view(record)
            self._hub.publish(
                rcp_stream(patch.key), "rcp-settings", {"rcp": rcp.model_dump(mode="json") if rcp else None}
            )
