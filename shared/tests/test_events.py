"""The event contract: CONTRACT.md's examples parse; invalid events are rejected with a reason that
names the field but never echoes its value (values may be patient data)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from proxymage_shared import events, topics
from proxymage_shared.kafka import validation_reason
from pydantic import ValidationError

EVENT_ID = "6f1c7d3e-2b7a-4c4e-9d1a-0a1b2c3d4e5f"
AT = "2023-03-01T10:00:00+01:00"

CONTRACT_EXAMPLES: dict[str, dict[str, Any]] = {
    topics.RCP_SETTINGS: {
        "event_id": EVENT_ID, "occurred_at": AT, "rcp_id": "rcp-orl-tours", "title": "RCP ORL CHRU de Tours",
        "centre": "3C du CHRU de Tours",
        "imaging": {"modalities": ["CT", "MR", "PT"], "date_filter": {"kind": "within_months", "months": 6}},
    },
    topics.MEETING_EXPERTS: {
        "event_id": EVENT_ID, "occurred_at": AT, "meeting_id": "m-2023-03-22-orl", "rcp_id": "rcp-orl-tours",
        "title": "RCP ORL CHRU de Tours", "date": "2023-03-22", "centre": "3C du CHRU de Tours",
        "on_call_radiologist": {"name": "Dr Jeanne FICTIVE", "email": "jeanne.fictive@chu-exemple.mssante.fr"},
        "on_call_nuclear_physician": None,
    },
    topics.PATIENT_ENROLLED: {
        "event_id": EVENT_ID, "occurred_at": AT, "enrolment_id": "enr-000123",
        "meeting_id": "m-2023-03-22-orl", "rcp_id": "rcp-orl-tours", "meeting_title": "RCP ORL CHRU de Tours",
        "meeting_date": "2023-03-22", "centre": "3C du CHRU de Tours",
        "patient": {"birth_name": "EXEMPLE", "used_name": None, "first_name": "Catherine",
                    "birth_date": "1956-04-12", "sex": "F"},
        "consent": True, "requested_by": {"name": "Dr Paul FICTIF"},
    },
    topics.STUDIES_SELECTED: {
        "event_id": EVENT_ID, "occurred_at": AT, "enrolment_id": "enr-000123",
        "study_instance_uids": ["1.2.3.4", "1.2.4.5"], "expertise_requested": True,
    },
    topics.STUDY_REMOVED: {
        "event_id": EVENT_ID, "occurred_at": AT, "enrolment_id": "enr-000123", "study_instance_uid": "1.2.3.4",
    },
    topics.IMAGING_REFRESH: {"event_id": EVENT_ID, "occurred_at": AT, "enrolment_id": "enr-000123"},
}  # fmt: skip


def test_every_contract_topic_has_a_model() -> None:
    assert set(events.INBOUND_EVENT_TYPES) | set(events.OUTCOME_EVENT_TYPES) == set(topics.CONTRACT_TOPICS)
    assert set(topics.TOPIC_KEYS) == set(topics.CONTRACT_TOPICS)


@pytest.mark.parametrize("topic", sorted(CONTRACT_EXAMPLES))
def test_contract_examples_parse_and_round_trip(topic: str) -> None:
    model = events.INBOUND_EVENT_TYPES[topic]
    event = model.model_validate_json(json.dumps(CONTRACT_EXAMPLES[topic]))
    assert str(event.event_id) == EVENT_ID
    assert event.occurred_at == dt.datetime(2023, 3, 1, 9, 0, tzinfo=dt.UTC)
    assert model.model_validate_json(event.to_kafka_value()) == event
    key_field = topics.TOPIC_KEYS[topic]
    assert getattr(event, key_field) == CONTRACT_EXAMPLES[topic][key_field]


def test_unknown_fields_are_ignored() -> None:
    payload = {**CONTRACT_EXAMPLES[topics.IMAGING_REFRESH], "future_field": {"anything": 1}}
    event = events.ImagingRefresh.model_validate_json(json.dumps(payload))
    assert event.enrolment_id == "enr-000123"


def test_date_filters_are_a_closed_vocabulary() -> None:
    base = CONTRACT_EXAMPLES[topics.RCP_SETTINGS]
    between = {**base, "imaging": {"modalities": [], "date_filter": {"kind": "between", "from": "2023-01-01",
                                                                       "to": "2023-03-31"}}}  # fmt: skip
    parsed = events.RcpSettings.model_validate_json(json.dumps(between))
    assert isinstance(parsed.imaging.date_filter, events.BetweenDates)
    assert parsed.imaging.date_filter.date_from == dt.date(2023, 1, 1)
    assert json.loads(parsed.to_kafka_value())["imaging"]["date_filter"]["from"] == "2023-01-01"
    for bad in ({"kind": "someday"}, {"kind": "within_months", "months": 0}, {"kind": "between", "from": "2023"}):
        with pytest.raises(ValidationError):
            events.RcpSettings.model_validate_json(json.dumps({**base, "imaging": {"modalities": [],
                                                                                   "date_filter": bad}}))  # fmt: skip


def _mutated(topic: str, path: tuple[str, ...], value: Any) -> str:
    payload = json.loads(json.dumps(CONTRACT_EXAMPLES[topic]))
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(payload)


_DELETE = object()

INVALID = [
    ("missing event_id", topics.IMAGING_REFRESH, ("event_id",), _DELETE),
    ("event_id not a UUID", topics.IMAGING_REFRESH, ("event_id",), "evt-1"),
    ("occurred_at without offset", topics.IMAGING_REFRESH, ("occurred_at",), "2023-03-01T10:00:00"),
    ("occurred_at as a number", topics.IMAGING_REFRESH, ("occurred_at",), 1677661200),
    ("consent as a string", topics.PATIENT_ENROLLED, ("consent",), "yes"),
    ("unknown sex", topics.PATIENT_ENROLLED, ("patient", "sex"), "X"),
    ("birth date not ISO", topics.PATIENT_ENROLLED, ("patient", "birth_date"), "12/04/1956"),
    ("impossible birth date", topics.PATIENT_ENROLLED, ("patient", "birth_date"), "1956-02-30"),
    ("missing patient", topics.PATIENT_ENROLLED, ("patient",), _DELETE),
    ("empty first name", topics.PATIENT_ENROLLED, ("patient", "first_name"), ""),
    ("unknown modality", topics.RCP_SETTINGS, ("imaging", "modalities"), ["CT", "XX"]),
    ("not a DICOM UID", topics.STUDY_REMOVED, ("study_instance_uid",), "1.2.abc"),
    ("expertise flag missing", topics.STUDIES_SELECTED, ("expertise_requested",), _DELETE),
    ("enrolment id with a slash", topics.IMAGING_REFRESH, ("enrolment_id",), "enr/../x"),
    ("expert e-mail invalid", topics.MEETING_EXPERTS, ("on_call_radiologist", "email"), "not-an-address"),
]


@pytest.mark.parametrize(("case", "topic", "path", "value"), INVALID, ids=[case[0] for case in INVALID])
def test_invalid_events_are_rejected(case: str, topic: str, path: tuple[str, ...], value: Any) -> None:
    with pytest.raises(ValidationError) as raised:
        events.INBOUND_EVENT_TYPES[topic].model_validate_json(_mutated(topic, path, value))
    reason = validation_reason(raised.value)
    assert reason.startswith("invalid event: ")
    assert path[0] in reason


def test_validation_reason_never_echoes_values() -> None:
    payload = _mutated(topics.PATIENT_ENROLLED, ("patient", "birth_date"), "SECRETNAME-1956")
    with pytest.raises(ValidationError) as raised:
        events.PatientEnrolled.model_validate_json(payload)
    reason = validation_reason(raised.value)
    assert "patient.birth_date" in reason
    assert "SECRETNAME" not in reason


def test_outcome_events_round_trip() -> None:
    resolved = events.IdentityResolved(
        event_id=events.new_event_id(),
        occurred_at=events.utc_now(),
        enrolment_id="enr-1",
        source_event_id=events.new_event_id(),
        meeting_id="m-1",
        meeting_date=dt.date(2026, 12, 1),
        status="unmatched",
        near_misses=(events.NearMiss(trait="first_name", kind="separator"),),
    )
    assert events.IdentityResolved.model_validate_json(resolved.to_kafka_value()) == resolved
    status = events.StudyStatusChanged(
        event_id=events.new_event_id(),
        occurred_at=events.utc_now(),
        enrolment_id="enr-1",
        study_instance_uid="1.2.3",
        status="retrieving",
        version=3,
        progress=events.Progress(done=120, total=412),
        attempts=1,
    )
    assert events.StudyStatusChanged.model_validate_json(status.to_kafka_value()) == status
