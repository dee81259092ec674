"""The projection is order-insensitive and monotonic: any order or duplication of the same events gives
the same documents, and no part of a document ever moves back to an older version."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from gateway import filters as flt
from gateway import views
from gateway.projection import ORDER, Patch, apply_patch, order_key, patches
from gateway.read_model import EnrolmentRecord, enrolment_record, rcp_record
from gateway.viewer import ViewerLinks
from hypothesis import given, settings
from hypothesis import strategies as st
from proxymage_shared import events as ev
from proxymage_shared.events import Event
from proxymage_shared.idempotency import EventStamp

ENROLMENT = "enr-1"
UIDS = ("1.2.3.1", "1.2.3.2", "1.2.3.3")
BASE = dt.datetime(2023, 3, 1, 8, 0, tzinfo=dt.UTC)
LINKS = ViewerLinks("http://viewer/{orthanc_study_id}")


def _at(offset: int) -> dt.datetime:
    return BASE + dt.timedelta(seconds=offset)


def _base(offset: int) -> dict[str, Any]:
    return {"event_id": str(uuid.UUID(int=offset * 7919 + 1)), "occurred_at": _at(offset).isoformat()}


def enrolled(offset: int, first_name: str) -> ev.PatientEnrolled:
    return ev.PatientEnrolled.model_validate(
        {
            **_base(offset),
            "enrolment_id": ENROLMENT,
            "meeting_id": "m-1",
            "rcp_id": "rcp-1",
            "meeting_title": "RCP",
            "meeting_date": "2023-03-22",
            "centre": "3C",
            "patient": {
                "birth_name": "B",
                "used_name": None,
                "first_name": first_name,
                "birth_date": "1956-04-12",
                "sex": "F",
            },
            "consent": True,
            "requested_by": {"name": "Dr P"},
        },
        strict=False,
    )


def withdrawn(offset: int, reason: str | None = None) -> ev.EnrolmentWithdrawn:
    return ev.EnrolmentWithdrawn.model_validate(
        {**_base(offset), "enrolment_id": ENROLMENT, "reason": reason}, strict=False
    )


def identity(
    offset: int, source: ev.PatientEnrolled | ev.EnrolmentWithdrawn, status: str, **extra: Any
) -> ev.IdentityResolved:
    return ev.IdentityResolved.model_validate(
        {
            **_base(offset),
            "enrolment_id": ENROLMENT,
            "source_event_id": str(source.event_id),
            "source_occurred_at": source.occurred_at.isoformat(),
            **extra,
            "meeting_id": "m-1",
            "meeting_date": "2023-03-22",
            "status": status,
            "pacs_patients": [{"patient_id": "P1", "issuer": "H"}] if status == "matched" else [],
        },
        strict=False,
    )


def catalogue(offset: int, uids: tuple[str, ...]) -> ev.ImagingCatalogued:
    return ev.ImagingCatalogued.model_validate(
        {
            **_base(offset),
            "enrolment_id": ENROLMENT,
            "status": "listed",
            "studies": [
                {
                    "study_instance_uid": uid,
                    "description": f"D{uid}",
                    "pacs": "MIRC",
                    "date": "2023-02-01",
                    "modalities": ["CT"],
                    "images": 10,
                    "series": 1,
                    "pacs_patient": {"patient_id": "P1", "issuer": "H"},
                }
                for uid in uids
            ],
        },
        strict=False,
    )


def status(offset: int, uid: str, version: int, state: str) -> ev.StudyStatusChanged:
    return ev.StudyStatusChanged.model_validate(
        {
            **_base(offset),
            "enrolment_id": ENROLMENT,
            "study_instance_uid": uid,
            "status": state,
            "version": version,
            "attempts": version,
        },
        strict=False,
    )


first, second = enrolled(1, "CATHERINE"), enrolled(50, "CATHY")
# Withdrawn between the two enrolled events: the second one re-opens the enrolment (CONTRACT v1.1).
withdrawal = withdrawn(40, "dossier présenté dans une autre RCP")
POOL: list[Event] = [
    first,
    second,
    withdrawal,
    identity(41, withdrawal, "withdrawn", reason_code="enrolment_withdrawn"),
    identity(2, first, "matched"),
    identity(51, second, "matched"),
    identity(60, second, "error"),
    catalogue(3, UIDS[:2]),
    catalogue(52, UIDS),
    ev.StudiesSelected.model_validate(
        {**_base(4), "enrolment_id": ENROLMENT, "study_instance_uids": list(UIDS[:2]), "expertise_requested": True},
        strict=False,
    ),
    ev.StudiesSelected.model_validate(
        {**_base(70), "enrolment_id": ENROLMENT, "study_instance_uids": list(UIDS), "expertise_requested": False},
        strict=False,
    ),
    ev.StudyRemoved.model_validate(
        {**_base(5), "enrolment_id": ENROLMENT, "study_instance_uid": UIDS[1]}, strict=False
    ),
    ev.StudyRemoved.model_validate(
        {**_base(80), "enrolment_id": ENROLMENT, "study_instance_uid": UIDS[2]}, strict=False
    ),
    status(6, UIDS[0], 1, "queued"),
    status(7, UIDS[0], 2, "retrieving"),
    status(8, UIDS[0], 3, "available"),
    status(9, UIDS[1], 1, "queued"),
    status(10, UIDS[1], 2, "removed"),
    status(11, UIDS[2], 1, "not_yet_available"),
    # the same version published again later (a re-publication after a crash): ties broken by time
    status(12, UIDS[2], 1, "not_yet_available"),
    ev.ExpertiseNotification.model_validate(
        {
            **_base(13),
            "enrolment_id": ENROLMENT,
            "meeting_id": "m-1",
            "role": "radiologist",
            "status": "pending",
            "version": 1,
        },
        strict=False,
    ),
    ev.ExpertiseNotification.model_validate(
        {
            **_base(14),
            "enrolment_id": ENROLMENT,
            "meeting_id": "m-1",
            "role": "radiologist",
            "status": "sent",
            "version": 2,
        },
        strict=False,
    ),
    ev.MeetingExperts.model_validate(
        {
            **_base(15),
            "meeting_id": "m-1",
            "rcp_id": "rcp-1",
            "title": "RCP ORL",
            "date": "2023-03-22",
            "centre": "3C",
            "on_call_radiologist": {"name": "Dr R", "email": "r@x.mssante.fr"},
            "on_call_nuclear_physician": None,
        },
        strict=False,
    ),
    ev.RcpSettings.model_validate(
        {
            **_base(16),
            "rcp_id": "rcp-1",
            "title": "RCP",
            "centre": "3C",
            "imaging": {"modalities": ["CT"], "date_filter": {"kind": "none"}},
        },
        strict=False,
    ),
]


class Documents(dict[tuple[str, str], dict[str, Any]]):
    """The stored documents by (collection, key)."""

    def enrolment(self, enrolment_id: str = ENROLMENT) -> EnrolmentRecord:
        """The enrolment's document as the store reads it."""
        return enrolment_record(self[("enrolments", enrolment_id)])


