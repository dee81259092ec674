"""The read model's projection, pure: every consumed event becomes one `Patch` of one document.

A patch sets one part of one document (e.g. `identity`, or `retrieval.<study>` of an enrolment) together
with an `order` key, and applies only if the stored part's `order` is lower. Order keys:

| part                                                        | order key                          |
|-------------------------------------------------------------|------------------------------------|
| enrolment, withdrawal, identity, catalogue, selection,      | the event's `EventStamp`           |
| removals.<study>                                            |                                    |
| meeting details, RCP settings                               | the event's `EventStamp`           |
| retrieval.<study>, notifications.<role>                     | the job's `version`, then the same |

`EventStamp` (`proxymage_shared.idempotency`) is the order of events every service uses: `occurred_at` to the
millisecond, then `event_id`; the key is its text, in the same order. Keys written before it (to the microsecond)
need no migration: a new key and an old one of different milliseconds compare as their times, and of the same
millisecond the new one is the higher, so a replay of an event already projected rewrites its part once, with
the same values.

So each part only moves forward, and the final document is the same whatever the order of delivery or the
number of replays (the property tests check it). The store runs each patch as one conditional upsert; the
in-memory `apply_patch` below is its exact counterpart (used by the tests and to describe the semantics).

Documents hold JSON values only (strings for dates), so the in-memory and stored forms are the same.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from proxymage_shared.events import (
    EnrolmentWithdrawn,
    Event,
    ExpertiseNotification,
    IdentityResolved,
    ImagingCatalogued,
    MeetingExperts,
    PatientEnrolled,
    RcpSettings,
    StudiesSelected,
    StudyRemoved,
    StudyStatusChanged,
)
from proxymage_shared.idempotency import EventStamp

# A JSON value, as stored in MongoDB.
Json: TypeAlias = "str | int | float | bool | list[Json] | dict[str, Json] | None"
Collection: TypeAlias = Literal["enrolments", "meetings", "rcps"]
# What a patch changed (the SSE event name of the live updates).
PatchKind: TypeAlias = Literal[
    "enrolment",
    "meeting",
    "member",
    "withdrawal",
    "identity",
    "catalogue",
    "selection",
    "removal",
    "study-status",
    "expertise",
    "experts",
    "rcp-settings",
]
ENROLMENTS: Final = "enrolments"
MEETINGS: Final = "meetings"
RCPS: Final = "rcps"
ORDER: Final = "order"


@dataclass(frozen=True, slots=True)
class Patch:
    """Set `value` at `path` of document `key` in `collection` if the stored `order` there is lower."""

    collection: Collection
    key: str
    path: str  # dotted, at most two levels: "identity" or "retrieval.<study key>"
    order: str
    value: dict[str, Json]
    kind: PatchKind

    def stored_value(self) -> dict[str, Json]:
        return {**self.value, ORDER: self.order}


def member_key(enrolment_id: str) -> str:
    """A field name for an enrolment id (hexadecimal: no `.` or `$`, and no two ids share one)."""
    return enrolment_id.encode().hex()


def study_key(study_instance_uid: str) -> str:
    """A field name for a UID: MongoDB reads dots as paths; UIDs are digits and dots only, so `_` is safe."""
    return study_instance_uid.replace(".", "_")


def _utc_text(moment: dt.datetime) -> str:
    # Fixed width (microseconds always present, UTC): text order is time order.
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def order_key(occurred_at: dt.datetime, event_id: object) -> str:
    """The order key of the event `event_id` that occurred at `occurred_at`: the text of its `EventStamp`, whose
    order is the stamp's (the time's text has a fixed width, to the millisecond, UTC; event ids are ASCII)."""
    stamp = EventStamp.of(occurred_at, event_id)  # in UTC
    return f"{stamp.occurred_at.replace(tzinfo=None).isoformat(timespec='milliseconds')}Z|{stamp.event_id}"


def event_order(event: Event) -> str:
    return order_key(event.occurred_at, event.event_id)


def versioned_order(version: int, event: Event) -> str:
    return f"{version:015d}|{event_order(event)}"


def _stamp(event: Event) -> dict[str, Json]:
    return {"event_id": str(event.event_id), "occurred_at": _utc_text(event.occurred_at)}


def patches(event: Event) -> list[Patch]:
    """The patches one event makes (an event the gateway does not project makes none)."""
    if isinstance(event, PatientEnrolled):
        facts = event.model_dump(mode="json", exclude={"event_id", "occurred_at"})
        return [
            Patch(
                ENROLMENTS, event.enrolment_id, "enrolment", event_order(event), {**facts, **_stamp(event)}, "enrolment"
            ),
            Patch(
                MEETINGS,
                event.meeting_id,
                "enrolment_details",
                event_order(event),
                {
                    "rcp_id": event.rcp_id,
                    "title": event.meeting_title,
                    "date": event.meeting_date.isoformat(),
                    "centre": event.centre,
                    **_stamp(event),
                },
                "meeting",
            ),
            # The meeting lists its enrolments, so a meeting's page reads them by `_id` rather than by a query
            # on every enrolment (which costs as much as the whole read model on the local store).
            Patch(
                MEETINGS,
                event.meeting_id,
                f"members.{member_key(event.enrolment_id)}",
                event_order(event),
                {"enrolment_id": event.enrolment_id, **_stamp(event)},
                "member",
            ),
        ]
    if isinstance(event, EnrolmentWithdrawn):
        # Its own part, beside `enrolment`: the views compare the two order keys (the newer one decides
        # whether the enrolment is withdrawn or re-opened), so neither event erases the other's facts.
        return [
            Patch(
                ENROLMENTS,
                event.enrolment_id,
                "withdrawal",
                event_order(event),
                {"reason": event.reason, **_stamp(event)},
                "withdrawal",
            )
        ]
    if isinstance(event, IdentityResolved):
        value = event.model_dump(mode="json", exclude={"event_id", "occurred_at", "enrolment_id"})
        return [
            Patch(
                ENROLMENTS, event.enrolment_id, "identity", event_order(event), {**value, **_stamp(event)}, "identity"
            )
        ]
    if isinstance(event, ImagingCatalogued):
        value = event.model_dump(mode="json", exclude={"event_id", "occurred_at", "enrolment_id"})
        return [
            Patch(
                ENROLMENTS, event.enrolment_id, "catalogue", event_order(event), {**value, **_stamp(event)}, "catalogue"
            )
        ]
    if isinstance(event, StudiesSelected):
        value = event.model_dump(mode="json", exclude={"event_id", "occurred_at", "enrolment_id"})
        return [
            Patch(
                ENROLMENTS, event.enrolment_id, "selection", event_order(event), {**value, **_stamp(event)}, "selection"
            )
        ]
    if isinstance(event, StudyRemoved):
        return [
            Patch(
                ENROLMENTS,
                event.enrolment_id,
                f"removals.{study_key(event.study_instance_uid)}",
                event_order(event),
                {"study_instance_uid": event.study_instance_uid, **_stamp(event)},
                "removal",
            )
        ]
    if isinstance(event, StudyStatusChanged):
        value = event.model_dump(mode="json", exclude={"event_id", "occurred_at", "enrolment_id"})
        return [
            Patch(
                ENROLMENTS,
                event.enrolment_id,
                f"retrieval.{study_key(event.study_instance_uid)}",
                versioned_order(event.version, event),
                {**value, **_stamp(event)},
                "study-status",
            )
        ]
    if isinstance(event, ExpertiseNotification):
        value = event.model_dump(mode="json", exclude={"event_id", "occurred_at", "enrolment_id"})
        return [
            Patch(
                ENROLMENTS,
                event.enrolment_id,
                f"notifications.{event.role or 'none'}",
                versioned_order(event.version, event),
                {**value, **_stamp(event)},
                "expertise",
            )
        ]
    if isinstance(event, MeetingExperts):
        value = event.model_dump(mode="json", exclude={"event_id", "occurred_at"})
        return [Patch(MEETINGS, event.meeting_id, "experts", event_order(event), {**value, **_stamp(event)}, "experts")]
    if isinstance(event, RcpSettings):
        value = event.model_dump(mode="json", by_alias=True, exclude={"event_id", "occurred_at"})
        return [Patch(RCPS, event.rcp_id, "settings", event_order(event), {**value, **_stamp(event)}, "rcp-settings")]
    return []


def get_path(document: Mapping[str, object] | None, path: str) -> Mapping[str, object] | None:
    node: object = document
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node if isinstance(node, Mapping) else None


def supersedes(patch: Patch, document: Mapping[str, object] | None) -> bool:
    """True when `patch` is newer than what `document` holds at its path (or nothing is there)."""
    current = get_path(document, patch.path)
    return current is None or str(current.get(ORDER, "")) < patch.order


def apply_patch(document: dict[str, Json] | None, patch: Patch) -> dict[str, Json]:
    """The document after `patch` (a new dict; the input is not modified). Mirrors the store's update."""
    result: dict[str, Json] = copy.deepcopy(document) if document is not None else {"_id": patch.key}
    if not supersedes(patch, result):
        return result
    *parents, leaf = patch.path.split(".")
    node = result
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = patch.stored_value()
    return result
