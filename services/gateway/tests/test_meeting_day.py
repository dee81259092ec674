"""The meeting day (issue 15 point 1), pure parts: a patient's imaging state, the meeting sheet and its PDF, the
next days' meetings with studies not available, and what the meeting's summaries now carry."""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import get_args

import pypdf
import pytest
from gateway import filters as flt
from gateway import meeting_day, views
from gateway.api_models import ExpertOut, IdentityView, ImagingState, Meeting, PatientOut, RetrievalView, StudyStates
from gateway.console.labels import IMAGING_STATE_LABELS, script_labels
from gateway.meeting_day import MeetingSheet, SheetPatient, SheetStudy
from gateway.sheet_pdf import identity_line, patient_name, printable, render_sheet_pdf, study_state
from gateway.viewer import ViewerLinks
from proxymage_shared.events import Event, PatientEnrolled, StudiesSelected

from .test_projection import ENROLMENT, UIDS, catalogue, enrolled, fold, identity, status

TODAY = dt.date(2026, 12, 3)
PRINTED_AT = dt.datetime(2026, 12, 3, 14, 5, tzinfo=dt.UTC)


def _states(selected: int, **by_status: int) -> StudyStates:
    return StudyStates(selected=selected, by_status=by_status)


@pytest.mark.parametrize(
    ("identity_status", "states", "expected"),
    [
        ("withdrawn", _states(2, removed=2), "withdrawn"),
        ("no_consent", _states(0), "no_consent"),
        ("unmatched", _states(1, failed=1), "not_identified"),
        ("error", _states(0), "not_identified"),
        ("pending", _states(0), "none_selected"),
        ("matched", _states(0), "none_selected"),
        ("pending", _states(2, queued=2), "waiting"),
        ("matched", _states(3, available=2, retrieving=1), "waiting"),
        ("matched", _states(3, available=2, failed=1), "failed"),
        ("matched", _states(2, available=2), "available"),
        ("matched", _states(1, available=1, removed=1), "available"),  # a removed study is no longer selected
    ],
)
def test_imaging_state_sums_up_identity_and_selected_studies(
    identity_status: IdentityView, states: StudyStates, expected: ImagingState
) -> None:
    assert meeting_day.imaging_state(identity_status, states) == expected


def test_every_imaging_state_has_a_rank_and_a_french_label() -> None:
    assert set(meeting_day.IMAGING_STATE_ORDER) == set(get_args(ImagingState))
    assert len(meeting_day.IMAGING_STATE_ORDER) == len(set(meeting_day.IMAGING_STATE_ORDER))
    assert set(IMAGING_STATE_LABELS) == set(get_args(ImagingState))
    labels = script_labels()
    assert labels["imaging_states"] == IMAGING_STATE_LABELS
    assert labels["imaging_state_order"] == list(meeting_day.IMAGING_STATE_ORDER)  # the script's sort "by status"
    assert labels["sexes"] == {"F": "Féminin", "M": "Masculin", "U": "Inconnu"}
    assert set(get_args(RetrievalView)) > meeting_day.NOT_AVAILABLE


def half_available(
    first_name: str, selection_event_id: str, *, expertise_requested: bool
) -> tuple[PatientEnrolled, list[Event]]:
    """An enrolment matched and catalogued, two of its studies selected and the first of them available."""
    first = enrolled(1, first_name)
    selection = StudiesSelected.model_validate(
        {
            "event_id": selection_event_id,
            "occurred_at": "2023-03-01T09:00:00+00:00",
            "enrolment_id": ENROLMENT,
            "study_instance_uids": [UIDS[0], UIDS[1]],
            "expertise_requested": expertise_requested,
        },
        strict=False,
    )
    available = status(4, UIDS[0], 3, "available")
    return first, [first, identity(2, first, "matched"), catalogue(3, UIDS), selection, available]


