"""The demo scenario, published on Kafka as the DCC would: an RCP with default filters, a meeting with
its on-call experts, and five enrolled patients — one who matches synthetic studies in MIRC, one not
found because of a near miss (a separator in the first name), one without consent, and (CONTRACT v1.1)
one whose enrolment is withdrawn after her studies were selected, one who withdraws consent after hers
were selected: their studies show `removed` with the reason, and none stays in the viewer store."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from proxymage_shared import topics
from proxymage_shared.events import (
    EnrolmentWithdrawn,
    Event,
    ImagingFilters,
    MeetingExperts,
    PatientEnrolled,
    RcpSettings,
    StudiesSelected,
)

from proxymage_dev.synthetic import PATIENTS, synthetic_studies

RCP_ID = "rcp-orl-fictif"
MEETING_ID_PREFIX = "m-demo-orl"


SEED = 42  # the seed `make seed` stores MIRC's synthetic studies with


def _base(after: dt.timedelta = dt.timedelta(0)) -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "occurred_at": dt.datetime.now(dt.UTC) + after}


def _study_uids(patient_key: str, seed: int) -> list[str]:
    patients = tuple(p for p in PATIENTS if p.key == patient_key)
    return [study.study_instance_uid for study in synthetic_studies(seed, patients)]


def scenario_events(today: dt.date | None = None, seed: int = SEED) -> list[tuple[str, str, Event]]:
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

    def enrolment(
        enrolment_id: str, patient: dict[str, Any], consent: bool, after: dt.timedelta = dt.timedelta(0)
    ) -> PatientEnrolled:
        return PatientEnrolled.model_validate(
            {
                **_base(after),
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
    # Later DCC events carry later times (a second apart): their order is the occurred_at order whatever the
    # order in which the services consume them.
    second = dt.timedelta(seconds=1)
    sister = {"birth_name": "SŒUR-EXEMPLE", "used_name": None, "first_name": "Anaïs", "birth_date": "1990-07-14",
              "sex": "F"}  # fmt: skip
    withdrawn = enrolment("enr-demo-soeur", sister, consent=True)
    withdrawn_selection = StudiesSelected.model_validate(
        {**_base(second), "enrolment_id": withdrawn.enrolment_id,
         "study_instance_uids": _study_uids("soeur_ligature", seed), "expertise_requested": True},
        strict=False,
    )  # fmt: skip
    withdrawal = EnrolmentWithdrawn.model_validate(
        {**_base(2 * second), "enrolment_id": withdrawn.enrolment_id, "reason": "dossier retiré de l'ordre du jour"},
        strict=False,
    )
    fiction = {"birth_name": "DE LA FICTION", "used_name": None, "first_name": "Amélie", "birth_date": "1985-02-28",
               "sex": "F"}  # fmt: skip
    consenting = enrolment("enr-demo-delafiction", fiction, consent=True)
    consenting_selection = StudiesSelected.model_validate(
        {**_base(second), "enrolment_id": consenting.enrolment_id,
         "study_instance_uids": _study_uids("de_la_fiction", seed), "expertise_requested": False},
        strict=False,
    )  # fmt: skip
    consent_withdrawn = enrolment("enr-demo-delafiction", fiction, consent=False, after=2 * second)
    return [
        (topics.RCP_SETTINGS, rcp.rcp_id, rcp),
        (topics.MEETING_EXPERTS, meeting.meeting_id, meeting),
        *((topics.PATIENT_ENROLLED, e.enrolment_id, e) for e in (matched, near_miss, no_consent)),
        (topics.PATIENT_ENROLLED, withdrawn.enrolment_id, withdrawn),
        (topics.STUDIES_SELECTED, withdrawn.enrolment_id, withdrawn_selection),
        (topics.ENROLMENT_WITHDRAWN, withdrawn.enrolment_id, withdrawal),
        (topics.PATIENT_ENROLLED, consenting.enrolment_id, consenting),
        (topics.STUDIES_SELECTED, consenting.enrolment_id, consenting_selection),
        (topics.PATIENT_ENROLLED, consent_withdrawn.enrolment_id, consent_withdrawn),
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