def fold(events: list[Event]) -> Documents:
    documents = Documents()
    for event in events:
        for patch in patches(event):
            key = (patch.collection, patch.key)
            before = documents.get(key)
            after = apply_patch(before, patch)
            _assert_monotonic(before, after)
            documents[key] = after
    return documents


def _orders(document: dict[str, Any] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, part in (document or {}).items():
        if isinstance(part, dict) and ORDER in part:
            found[name] = part[ORDER]
        elif isinstance(part, dict):
            found.update({f"{name}.{sub}": value[ORDER] for sub, value in part.items() if isinstance(value, dict)})
    return found


def _assert_monotonic(before: dict[str, Any] | None, after: dict[str, Any]) -> None:
    old, new = _orders(before), _orders(after)
    for path, order in old.items():
        assert new[path] >= order, f"{path} moved back"


CANONICAL = fold(POOL)


@settings(max_examples=300)
@given(st.permutations(POOL), st.lists(st.sampled_from(POOL), max_size=15))
def test_any_order_and_replays_give_the_same_documents(order: list[Event], replays: list[Event]) -> None:
    assert fold(order + replays) == CANONICAL
    assert fold(replays + order) == CANONICAL


def test_the_final_document_is_the_newest_state() -> None:
    rcp = rcp_record(CANONICAL[("rcps", "rcp-1")])
    answer = views.enrolment_view(CANONICAL.enrolment(), rcp, flt.Overrides(all=True), BASE.date(), LINKS)
    assert answer.identity.status == "error"  # the latest outcome of the current enrolled event
    assert answer.withdrawal is None  # re-opened by the second enrolled event
    assert answer.patient is not None
    assert answer.patient.first_name == "CATHY"
    by_uid = {study.study_instance_uid: study for study in answer.studies}
    # identity `error`: no catalogue is shown, only the selected studies
    assert set(by_uid) == {UIDS[0], UIDS[1]}
    assert by_uid[UIDS[0]].retrieval.status == "available"
    assert by_uid[UIDS[0]].retrieval.viewer_url is None  # not catalogued for a matched identity: no PatientID
    assert by_uid[UIDS[1]].retrieval.status == "queued"  # removed (v2) before the newer selection re-selected it
    assert answer.expertise.requested is False
    assert [(n.role, n.status) for n in answer.expertise.notifications] == [("radiologist", "sent")]


def test_a_stale_status_never_moves_a_study_back() -> None:
    documents = fold([status(8, UIDS[0], 3, "available"), status(7, UIDS[0], 2, "retrieving")])
    assert documents[("enrolments", ENROLMENT)]["retrieval"]["1_2_3_1"]["status"] == "available"


def test_unprojected_events_make_no_patch() -> None:
    from proxymage_shared.events import ImagingRefresh

    refresh = ImagingRefresh.model_validate({**_base(1), "enrolment_id": ENROLMENT}, strict=False)
    assert patches(refresh) == []
    assert isinstance(patches(first)[0], Patch)


@given(
    st.datetimes(timezones=st.just(dt.UTC)),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.uuids(),
    st.uuids(),
)
def test_order_keys_order_events_as_their_event_stamps(
    one_at: dt.datetime, other_at: dt.datetime, one_id: uuid.UUID, other_id: uuid.UUID
) -> None:
    one, other = order_key(one_at, one_id), order_key(other_at, other_id)
    one_stamp, other_stamp = EventStamp.of(one_at, one_id), EventStamp.of(other_at, other_id)
    assert (one < other, one == other) == (one_stamp < other_stamp, one_stamp == other_stamp)


def _stamped(event: Event, at: dt.datetime, event_id: str) -> Event:
    return event.model_copy(update={"occurred_at": at, "event_id": uuid.UUID(event_id)})


# Two DCC events of the same millisecond: by the microsecond the withdrawal is the later, by `EventStamp` (the
# millisecond, then event_id: the identity-matcher's rule) the enrolled event is.
SAME_MS = dt.datetime(2023, 3, 1, 8, 0, 0, 123_000, tzinfo=dt.UTC)
ENROLLED_SAME_MS = _stamped(
    enrolled(1, "A"), SAME_MS.replace(microsecond=123_100), "ffffffff-0000-4000-8000-000000000000"
)
WITHDRAWN_SAME_MS = _stamped(withdrawn(2), SAME_MS.replace(microsecond=123_900), "00000000-0000-4000-8000-000000000000")


def _event_stamp(event: Event) -> EventStamp:
    return EventStamp.of(event.occurred_at, event.event_id)


@pytest.mark.parametrize("newer_first", [True, False])
def test_two_events_of_the_same_millisecond_are_ordered_by_event_id_as_every_service_orders_them(
    newer_first: bool,
) -> None:
    assert _event_stamp(ENROLLED_SAME_MS).is_newer_than(_event_stamp(WITHDRAWN_SAME_MS))
    events = [ENROLLED_SAME_MS, WITHDRAWN_SAME_MS]
    record = fold(events if newer_first else events[::-1]).enrolment()
    assert views.withdrawal_in_force(record) is None  # re-opened by the enrolled event, the newer of the two
    assert views.withdrawn_since(record) is None


def test_an_outcome_answering_a_withdrawal_of_the_same_millisecond_is_current_only_if_its_stamp_is_newer() -> None:
    # The gateway has not consumed the withdrawal yet: the identity-matcher's outcome says when it occurred.
    answer_to_older = identity(3, WITHDRAWN_SAME_MS, "withdrawn")  # type: ignore[arg-type]
    record = fold([ENROLLED_SAME_MS, answer_to_older]).enrolment()
    assert views.identity_view(record).status == "pending"  # it answers an event older than the enrolled one
    newer = _stamped(WITHDRAWN_SAME_MS, WITHDRAWN_SAME_MS.occurred_at, "ffffffff-ffff-4fff-8fff-ffffffffffff")
    assert _event_stamp(newer).is_newer_than(_event_stamp(ENROLLED_SAME_MS))
    record = fold([ENROLLED_SAME_MS, identity(3, newer, "withdrawn")]).enrolment()  # type: ignore[arg-type]
    assert views.identity_view(record).status == "withdrawn"