def test_the_meetings_summary_carries_the_requesting_doctor_and_the_imaging_state() -> None:
    first, events = half_available("CATHERINE", "00000000-0000-0000-0000-0000000000aa", expertise_requested=False)
    summary = views.summary_view(fold(events).enrolment())
    assert summary.requested_by == first.requested_by.name
    assert summary.imaging_state == "waiting"
    summary = views.summary_view(fold([*events, status(5, UIDS[1], 3, "failed")]).enrolment())
    assert summary.imaging_state == "failed"


def test_a_sheet_patient_lists_its_selected_studies_with_their_state() -> None:
    first, events = half_available("CATHERINE", "00000000-0000-0000-0000-0000000000ab", expertise_requested=True)
    record = fold(events).enrolment()
    answer = views.enrolment_view(record, None, flt.Overrides(all=True), TODAY, ViewerLinks(""))
    patient = meeting_day.sheet_patient(answer, views.study_states(record))
    assert patient.enrolment_id == ENROLMENT
    assert patient.requested_by == first.requested_by.name
    assert patient.patient is not None
    assert patient.patient.first_name == "CATHERINE"
    assert patient.identity_status == "matched"
    assert patient.imaging_state == "waiting"
    assert {study.study_instance_uid: study.status for study in patient.studies} == {
        UIDS[0]: "available",
        UIDS[1]: "queued",
    }  # the third study, catalogued but not selected, is not on the sheet


def _patient(
    enrolment_id: str,
    birth_name: str,
    first_name: str,
    *studies: SheetStudy,
    identity_status: IdentityView = "matched",
) -> SheetPatient:
    return SheetPatient(
        enrolment_id=enrolment_id,
        patient=PatientOut(
            birth_name=birth_name, used_name=None, first_name=first_name, birth_date=dt.date(1956, 4, 12), sex="F"
        ),
        requested_by="Dr Paul DEMANDEUR",
        identity_status=identity_status,
        imaging_state="waiting",
        studies=list(studies),
    )


def _study(uid: str, status: RetrievalView, reason: str | None = None) -> SheetStudy:
    return SheetStudy(
        study_instance_uid=uid,
        description=f"TDM FICTIVE {uid}",
        date=dt.date(2026, 11, 2),
        modalities=["CT"],
        pacs="CHU FICTIF",
        status=status,
        reason_text=reason,
    )


def _meeting(meeting_id: str, date: dt.date | None, title: str = "RCP ORL FICTIVE") -> Meeting:
    return Meeting(meeting_id=meeting_id, rcp_id="rcp-essai", title=title, date=date, centre="3C FICTIF")


def test_the_sheet_lists_patients_alphabetically_then_those_not_yet_enrolled() -> None:
    unknown = SheetPatient(
        enrolment_id="enr-0",
        patient=None,
        requested_by=None,
        identity_status="pending",
        imaging_state="none_selected",
        studies=[],
    )
    patients = [_patient("enr-1", "ZOLA-FICTIF", "Anne"), unknown, _patient("enr-2", "ÉCHO-FICTIF", "Léa")]
    sheet = meeting_day.meeting_sheet(_meeting("m-1", TODAY), patients)
    # Accents do not count ("ÉCHO" before "ZOLA"), as in a paper list.
    assert [patient.enrolment_id for patient in sheet.patients] == ["enr-2", "enr-1", "enr-0"]
    assert sheet.meeting_id == "m-1"
    assert sheet.title == "RCP ORL FICTIVE"


