"""The selection, study-removal, refresh and imaging-settings commands (`gateway.api_commands.COMMANDS`) with the
publisher and the audit replaced by a recorder (no server): what each publishes (contract topic, key, the
event's fields), its 202 answer, and its audit record, ids only; a Kafka that does not take the event is a 503,
audited too. The enrolment, withdrawal and experts commands have their own files."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from proxymage_shared import topics
from proxymage_shared.events import Event, ImagingRefresh, RcpSettings, StudiesSelected, StudyRemoved

from .fakes import CommandRecorder, command_client

NOW = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.UTC)
TOKENS = {"dcc-token": ("dcc", "dcc")}
UID = "1.2.826.0.1.3680043.10.7"


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: dict[str, Any] | None
    topic: str
    event: type[Event]
    key: str
    fields: dict[str, Any]  # the event's fields besides event_id and occurred_at, as JSON
    action: str
    ids: dict[str, str]  # the audit record's ids


SETTINGS_BODY = {
    "title": "RCP ORL",
    "centre": "3C Fictif",
    "imaging": {
        "modalities": ["CT", "MR"],
        "date_filter": {"kind": "between", "from": "2024-01-01", "to": "2025-06-30"},
    },
}
CASES = {
    "put_selection": Case(
        "PUT",
        "/api/v1/enrolments/enr-1/selection",
        {"study_instance_uids": [UID, "1.2.3"], "expertise_requested": True},
        topics.STUDIES_SELECTED,
        StudiesSelected,
        "enr-1",
        {"enrolment_id": "enr-1", "study_instance_uids": [UID, "1.2.3"], "expertise_requested": True},
        "select",
        {"enrolment_id": "enr-1"},
    ),
    "delete_study": Case(
        "DELETE",
        f"/api/v1/enrolments/enr-1/studies/{UID}",
        None,
        topics.STUDY_REMOVED,
        StudyRemoved,
        "enr-1",
        {"enrolment_id": "enr-1", "study_instance_uid": UID},
        "remove_study",
        {"enrolment_id": "enr-1"},
    ),
    "post_refresh": Case(
        "POST",
        "/api/v1/enrolments/enr-1/refresh",
        None,
        topics.IMAGING_REFRESH,
        ImagingRefresh,
        "enr-1",
        {"enrolment_id": "enr-1"},
        "refresh",
        {"enrolment_id": "enr-1"},
    ),
    "put_imaging_settings": Case(
        "PUT",
        "/api/v1/rcps/rcp-orl/imaging-settings",
        SETTINGS_BODY,
        topics.RCP_SETTINGS,
        RcpSettings,
        "rcp-orl",
        {"rcp_id": "rcp-orl", **SETTINGS_BODY},
        "rcp_settings",
        {"rcp_id": "rcp-orl"},
    ),
}


async def _call(recorder: CommandRecorder, case: Case) -> tuple[int, Any]:
    """The command's answer (status, JSON), the audit flushed into `recorder`."""
    async with command_client(recorder, NOW, TOKENS) as http:
        answer = await http.request(case.method, case.path, json=case.body)
    return answer.status_code, answer.json()


def _audit(case: Case, status: int, event_id: str | None) -> dict[str, Any]:
    ids = {"enrolment_id": None, "meeting_id": None, "rcp_id": None, **case.ids}
    return {
        "who": "dcc",
        "subject": None,
        "role": "dcc",
        "action": case.action,
        "status": status,
        **ids,
        "event_id": event_id,
    }


def _without_time(record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name != "at"}


@pytest.mark.parametrize("name", list(CASES))
async def test_the_command_publishes_its_event_on_its_topic_keyed_and_audited(name: str) -> None:
    case, recorder = CASES[name], CommandRecorder()
    status, body = await _call(recorder, case)
    assert status == 202, body
    ((topic, key, event),) = recorder.published
    assert (topic, key, type(event)) == (case.topic, case.key, case.event)
    assert body == {"event_id": str(event.event_id)}
    assert event.occurred_at == NOW
    published = event.model_dump(mode="json", by_alias=True)
    assert {name: published[name] for name in case.fields} == case.fields
    assert [_without_time(record) for record in recorder.audited] == [_audit(case, 202, str(event.event_id))]


@pytest.mark.parametrize("name", list(CASES))
async def test_the_command_kafka_does_not_take_is_503_and_audited(name: str) -> None:
    case, recorder = CASES[name], CommandRecorder()
    recorder.fail = True
    status, body = await _call(recorder, case)
    assert (status, body) == (503, {"detail": "the command could not be published to Kafka; try again"})
    assert recorder.published == []
    assert [_without_time(record) for record in recorder.audited] == [_audit(case, 503, None)]
