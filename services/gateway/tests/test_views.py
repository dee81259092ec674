"""What the REST answers show for a given read-model document (pure)."""

from __future__ import annotations

import datetime as dt

from gateway import filters as flt
from gateway import views
from gateway.viewer import ViewerLinks, orthanc_study_id

from .test_projection import UIDS, catalogue, enrolled, fold, identity, status

LINKS = ViewerLinks("http://viewer/app/explorer.html#study?uuid={orthanc_study_id}")
TODAY = dt.date(2023, 3, 22)


def test_pending_until_the_current_enrolment_is_resolved() -> None:
    first, corrected = enrolled(1, "A"), enrolled(5, "B")
    document = fold([first, identity(2, first, "matched"), catalogue(3, UIDS)]).enrolment()
    answer = views.enrolment_view(document, None, flt.Overrides(), TODAY, LINKS)
    assert answer.identity.status == "matched"
    assert answer.identity.pacs_patients == 1
    assert len(answer.studies) == 3
    document = fold([first, identity(2, first, "matched"), catalogue(3, UIDS), corrected]).enrolment()
    answer = views.enrolment_view(document, None, flt.Overrides(), TODAY, LINKS)
    assert answer.identity.status == "pending"
    assert answer.studies == []  # the previous identity's studies are not shown any more


def test_states_and_viewer_link() -> None:
    from proxymage_shared.events import StudiesSelected

    first = enrolled(1, "A")
    selection = StudiesSelected.model_validate(
        {
            "event_id": "00000000-0000-0000-0000-0000000000aa",
            "occurred_at": "2023-03-01T09:00:00+00:00",
            "enrolment_id": "enr-1",
            "study_instance_uids": [UIDS[0], UIDS[1]],
            "expertise_requested": True,
        },
        strict=False,
    )
    events = [first, identity(2, first, "matched"), catalogue(3, UIDS), selection, status(4, UIDS[0], 3, "available")]
    document = fold(events).enrolment()
    answer = views.enrolment_view(document, None, flt.Overrides(), TODAY, LINKS)
    by_uid = {study.study_instance_uid: study for study in answer.studies}
    assert by_uid[UIDS[0]].retrieval.status == "available"
    assert by_uid[UIDS[0]].retrieval.viewer_url == (
        f"http://viewer/app/explorer.html#study?uuid={orthanc_study_id('P1', UIDS[0])}"
    )
    assert by_uid[UIDS[1]].retrieval.status == "queued"
    assert by_uid[UIDS[1]].retrieval.viewer_url is None
    assert by_uid[UIDS[2]].retrieval.status == "not_requested"
    assert not by_uid[UIDS[2]].selected
    summary = views.summary_view(document)
    assert summary.studies.selected == 2
    assert summary.studies.by_status == {"available": 1, "queued": 1}
    assert summary.catalogued == 3
    assert summary.identity_status == "matched"
