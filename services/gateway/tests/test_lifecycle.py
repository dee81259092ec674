"""The enrolment's lifecycle as the REST answers show it (CONTRACT v1.1), pure: withdrawal newer or older
than the enrolled event, re-opening, outcomes arriving before or after the DCC events they answer."""

from __future__ import annotations

import datetime as dt

from gateway import filters as flt
from gateway import views
from gateway.api_models import Enrolment
from gateway.viewer import ViewerLinks
from hypothesis import given, settings
from hypothesis import strategies as st
from proxymage_shared.events import EnrolmentWithdrawn, Event, IdentityResolved, PatientEnrolled, StudiesSelected
from proxymage_shared.reasons import TEXTS

from .test_projection import (
    ENROLMENT,
    UIDS,
    _base,
    catalogue,
    enrolled,
    fold,
    identity,
    status,
    withdrawn,
)

LINKS = ViewerLinks("http://viewer/{study_instance_uid}")
TODAY = dt.date(2023, 3, 22)
WITHDRAWN_REST = f"enrolment_withdrawn: {TEXTS['enrolment_withdrawn']}"


def selected(offset: int, uids: tuple[str, ...]) -> StudiesSelected:
    return StudiesSelected.model_validate(
        {**_base(offset), "enrolment_id": ENROLMENT, "study_instance_uids": list(uids), "expertise_requested": True},
        strict=False,
    )


def view(events: list[Event]) -> Enrolment:
    document = fold(events).enrolment()
    return views.enrolment_view(document, None, flt.Overrides(all=True), TODAY, LINKS)


def matched_with_two_available(start: int = 1) -> tuple[PatientEnrolled, list[Event]]:
    enrolment = enrolled(start, "A")
    return enrolment, [
        enrolment,
        identity(start + 1, enrolment, "matched"),
        catalogue(start + 2, UIDS),
        selected(start + 3, UIDS[:2]),
        status(start + 4, UIDS[0], 3, "available"),
        status(start + 5, UIDS[1], 2, "retrieving"),
    ]


def test_a_withdrawal_newer_than_the_enrolment_withdraws_at_once() -> None:
    _, events = matched_with_two_available()
    assert view(events).identity.status == "matched"
    answer = view([*events, withdrawn(20, "présenté dans une autre RCP")])
    # Without waiting for the identity-matcher's outcome.
    assert answer.identity.status == "withdrawn"
    assert answer.identity.pacs_patients == 0
    assert answer.identity.reason == WITHDRAWN_REST
    assert answer.identity.reason_code == "enrolment_withdrawn"
    assert answer.identity.reason_text == TEXTS["enrolment_withdrawn"]
    assert answer.withdrawal is not None
    assert answer.withdrawal.reason == "présenté dans une autre RCP"
    assert answer.withdrawal.at == dt.datetime(2023, 3, 1, 8, 0, 20, tzinfo=dt.UTC)
    # The catalogue is no longer listed; the selected studies show gone, without a viewer link.
    assert [study.study_instance_uid for study in answer.studies] == list(UIDS[:2])
    for study in answer.studies:
        assert study.retrieval.status == "removed"
        assert study.retrieval.viewer_url is None
        assert study.retrieval.reason == WITHDRAWN_REST
    document = fold([*events, withdrawn(20)]).enrolment()
    summary = views.summary_view(document)
    assert summary.identity_status == "withdrawn"
    assert summary.studies.by_status == {"removed": 2}


def test_a_withdrawal_older_than_the_enrolment_changes_nothing() -> None:
    _, events = matched_with_two_available(start=10)
    answer = view([withdrawn(5), *events])
    assert answer.identity.status == "matched"
    assert answer.withdrawal is None
    assert {study.retrieval.status for study in answer.studies if study.selected} == {"available", "retrieving"}


def test_a_newer_enrolled_event_reopens_pending_until_its_outcome() -> None:
    first, events = matched_with_two_available()
    withdrawal = withdrawn(20)
    closed = [*events, withdrawal, identity(21, withdrawal, "withdrawn", reason_code="enrolment_withdrawn")]
    assert view(closed).identity.status == "withdrawn"
    again = enrolled(30, "A")
    reopened = view([*closed, again])
    assert reopened.identity.status == "pending"
    assert reopened.withdrawal is None
    assert view([*closed, again, identity(31, again, "matched")]).identity.status == "matched"
    # The outcome of the old enrolled event does not count for the new one.
    assert view([*closed, again, identity(32, first, "matched")]).identity.status == "pending"


