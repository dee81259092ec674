"""The meeting day (issue 15 point 1), pure: each patient's imaging state at a glance, the printable meeting
sheet, and the meetings of the next days whose selected studies are not all available.

No I/O: `gateway.api_meeting_day` reads the read model and hands the REST views (`gateway.views`) to these
functions; the console and the PDF (`gateway.sheet_pdf`) render what they return.

A patient's imaging state sums up its identity outcome and its selected studies, for the meeting's list and
its sort "by status" (most in need of the 3C's attention first):

| state            | when                                                                      |
|------------------|---------------------------------------------------------------------------|
| `failed`         | a selected study failed (the reason is on the study)                      |
| `not_identified` | identity `unmatched` or `error`: nothing can be retrieved until corrected |
| `waiting`        | studies selected, not all available yet (identity `pending` included)     |
| `none_selected`  | identified (or pending) but no study selected                             |
| `no_consent`     | no consent: no PACS is queried                                            |
| `available`      | every selected study is available                                         |
| `withdrawn`      | the DCC withdrew the enrolment                                            |
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable
from typing import Final

from pydantic import BaseModel, Field

from gateway.api_models import (
    Enrolment,
    IdentityView,
    ImagingState,
    Meeting,
    PatientOut,
    RetrievalView,
    StudyStates,
)

IMAGING_STATE_ORDER: Final[tuple[ImagingState, ...]] = (
    "failed",
    "not_identified",
    "waiting",
    "none_selected",
    "no_consent",
    "available",
    "withdrawn",
)
# What a selected study still lacks on the meeting day; `removed` is gone on purpose, `available` is there.
NOT_AVAILABLE: Final[frozenset[RetrievalView]] = frozenset({"queued", "retrieving", "not_yet_available", "failed"})


def imaging_state(identity: IdentityView, studies: StudyStates) -> ImagingState:
    """The patient's state on the meeting's list (table in the module's docstring)."""
    if identity == "withdrawn":
        return "withdrawn"
    if identity == "no_consent":
        return "no_consent"
    if identity in ("unmatched", "error"):
        return "not_identified"
    if studies.selected == 0:
        return "none_selected"
    if studies.by_status.get("failed", 0) > 0:
        return "failed"
    if studies.by_status.get("available", 0) >= studies.selected:
        return "available"
    return "waiting"


# --- The meeting sheet -------------------------------------------------------------------------------------


class SheetStudy(BaseModel):
    """One selected study of a patient, with its state."""

    study_instance_uid: str
    description: str | None
    date: dt.date | None
    modalities: list[str]
    pacs: str | None
    status: RetrievalView
    reason_text: str | None = Field(description="Why it is not (yet) available, in French.")


class SheetPatient(BaseModel):
    enrolment_id: str
    patient: PatientOut | None
    requested_by: str | None
    identity_status: IdentityView
    imaging_state: ImagingState
    studies: list[SheetStudy] = Field(description="The selected studies (removed ones left out).")


class MeetingSheet(Meeting):
    """Extension: a meeting and every patient with each selected study's state (the printable sheet)."""

    patients: list[SheetPatient]


def sheet_patient(enrolment: Enrolment, states: StudyStates) -> SheetPatient:
    """A patient of the sheet from its REST view (`views.enrolment_view`) and its study counts."""
    studies = [
        SheetStudy(
            study_instance_uid=study.study_instance_uid,
            description=study.description,
            date=study.date,
            modalities=study.modalities,
            pacs=study.pacs,
            status=study.retrieval.status,
            reason_text=study.retrieval.reason_text or study.retrieval.reason,
        )
        for study in enrolment.studies
        if study.selected and study.retrieval.status != "removed"
    ]
    studies.sort(key=lambda study: (study.date or dt.date.min, study.description or ""), reverse=True)
    return SheetPatient(
        enrolment_id=enrolment.enrolment_id,
        patient=enrolment.patient,
        requested_by=enrolment.requested_by,
        identity_status=enrolment.identity.status,
        imaging_state=imaging_state(enrolment.identity.status, states),
        studies=studies,
    )


def _folded(name: str) -> str:
    """Upper case without accents: the order of a paper list (É with E, not after Z)."""
    decomposed = unicodedata.normalize("NFKD", name.upper())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _by_name(patient: SheetPatient) -> tuple[int, str, str, str]:
    person = patient.patient
    if person is None:
        return (1, "", "", patient.enrolment_id)  # not enrolled yet by the DCC: last
    return (0, _folded(person.birth_name), _folded(person.first_name), patient.enrolment_id)


def meeting_sheet(meeting: Meeting, patients: Iterable[SheetPatient]) -> MeetingSheet:
    """The printable sheet: the meeting and its patients in alphabetical order (birth name, first name)."""
    return MeetingSheet(**meeting.model_dump(), patients=sorted(patients, key=_by_name))


# --- The next days' meetings with studies not available ---------------------------------------------------


class GapPatient(BaseModel):
    enrolment_id: str
    patient: PatientOut | None
    studies: list[SheetStudy] = Field(description="Its selected studies that are not available.")


class ImagingGap(BaseModel):
    """Extension: a meeting of the next days, with its patients whose selected studies are not all available."""

    meeting_id: str
    title: str | None
    date: dt.date
    centre: str | None
    patients: list[GapPatient]


def in_window(meeting: Meeting, first_day: dt.date, last_day: dt.date) -> bool:
    return meeting.date is not None and first_day <= meeting.date <= last_day


def imaging_gaps(sheets: Iterable[MeetingSheet], first_day: dt.date, last_day: dt.date) -> list[ImagingGap]:
    """The meetings dated from `first_day` to `last_day` (inclusive) that still have selected studies not
    available (withdrawn patients left out), soonest first, each with those patients and studies."""
    gaps = []
    for sheet in sheets:
        if sheet.date is None or not in_window(sheet, first_day, last_day):
            continue
        patients = [
            GapPatient(
                enrolment_id=patient.enrolment_id,
                patient=patient.patient,
                studies=[study for study in patient.studies if study.status in NOT_AVAILABLE],
            )
            for patient in sheet.patients
            if patient.identity_status != "withdrawn"
        ]
        patients = [patient for patient in patients if patient.studies]
        if patients:
            gaps.append(
                ImagingGap(
                    meeting_id=sheet.meeting_id,
                    title=sheet.title,
                    date=sheet.date,
                    centre=sheet.centre,
                    patients=patients,
                )
            )
    return sorted(gaps, key=lambda gap: (gap.date, gap.title or "", gap.meeting_id))


def fr_date(value: dt.date | None) -> str:
    """JJ/MM/AAAA, the one date format users read (empty when unknown)."""
    return value.strftime("%d/%m/%Y") if value is not None else ""
