from __future__ import annotations

import datetime as dt

from proxymage_dev.scenario import scenario_events
from proxymage_shared import topics
from proxymage_shared.events import EnrolmentWithdrawn, PatientEnrolled, StudiesSelected


def test_demo_scenario_has_an_rcp_a_meeting_and_five_patients() -> None:
    events = scenario_events(dt.date(2026, 11, 28))
    assert [topic for topic, _, _ in events] == [
        topics.RCP_SETTINGS,
        topics.MEETING_EXPERTS,
        topics.PATIENT_ENROLLED,
        topics.PATIENT_ENROLLED,
        topics.PATIENT_ENROLLED,
        topics.PATIENT_ENROLLED,
        topics.STUDIES_SELECTED,
        topics.ENROLMENT_WITHDRAWN,
        topics.PATIENT_ENROLLED,
        topics.STUDIES_SELECTED,
        topics.PATIENT_ENROLLED,
    ]
    enrolments = [event for _, _, event in events if isinstance(event, PatientEnrolled)]
    assert [e.consent for e in enrolments] == [True, True, False, True, True, False]
    # The withdrawn and consent-withdrawn patients had studies selected (seeded into MIRC) before.
    withdrawal = next(event for _, _, event in events if isinstance(event, EnrolmentWithdrawn))
    selections = [event for _, _, event in events if isinstance(event, StudiesSelected)]
    assert all(selection.study_instance_uids for selection in selections)
    assert withdrawal.occurred_at > selections[0].occurred_at
    assert enrolments[-1].occurred_at > selections[1].occurred_at > enrolments[-2].occurred_at
    assert {e.meeting_id for e in enrolments} == {"m-demo-orl-2026-12-01"}
    for topic, key, event in events:
        assert getattr(event, topics.TOPIC_KEYS[topic]) == key