def test_the_matchers_withdrawn_outcome_is_current_with_its_reason() -> None:
    _, events = matched_with_two_available()
    withdrawal = withdrawn(20)
    outcome = identity(21, withdrawal, "withdrawn", reason_code="enrolment_withdrawn", reason="inscription annulée")
    answer = view([*events, withdrawal, outcome])
    assert answer.identity.status == "withdrawn"
    assert answer.identity.reason == "enrolment_withdrawn: inscription annulée"
    # Before the gateway consumed the withdrawal itself: the outcome says it is newer than the enrolled event.
    answer = view([*events, outcome])
    assert answer.identity.status == "withdrawn"
    assert answer.identity.reason_text == "inscription annulée"
    assert [study.retrieval.status for study in answer.studies] == ["removed", "removed"]
    assert all(study.retrieval.viewer_url is None for study in answer.studies)
    # An outcome `withdrawn` answering a withdrawal older than the enrolled event is not current.
    older = withdrawn(0)
    assert view([*events, identity(22, older, "withdrawn")]).identity.status == "pending"


def test_the_fetchers_confirmations_are_shown_as_they_are() -> None:
    _, events = matched_with_two_available()
    confirmed = status(30, UIDS[0], 4, "removed").model_copy(
        update={"reason_code": "enrolment_withdrawn", "reason": TEXTS["enrolment_withdrawn"]}
    )
    answer = view([*events, withdrawn(20), confirmed])
    first_study = next(study for study in answer.studies if study.study_instance_uid == UIDS[0])
    assert first_study.retrieval.status == "removed"
    assert first_study.retrieval.attempts == 4
    assert first_study.retrieval.reason == WITHDRAWN_REST


def test_a_selection_after_the_withdrawal_moves_nothing() -> None:
    _, events = matched_with_two_available()
    answer = view([*events, withdrawn(20), selected(25, (UIDS[2],))])
    (only,) = [study for study in answer.studies if study.selected]
    assert only.study_instance_uid == UIDS[2]
    assert only.retrieval.status == "failed"
    assert only.retrieval.reason_code == "enrolment_withdrawn"


def test_withdrawal_before_anything_else() -> None:
    answer = view([withdrawn(5), selected(6, UIDS[:1])])
    assert answer.identity.status == "withdrawn"
    assert answer.meeting_id is None
    assert [study.retrieval.status for study in answer.studies] == ["failed"]


# --- any order: the outcome is that of the `occurred_at` order -------------------------------------------------

E1 = enrolled(1, "A")
W = withdrawn(2)
E2 = enrolled(3, "B")
LIFECYCLE: list[Event] = [
    E1,
    W,
    E2,
    identity(10, E1, "matched"),
    identity(11, W, "withdrawn", reason_code="enrolment_withdrawn"),
    identity(12, E2, "unmatched"),
]
DCC_EVENTS = (E1, W, E2)


def expected_status(events: list[Event]) -> str:
    """The oracle, from the rules: the newest DCC event decides; an enrolled event shows the outcome that
    answers it (the newest outcome, when it does), or `withdrawn` when that outcome answers a newer
    withdrawal the gateway has not seen; otherwise `pending`."""
    newest = max((event for event in DCC_EVENTS if event in events), key=lambda event: event.occurred_at)
    if isinstance(newest, EnrolmentWithdrawn):
        return "withdrawn"
    outcomes = [event for event in events if isinstance(event, IdentityResolved)]
    if not outcomes:
        return "pending"
    outcome = max(outcomes, key=lambda event: event.occurred_at)
    if outcome.source_event_id == newest.event_id:
        return outcome.status
    answers_newer_withdrawal = (
        outcome.source_occurred_at is not None and outcome.source_occurred_at > newest.occurred_at
    )
    return "withdrawn" if outcome.status == "withdrawn" and answers_newer_withdrawal else "pending"


@settings(max_examples=300)
@given(st.lists(st.sampled_from(LIFECYCLE), min_size=1, max_size=10))
def test_any_order_any_subset_gives_the_status_of_the_newest_dcc_event(delivered: list[Event]) -> None:
    if not any(event in delivered for event in DCC_EVENTS):
        return  # outcomes alone (no DCC event consumed yet): shown as they come, see test_views
    document = fold(delivered).enrolment()
    assert views.identity_view(document).status == expected_status(delivered)