def test_imaging_gaps_keep_the_window_the_studies_not_available_and_live_patients() -> None:
    waiting = _study("1.1", "not_yet_available", "Examen pas encore présent dans MIRC.")
    failed = _study("1.2", "failed", "Examen n'appartenant pas au patient identifié.")
    available = _study("1.3", "available")
    sheets = [
        meeting_day.meeting_sheet(
            _meeting("m-tomorrow", TODAY + dt.timedelta(days=1)),
            [
                _patient("enr-a", "ESSAI-FICTIF", "Anne", waiting, available),
                _patient("enr-b", "EXEMPLE", "Bob", available),
                _patient("enr-c", "ANNULE-FICTIF", "Carl", waiting, identity_status="withdrawn"),
            ],
        ),
        meeting_day.meeting_sheet(_meeting("m-today", TODAY), [_patient("enr-d", "FICTIF", "Dana", failed)]),
        meeting_day.meeting_sheet(_meeting("m-all-there", TODAY), [_patient("enr-e", "FICTIF", "Eve", available)]),
        meeting_day.meeting_sheet(
            _meeting("m-later", TODAY + dt.timedelta(days=3)), [_patient("enr-f", "F", "F", waiting)]
        ),
        meeting_day.meeting_sheet(
            _meeting("m-past", TODAY - dt.timedelta(days=1)), [_patient("enr-g", "G", "G", waiting)]
        ),
        meeting_day.meeting_sheet(_meeting("m-undated", None), [_patient("enr-h", "H", "H", waiting)]),
    ]
    gaps = meeting_day.imaging_gaps(sheets, TODAY, TODAY + dt.timedelta(days=2))
    assert [gap.meeting_id for gap in gaps] == ["m-today", "m-tomorrow"]  # soonest first
    assert [patient.enrolment_id for patient in gaps[1].patients] == ["enr-a"]
    assert gaps[1].patients[0].studies == [waiting]
    assert gaps[0].patients[0].studies == [failed]
    assert gaps[0].patients[0].studies[0].reason_text == "Examen n'appartenant pas au patient identifié."


def test_dates_read_jj_mm_aaaa() -> None:
    assert meeting_day.fr_date(dt.date(2026, 4, 5)) == "05/04/2026"
    assert meeting_day.fr_date(None) == ""


# --- The PDF -------------------------------------------------------------------------------------------------


def _pdf_text(document: bytes) -> list[str]:
    reader = pypdf.PdfReader(io.BytesIO(document))
    return [page.extract_text() for page in reader.pages]


def test_printable_keeps_french_and_replaces_the_rest() -> None:
    french = "Élise Cœur-Æther « l’œil » — déjà vu, où ça ? Ÿ ï ô ù"
    assert printable(french) == french
    assert printable("RCP 中 ✓") == "RCP ? ?"


def test_the_sheet_words_a_patient_and_a_study_in_french() -> None:
    patient = _patient("enr-1", "ESSAI-FICTIF", "Hélène")
    assert patient_name(patient) == "ESSAI-FICTIF Hélène"
    married = patient.model_copy(update={"patient": patient.patient.model_copy(update={"used_name": "Épouse"})})  # type: ignore[union-attr]
    assert patient_name(married) == "ÉPOUSE (ESSAI-FICTIF) Hélène"
    assert identity_line(patient) == "Née le 12/04/1956 — Sexe : Féminin — Médecin demandeur : Dr Paul DEMANDEUR"
    assert study_state(_study("1", "available")) == "Visuel disponible"
    assert study_state(_study("1", "failed", "examen introuvable")) == (
        "La récupération de cet examen a échoué. Examen introuvable"
    )
    assert study_state(_study("1", "retrieving")) == (
        "La visualisation de cet examen n'est pas encore disponible. Récupération en cours."
    )


