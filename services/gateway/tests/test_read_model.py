"""The typed read model mirrors the projection exactly: every part declares the keys the projection stores for it,
no more, no fewer (a rename on either side fails here), and a stored part missing one of them is refused when read,
with an error that names the field and never a stored value."""

from __future__ import annotations

import copy
import datetime as dt
import types
import typing
from typing import Any

import pytest
from gateway import read_model
from gateway.projection import ENROLMENTS, MEETINGS, RCPS, Collection, PatchKind, patches
from gateway.read_model import (
    CataloguePart,
    EnrolmentPart,
    ExpertsPart,
    IdentityPart,
    MeetingFacts,
    MemberPart,
    NotificationPart,
    RcpSettingsPart,
    RemovalPart,
    RetrievalPart,
    SelectionPart,
    StoredDocumentError,
    WithdrawalPart,
)
from proxymage_shared import events as ev
from pydantic import BaseModel
from structlog.testing import capture_logs

from .fakes import FakeReadModel, reading_client
from .test_projection import CANONICAL, ENROLMENT, POOL, UIDS, status

PART_OF_KIND: dict[PatchKind, type[BaseModel]] = {
    "enrolment": EnrolmentPart,
    "meeting": MeetingFacts,
    "member": MemberPart,
    "withdrawal": WithdrawalPart,
    "identity": IdentityPart,
    "catalogue": CataloguePart,
    "selection": SelectionPart,
    "removal": RemovalPart,
    "study-status": RetrievalPart,
    "expertise": NotificationPart,
    "experts": ExpertsPart,
    "rcp-settings": RcpSettingsPart,
}

# Events whose optional nested values are all present, beside test_projection's (whose are mostly empty).
FULLER: list[ev.Event] = [
    next(event for event in POOL if isinstance(event, ev.MeetingExperts)).model_copy(
        update={"on_call_nuclear_physician": ev.Expert(name="Dr N", email="n@x.mssante.fr")}
    ),
    status(91, UIDS[0], 9, "retrieving").model_copy(
        update={
            "progress": ev.Progress(done=1, total=2),
            "next_attempt_at": dt.datetime(2023, 3, 2, 8, 0, tzinfo=dt.UTC),
        }
    ),
]


