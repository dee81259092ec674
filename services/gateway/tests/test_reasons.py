"""Reasons as the REST answers tell them: "<code>: <texte>" with the parts apart, old English texts in French."""

from __future__ import annotations

import pytest
from gateway import filters as flt
from gateway import reasons, views
from gateway.read_model import ReasonedPart
from gateway.viewer import ViewerLinks
from proxymage_shared.events import ExpertiseNotification, ImagingCatalogued
from proxymage_shared.reasons import TEXTS, Reason

from .test_lifecycle import matched_with_two_available
from .test_projection import ENROLMENT, UIDS, _base, enrolled, fold, identity, status


def tell(fields: dict[str, str | None]) -> reasons.ToldReason:
    """The reason of a stored part holding `fields`."""
    stamp = {"order": "1", "event_id": "e-1", "occurred_at": "2023-03-01T08:00:00.000000Z"}
    return reasons.told(ReasonedPart.model_validate({**stamp, "reason": None, "reason_code": None, **fields}))


def test_a_coded_reason_is_code_and_text() -> None:
    told = tell({"reason_code": "not_in_mirc", "reason": TEXTS["not_in_mirc"]})
    assert told.rest == Reason.of("not_in_mirc").rest() == f"not_in_mirc: {TEXTS['not_in_mirc']}"
    assert told.code == "not_in_mirc"
    assert told.text == TEXTS["not_in_mirc"]
    # A code without a text: the shared vocabulary's text.
    assert tell({"reason_code": "pacs_unreachable"}).text == TEXTS["pacs_unreachable"]
    # A text with a detail is kept as published.
    detailed = Reason.of("move_incomplete", "3 images sur 40")
    assert tell({"reason_code": detailed.code, "reason": detailed.text}).rest == detailed.rest()


def test_no_reason() -> None:
    assert reasons.told(None) == reasons.NO_REASON
    assert tell({"reason": None, "reason_code": None}) == reasons.NO_REASON


@pytest.mark.parametrize(
    ("published", "code"),
    [
        ("not yet in MIRC; next automatic try at 2023-03-01 08:00:00 UTC", "not_in_mirc"),
        ("PACS unreachable; next automatic try at 2023-03-01 08:00:00 UTC", "pacs_unreachable"),
        ("viewer store unreachable", "viewer_unreachable"),
        ("move incomplete: 2 of 40 instances failed", "move_incomplete"),
        ("MIRC could not perform the move: timeout", "move_failed"),
        ("MIRC refused: destination unknown", "move_refused"),
        ("the PACS could not list the studies: timeout", "catalogue_error"),
        ("MIRC could not be queried (timeout); next automatic try at 2023-03-01 08:00:00 UTC", "identity_error"),
        ("no PACS patient matches every trait (near misses reported)", "patient_not_found"),
        ("the patient's consent is not recorded: no PACS was queried", "no_consent"),
        ("recipient domain exemple.fr is not in the allowed secure-mail domains: not sent", "recipient_not_allowed"),
        ("the secure-mail relay answered 451 (RCPT); attempt 2 failed, next try at 08:00 UTC", "send_retrying"),
    ],
)
def test_old_english_reasons_are_told_in_french(published: str, code: str) -> None:
    assert reasons.legacy_code(published) == code
    told = tell({"reason": published})
    assert told.rest == published  # the REST `reason` stays what the event said
    assert told.code is None  # the event carried no code
    assert told.text == TEXTS[code]


def test_an_old_deadline_says_its_cause_in_french() -> None:
    told = tell({"reason": "deadline passed: not yet in MIRC"})
    assert told.text == f"{TEXTS['deadline_passed']} ({TEXTS['not_in_mirc']})"
    assert tell({"reason": "deadline passed"}).text == TEXTS["deadline_passed"]


def test_a_text_that_is_not_ours_is_shown_as_is() -> None:
    told = tell({"reason": "L'examen n'est pas encore arrivé dans MIRC."})
    assert told.rest == told.text == "L'examen n'est pas encore arrivé dans MIRC."
    assert told.code is None


def test_every_rest_reason_of_an_enrolment_is_formatted() -> None:
    first, events = matched_with_two_available()
    waiting = Reason.of("waiting_available_study")
    notification = ExpertiseNotification.model_validate(
        {
            **_base(40),
            "enrolment_id": ENROLMENT,
            "meeting_id": "m-1",
            "role": "radiologist",
            "status": "waiting",
            "reason": waiting.text,
            "reason_code": waiting.code,
            "version": 1,
        },
        strict=False,
    )
    later = status(41, UIDS[1], 3, "not_yet_available").model_copy(
        update={"reason_code": "not_in_mirc", "reason": TEXTS["not_in_mirc"]}
    )
    document = fold([*events, notification, later]).enrolment()
    answer = views.enrolment_view(document, None, flt.Overrides(all=True), views.dt.date(2023, 3, 22), LINKS)
    (note,) = answer.expertise.notifications
    assert (note.status, note.reason, note.reason_code, note.reason_text) == (
        "waiting",
        waiting.rest(),
        "waiting_available_study",
        waiting.text,
    )
    study = next(item for item in answer.studies if item.study_instance_uid == UIDS[1])
    assert study.retrieval.reason == f"not_in_mirc: {TEXTS['not_in_mirc']}"
    assert study.retrieval.reason_text == TEXTS["not_in_mirc"]

    error = ImagingCatalogued.model_validate(
        {**_base(50), "enrolment_id": ENROLMENT, "status": "error", "reason_code": "catalogue_error"}, strict=False
    )
    catalogue = views.catalogue_view(fold([*events, error]).enrolment())
    assert catalogue.reason == f"catalogue_error: {TEXTS['catalogue_error']}"
    assert catalogue.reason_code == "catalogue_error"

    refused = enrolled(60, "A")
    no_consent = identity(61, refused, "no_consent", reason_code="no_consent", reason=TEXTS["no_consent"])
    told = views.identity_view(fold([*events, refused, no_consent]).enrolment())
    assert told.status == "no_consent"
    assert told.reason == f"no_consent: {TEXTS['no_consent']}"
    assert told.reason_text == TEXTS["no_consent"]
    assert first.enrolment_id == ENROLMENT


LINKS = ViewerLinks("http://viewer/{study_instance_uid}")
