"""Identity outcomes the fetcher's handlers (`study_fetcher.handlers.Handlers.on_identity_resolved`) must not
take for more than they say, with in-memory fakes: a `matched` outcome that links no PACS patient queries no
PACS and publishes an empty catalogue; a selection held for the identity stays held (nothing lists a catalogue
that could admit it). No server."""

from __future__ import annotations

from proxymage_shared.dicom import DicomUnavailableError

from .test_handlers import DELIVERED, ENROLMENT, PATIENT, STUDY, World, identity, selection


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
