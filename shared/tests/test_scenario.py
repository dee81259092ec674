from __future__ import annotations

import datetime as dt

from proxymage_shared import topics
from proxymage_shared.devtools.scenario import scenario_events
from proxymage_shared.events import PatientEnrolled


def test_demo_scenario_has_an_rcp_a_meeting_and_three_patients() -> None:
    events = scenario_events(dt.date(2026, 11, 28))
    assert [topic for topic, _, _ in events] == [
        topics.RCP_SETTINGS,
        topics.MEETING_EXPERTS,
        topics.PATIENT_ENROLLED,
        topics.PATIENT_ENROLLED,
        topics.PATIENT_ENROLLED,
    ]
    enrolments = [event for _, _, event in events if isinstance(event, PatientEnrolled)]
    assert [e.consent for e in enrolments] == [True, True, False]
    assert {e.meeting_id for e in enrolments} == {"m-demo-orl-2026-12-01"}
    for topic, key, event in events:
        assert getattr(event, topics.TOPIC_KEYS[topic]) == key
