"""The demo scenario, published on Kafka as the DCC would: an RCP with default filters, a meeting with
its on-call experts, and three enrolled patients — one who matches synthetic studies in MIRC, one not
found because of a near miss (a separator in the first name), one without consent."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer

from proxymage_shared import topics
from proxymage_shared.events import (
    Event,
    ImagingFilters,
    MeetingExperts,
    PatientEnrolled,
    RcpSettings,
)

RCP_ID = "rcp-orl-fictif"
MEETING_ID_PREFIX = "m-demo-orl"


def _base() -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "occurred_at": dt.datetime.now(dt.UTC)}


def scenario_events(today: dt.date | None = None) -> list[tuple[str, str, Event]]:
    """(topic, key, event) in publication order."""
    today = today or dt.date.today()
    meeting_date = today + dt.timedelta(days=3)
    meeting_id = f"{MEETING_ID_PREFIX}-{meeting_date:%Y-%m-%d}"
    rcp = RcpSettings.model_validate(
        {
            **_base(),
            "rcp_id": RCP_ID,
            "title": "RCP ORL du CHU Fictif",
            "centre": "3C du CHU Fictif",
            "imaging": ImagingFilters.model_validate(
                {"modalities": ["CT", "MR", "PT", "SR"], "date_filter": {"kind": "within_months", "months": 24}},
                strict=False,
            ),
        },
        strict=False,
    )
    meeting = MeetingExperts.model_validate(
        {
            **_base(),
            "meeting_id": meeting_id,
            "rcp_id": RCP_ID,
            "title": "RCP ORL du CHU Fictif",
            "date": meeting_date,
            "centre": "3C du CHU Fictif",
            "on_call_radiologist": {"name": "Dr Jeanne RADIO-FICTIVE", "email": "jeanne.radio@chu-fictif.mssante.test"},
            "on_call_nuclear_physician": {
                "name": "Dr Marc NUCLEO-FICTIF",
                "email": "marc.nucleo@chu-fictif.mssante.test",
            },
        },
        strict=False,
    )

    def enrolment(enrolment_id: str, patient: dict[str, Any], consent: bool) -> PatientEnrolled:
        return PatientEnrolled.model_validate(
            {
                **_base(),
                "enrolment_id": enrolment_id,
                "meeting_id": meeting_id,
                "rcp_id": RCP_ID,
                "meeting_title": "RCP ORL du CHU Fictif",
                "meeting_date": meeting_date,
                "centre": "3C du CHU Fictif",
                "patient": patient,
                "consent": consent,
                "requested_by": {"name": "Dr Paul DEMANDEUR-FICTIF"},
            },
            strict=False,
        )

    matched = enrolment(
        "enr-demo-beranger",
        {
            "birth_name": "BÉRANGER-FICTIF",
            "used_name": None,
            "first_name": "Hélène",
            "birth_date": "1956-04-12",
            "sex": "F",
        },
        consent=True,
    )
    near_miss = enrolment(
        "enr-demo-testard",
        {
            "birth_name": "TESTARD-FICTIF",
            "used_name": None,
            "first_name": "Jean Pierre",
            "birth_date": "1970-03-03",
            "sex": "M",
        },
        consent=True,
    )
    no_consent = enrolment(
        "enr-demo-essai",
        {"birth_name": "D'ESSAI", "used_name": None, "first_name": "Noël", "birth_date": "1945-12-25", "sex": "M"},
        consent=False,
    )  # fmt: skip
    return [
        (topics.RCP_SETTINGS, rcp.rcp_id, rcp),
        (topics.MEETING_EXPERTS, meeting.meeting_id, meeting),
        *((topics.PATIENT_ENROLLED, e.enrolment_id, e) for e in (matched, near_miss, no_consent)),
    ]


async def publish_scenario(bootstrap_servers: str, prefix: str = "") -> list[tuple[str, str, Event]]:
    events = scenario_events()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for topic, key, event in events:
            await producer.send_and_wait(prefix + topic, event.to_kafka_value(), key=key.encode())
    finally:
        await producer.stop()
    return events