def _read_model_part(annotation: object) -> type[BaseModel] | None:
    """The read model's own part in a field's type (`StoredExpert | None`, `tuple[PacsRef, ...]`...), if any: the
    contract's models (`NearMiss`, `Progress`, `ImagingFilters`) are checked by the contract's tests."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation if annotation.__module__ == read_model.__name__ else None
    for argument in typing.get_args(annotation):
        found = _read_model_part(argument)
        if found is not None:
            return found
    return None


def _stored_keys_match(model: type[BaseModel], stored: dict[str, Any], where: str) -> None:
    declared = {field.alias or name for name, field in model.model_fields.items()}
    assert set(stored) == declared, f"{where}: stored {sorted(stored)}, declared by {model.__name__} {sorted(declared)}"
    for name, field in model.model_fields.items():
        nested = _read_model_part(field.annotation)
        value = stored[field.alias or name]
        for item in value if isinstance(value, list) else [value]:
            if nested is not None and item is not None:
                _stored_keys_match(nested, item, f"{where}.{name}")


def test_every_part_declares_exactly_the_keys_the_projection_stores() -> None:
    seen: set[str] = set()
    for event in [*POOL, *FULLER]:
        for patch in patches(event):
            stored = patch.stored_value()
            _stored_keys_match(PART_OF_KIND[patch.kind], stored, patch.kind)
            PART_OF_KIND[patch.kind].model_validate(stored)  # and it reads
            seen.add(patch.kind)
    assert seen == set(typing.get_args(PatchKind)) == set(PART_OF_KIND)


def test_the_read_model_does_not_depend_on_the_rest_models() -> None:
    names = vars(read_model).values()
    used = {value.__module__ for value in names if isinstance(value, type)}
    used |= {value.__name__ for value in names if isinstance(value, types.ModuleType)}
    assert "gateway.api_models" not in used


def _without(document: dict[str, Any], path: str) -> dict[str, Any]:
    broken = copy.deepcopy(document)
    *parents, leaf = path.split(".")
    node = broken
    for part in parents:
        node = node[part]
    del node[leaf]
    return broken


@pytest.mark.parametrize(
    ("collection", "key", "path"),
    [
        (ENROLMENTS, ENROLMENT, "enrolment.meeting_id"),
        (ENROLMENTS, ENROLMENT, "enrolment.consent"),
        (ENROLMENTS, ENROLMENT, "enrolment.patient.birth_name"),
        (ENROLMENTS, ENROLMENT, "withdrawal.reason"),
        (ENROLMENTS, ENROLMENT, "identity.source_event_id"),
        (ENROLMENTS, ENROLMENT, "catalogue.reason"),
        (ENROLMENTS, ENROLMENT, "removals.1_2_3_2.study_instance_uid"),
        (ENROLMENTS, ENROLMENT, "retrieval.1_2_3_1.study_instance_uid"),
        (ENROLMENTS, ENROLMENT, "retrieval.1_2_3_1.order"),
        (ENROLMENTS, ENROLMENT, "notifications.radiologist.role"),
        (MEETINGS, "m-1", "experts.on_call_nuclear_physician"),
        (MEETINGS, "m-1", "enrolment_details.date"),
        (RCPS, "rcp-1", "settings.imaging"),
    ],
)
def test_a_stored_part_missing_a_required_field_is_refused(collection: Collection, key: str, path: str) -> None:
    document = CANONICAL[(collection, key)]
    read_model.parse_document(collection, document)  # whole, it reads
    with pytest.raises(StoredDocumentError) as refused:
        read_model.parse_document(collection, _without(document, path))
    message = str(refused.value)
    assert f"{collection} document {key!r}" in message
    assert f"{path}: Field required" in message
    assert "CATHY" not in message  # the patient's first name: no stored value in the message


@pytest.mark.parametrize("path", ["identity.source_occurred_at", "catalogue.reason_code"])
def test_a_part_stored_before_contract_1_1_still_reads(path: str) -> None:
    """The two fields CONTRACT v1.1 added to parts already written by then: absent, they read as none."""
    record = read_model.parse_document(ENROLMENTS, _without(CANONICAL[(ENROLMENTS, ENROLMENT)], path))
    part, field = path.split(".")
    assert getattr(getattr(record, part), field) is None


def test_a_renamed_field_is_refused_not_read_as_none() -> None:
    document = copy.deepcopy(CANONICAL[(ENROLMENTS, ENROLMENT)])
    document["enrolment"]["consent_given"] = document["enrolment"].pop("consent")
    with pytest.raises(StoredDocumentError, match=r"enrolment\.consent: Field required"):
        read_model.enrolment_record(document)


async def test_a_read_of_an_unreadable_document_answers_500_and_logs_no_patient_data() -> None:
    store = FakeReadModel()
    store.documents[(ENROLMENTS, ENROLMENT)] = _without(CANONICAL[(ENROLMENTS, ENROLMENT)], "enrolment.meeting_id")
    now = dt.datetime(2023, 3, 1, 8, 0, tzinfo=dt.UTC)
    with capture_logs() as logs:
        async with reading_client(store, today=now.date(), now=now) as (http, _):
            answer = await http.get(f"/api/v1/enrolments/{ENROLMENT}")
    assert (answer.status_code, answer.json()) == (500, {"detail": "internal error"})
    (logged,) = [line for line in logs if line["event"] == "read_model_unreadable"]
    assert logged["log_level"] == "error"
    assert "enrolment.meeting_id: Field required" in logged["error"]
    assert "CATHY" not in repr(logs)
