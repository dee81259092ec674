"""Identity outcomes and the catalogue they list (`study_fetcher.handlers.Handlers.on_identity_resolved`), with
in-memory fakes: a `matched` outcome that links no PACS patient queries no PACS and publishes an empty catalogue
(a selection held for the identity stays held: nothing lists a catalogue that could admit it); an `error` for a
new identity (a correction not resolved yet: `pending`) leaves admitted jobs as they are; a PACS answer that is
not a valid catalogue row is a catalogue error; the PACS column. No server."""

from __future__ import annotations

import dataclasses
import datetime as dt

from proxymage_shared.dicom import DicomUnavailableError
from proxymage_shared.events import PacsPatientRef
from study_fetcher.catalogue import pacs_name

from .test_handlers import DELIVERED, ENROLMENT, NOW, PATIENT, STUDY, World, identity, matched, record, selection


async def test_a_match_without_pacs_patients_queries_no_pacs_and_publishes_an_empty_catalogue() -> None:
    world = World()
    world.pacs.studies[PATIENT.patient_id] = DicomUnavailableError("a PACS query was not expected")
    await world.handlers.on_selected(selection(STUDY), DELIVERED)  # held: identity unknown
    event = identity("matched", patients=())
    await world.handlers.on_identity_resolved(event, DELIVERED)
    assert [(c.status, c.studies) for c in world.catalogues] == [("listed", ())]
    document = world.enrolments.docs[ENROLMENT]
    assert (document["identity_status"], document["identity_done"]) == ("matched", True)
    assert world.state() == ("queued", True, "waiting_catalogue")  # still held: no catalogue admits it


async def test_an_unresolved_correction_leaves_admitted_jobs_as_they_are_until_its_outcome() -> None:
    world = World()
    await matched(world, STUDY)
    await world.handlers.on_selected(selection(STUDY), DELIVERED)
    assert world.state() == ("queued", False, None)
    published = len(world.statuses)
    await world.handlers.on_identity_resolved(identity("error", seconds=10), DELIVERED)  # of a corrected enrolment
    assert world.enrolments.docs[ENROLMENT]["identity_status"] == "pending"
    assert world.state() == ("queued", False, None)  # not removed: the correction's outcome decides
    assert len(world.statuses) == published
    assert world.purge.deleted == []


async def test_a_pacs_answer_that_is_not_a_valid_row_is_a_catalogue_error_retried_later() -> None:
    world = World()
    world.pacs.studies[PATIENT.patient_id] = [record(STUDY), record("not-a-uid")]
    await world.handlers.on_identity_resolved(identity(), DELIVERED)
    (outcome,) = world.catalogues
    assert (outcome.status, outcome.reason_code, outcome.studies) == ("error", "pacs_error", ())
    assert "study_instance_uid" in (outcome.reason or "")
    document = world.enrolments.docs[ENROLMENT]
    assert (document["catalogue_attempts"], document["catalogue_due_at"]) == (1, NOW + dt.timedelta(seconds=15))


def test_the_pacs_column_is_the_institution_else_the_issuers_display_name_else_the_issuer() -> None:
    names = {"HOSP": "CHU Fictif"}
    with_institution = dataclasses.replace(record(STUDY), institution_name="Clinique Fictive")
    assert pacs_name(with_institution, PATIENT, names) == "Clinique Fictive"
    assert pacs_name(record(STUDY), PATIENT, names) == "CHU Fictif"
    assert pacs_name(record(STUDY), PacsPatientRef(patient_id="P1", issuer="AUTRE"), names) == "AUTRE"
    assert pacs_name(record(STUDY), PacsPatientRef(patient_id="P1", issuer=None), names) is None