def test_the_pdf_lists_every_patient_and_every_study_with_accents() -> None:
    patients = [
        _patient(
            f"enr-{index:02d}",
            f"ESSAI-FICTIF-{index:02d}",
            "Hélène-Françoise",
            *[
                _study(f"{index}.{number}", "not_yet_available", "Examen pas encore présent dans MIRC.")
                for number in range(4)
            ],
        )
        for index in range(12)
    ]
    meeting = _meeting("m-essai", TODAY, "RCP ORL — Cœur & poumons FICTIVE").model_copy(
        update={"on_call_radiologist": ExpertOut(name="Dr Jeanne ESSAI", email="jeanne.essai@chu-fictif.mssante.fr")}
    )
    sheet = MeetingSheet(**meeting.model_dump(), patients=patients)
    document = render_sheet_pdf(sheet, PRINTED_AT)
    assert document.startswith(b"%PDF-")
    pages = _pdf_text(document)
    assert len(pages) > 1  # 12 patients with 4 studies each do not fit on one A4 page
    text = "\n".join(pages)
    assert "Fiche de la réunion" in pages[0]
    assert "RCP ORL — Cœur & poumons FICTIVE du 03/12/2026" in pages[0]
    assert "Radiologue d'astreinte : Dr Jeanne ESSAI" in pages[0]
    assert "Médecin nucléaire d'astreinte : aucun" in pages[0]
    assert "12 patients inscrits" in pages[0]
    for patient in patients:
        assert f"{patient.patient.birth_name} Hélène-Françoise" in text  # type: ignore[union-attr]
    assert text.count("Née le 12/04/1956 — Sexe : Féminin — Médecin demandeur : Dr Paul DEMANDEUR") == 12
    flowing = " ".join(text.split())  # a table cell wraps its text over lines
    assert flowing.count("Examen pas encore présent dans MIRC.") == 48
    assert flowing.count("TDM FICTIVE") == 48
    for number, page in enumerate(pages, start=1):
        assert re.search(rf"éditée le 03/12/2026 à 14:05 — page {number}/{len(pages)}", page), page[-200:]


def test_a_patient_block_never_starts_at_the_foot_of_a_page() -> None:
    """Each page's last line is a study row or the foot, never a patient's name alone."""
    patients = [
        _patient(
            f"enr-{index:02d}", f"FICTIF-{index:02d}", "Anne", *[_study(f"{index}.{n}", "queued") for n in range(3)]
        )
        for index in range(15)
    ]
    sheet = MeetingSheet(**_meeting("m-essai", TODAY).model_dump(), patients=patients)
    pages = _pdf_text(render_sheet_pdf(sheet, PRINTED_AT))
    for page in pages:
        lines = [line for line in page.splitlines() if line.strip()]
        body = [line for line in lines if "éditée le" not in line]
        assert not re.fullmatch(r"FICTIF-\d\d Anne", body[-1]), body[-3:]


def test_an_empty_meeting_still_prints() -> None:
    sheet = MeetingSheet(**_meeting("m-vide", None, "RCP FICTIVE").model_dump(), patients=[])
    (page,) = _pdf_text(render_sheet_pdf(sheet, PRINTED_AT))
    assert "Aucun patient inscrit à cette réunion pour le moment." in page
    assert "0 patient inscrit" in page


# --- The console's pages (plain HTTP, no server) --------------------------------------------------------------

MEETING_DAY_PAGES = {
    "/console/": ["Réunions des prochaines 48 heures : examens pas encore disponibles"],
    "/console/meetings/": [
        "Trier par",
        "Date",
        "Intitulé",
        "Centre",
        "Tous les centres",
        "Réunions à venir",
        "Réunions passées",
    ],
    "/console/meetings/m-essai": [
        "Imprimer la fiche",
        "Trier par",
        "Ordre d'inscription",
        "Nom du patient",
        "État de l'imagerie",
        "Médecin demandeur",
    ],
    "/console/meetings/m-essai/patients/enr-essai": ["← Patient précédent", "Patient suivant →"],
    "/console/enrolments/enr-essai": ["← Patient précédent", "Patient suivant →"],
    "/console/meetings/m-essai/fiche": [
        "Fiche de la réunion",
        "Imprimer",
        "Exporter en PDF",
        "Retour au déroulement",
        'href="/api/v1/meetings/m-essai/sheet.pdf"',
    ],
}


@pytest.mark.parametrize("url", list(MEETING_DAY_PAGES))
async def test_the_meeting_day_pages_render_in_french(url: str) -> None:
    import html

    import httpx
    from fastapi import FastAPI
    from gateway.console import mount

    app = FastAPI()
    mount(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test") as console:
        answer = await console.get(url)
    assert answer.status_code == 200
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    text = html.unescape(answer.text)
    for label in MEETING_DAY_PAGES[url]:
        assert label in text, f"{label!r} missing from {url}"
