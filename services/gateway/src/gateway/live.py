"""Live updates: the projector turns consumed events into read-model patches, then into SSE messages.

Each applied patch (a stale or replayed event applies nothing and says nothing) is announced on the
enrolment's stream and on its meeting's stream, after it is durable in MongoDB. Messages carry ids and
states; the meeting stream's messages also carry the patient's row of the meeting list (`summary`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proxymage_shared.events import Event
from proxymage_shared.kafka import Delivery
from proxymage_shared.logging import get_logger

from gateway import views
from gateway.hub import Hub
from gateway.projection import ENROLMENTS, MEETINGS, RCPS, Patch, get_path, patches, study_key
from gateway.store import ReadModelStore
from gateway.viewer import ViewerLinks

log = get_logger(__name__)
MEETING_CACHE_SIZE = 10_000


def enrolment_stream(enrolment_id: str) -> str:
    return f"enrolment:{enrolment_id}"


def meeting_stream(meeting_id: str) -> str:
    return f"meeting:{meeting_id}"


def rcp_stream(rcp_id: str) -> str:
    return f"rcp:{rcp_id}"


def enrolment_message(patch: Patch, document: dict[str, Any], links: ViewerLinks) -> dict[str, Any]:
    """The SSE data for a patch applied to an enrolment document (JSON-ready)."""
    data: dict[str, Any] = {"enrolment_id": document["_id"]}
    if patch.kind in ("study-status", "removal"):
        uid = str(patch.value["study_instance_uid"])
        selected = uid in views.selected_uids(document)
        retrieval = views.retrieval_view(
            document, uid, selected=selected, patient_id=views.study_patient_id(document, uid), links=links
        )
        data.update(study_instance_uid=uid, selected=selected, retrieval=retrieval.model_dump(mode="json"))
    elif patch.kind == "identity":
        data["identity"] = views.identity_view(document).model_dump(mode="json")
    elif patch.kind == "catalogue":
        data["catalogue"] = views.catalogue_view(document).model_dump(mode="json")
    elif patch.kind == "selection":
        data["selected"] = views.selected_uids(document)
        data["expertise_requested"] = views.expertise_view(document).requested
    elif patch.kind == "expertise":
        data["expertise"] = views.expertise_view(document).model_dump(mode="json")
    elif patch.kind == "enrolment":
        enrolment = get_path(document, "enrolment") or {}
        data.update(
            meeting_id=enrolment.get("meeting_id"),
            consent=enrolment.get("consent"),
            identity=views.identity_view(document).model_dump(mode="json"),
        )
    if patch.kind in ("enrolment", "withdrawal"):
        withdrawal = views.withdrawal_view(document)
        data["withdrawal"] = withdrawal.model_dump(mode="json") if withdrawal is not None else None
        data["identity"] = views.identity_view(document).model_dump(mode="json")
    return data


class Projector:
    """The Kafka handler of every consumed topic: project, then announce."""

    def __init__(
        self, store: ReadModelStore, hub: Hub, links: ViewerLinks, on_enrolment_change: Callable[[], None] | None = None
    ) -> None:
        self._store = store
        self._hub = hub
        self._links = links
        # Told after every applied enrolment patch (the viewer's access cache drops its decisions).
        self._on_enrolment_change = on_enrolment_change
        # What enrolments last said about each meeting: every enrolment repeats it, a write only when it changes.
        self._meeting_details: dict[str, dict[str, Any]] = {}

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
            document = await self._store.apply(patch, member)
            if member is not None and document is not None:
                written.append(member)
            # Told even when nothing was written here: another gateway instance may have applied it first.
            if patch.collection == ENROLMENTS and self._on_enrolment_change is not None:
                self._on_enrolment_change()
            if document is None:
                log.debug("stale_event", event_id=str(event.event_id), part=patch.path, collection=patch.collection)
                continue
            self.announce(patch, document)

    def announce(self, patch: Patch, document: dict[str, Any]) -> None:
        self._announce(patch, document)
        if patch.kind == "selection":
            # The topics are consumed independently: study states may have been projected before the selection
            # that makes them count (and were then announced as not selected). Say each one again, now selected.
            for uid in views.selected_uids(document):
                if get_path(document, f"retrieval.{study_key(uid)}") is not None:
                    again = Patch(ENROLMENTS, patch.key, f"retrieval.{study_key(uid)}", patch.order,
                                  {"study_instance_uid": uid}, "study-status")  # fmt: skip
                    self._announce(again, document)

    def _announce(self, patch: Patch, document: dict[str, Any]) -> None:
        if patch.collection == ENROLMENTS:
            data = enrolment_message(patch, document, self._links)
            self._hub.publish(enrolment_stream(patch.key), patch.kind, data)
            meeting_id = get_path(document, "enrolment") or {}
            target = meeting_id.get("meeting_id") or (get_path(document, "identity") or {}).get("meeting_id")
            if target:
                summary = views.summary_view(document).model_dump(mode="json")
                self._hub.publish(meeting_stream(str(target)), patch.kind, {**data, "summary": summary})
        elif patch.collection == MEETINGS:
            meeting = views.meeting_view(patch.key, document).model_dump(mode="json")
            self._hub.publish(meeting_stream(patch.key), "meeting", {"meeting": meeting})
        elif patch.collection == RCPS:
            rcp = views.rcp_view(document)
            self._hub.publish(
                rcp_stream(patch.key), "rcp-settings", {"rcp": rcp.model_dump(mode="json") if rcp else None}
            )
