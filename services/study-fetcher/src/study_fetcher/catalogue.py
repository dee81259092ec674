"""The catalogue of an enrolment's studies, pure: MIRC's study-level answers in, the rows of the user guide's
"Imaging" tab (Description, PACS, Study date, Modality, Images, Series) out.

PACS ignore some query keys (CONVENTIONS.md), so every answer is checked against what was asked: a study
whose PatientID or issuer differs (or whose issuer is missing when one was asked) belongs to another patient
as far as we can tell, and is dropped. Studies are de-duplicated by StudyInstanceUID (the same study can be
answered for two linked patients). An answer that cannot be turned into a valid row (e.g. a StudyInstanceUID
that is not a DICOM UID) makes the whole catalogue an error with a reason, never a crash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proxymage_shared.dicom import MalformedAnswerError, StudyRecord
from proxymage_shared.events import CataloguedStudy, PacsPatientRef
from pydantic import ValidationError


@dataclass(frozen=True, slots=True)
class Listing:
    studies: tuple[CataloguedStudy, ...]
    dropped: int  # answers that did not belong to the patient asked for


def pacs_name(record: StudyRecord, patient: PacsPatientRef, display_names: Mapping[str, str]) -> str | None:
    """The "PACS" column: InstitutionName when MIRC returns it, else the configured display name of the
    issuer, else the issuer itself."""
    if record.institution_name:
        return record.institution_name
    if patient.issuer is None:
        return None
    return display_names.get(patient.issuer, patient.issuer)


def belongs_to(record: StudyRecord, patient: PacsPatientRef) -> bool:
    """The answer is about the patient asked for (PatientID, and issuer when one was asked)."""
    if record.patient_id != patient.patient_id:
        return False
    return patient.issuer is None or record.issuer == patient.issuer


def to_row(record: StudyRecord, patient: PacsPatientRef, display_names: Mapping[str, str]) -> CataloguedStudy:
    try:
        return CataloguedStudy(
            study_instance_uid=record.study_instance_uid,
            description=record.description,
            pacs=pacs_name(record, patient, display_names),
            date=record.date,
            time=record.time,
            modalities=record.modalities,
            images=record.instances,
            series=record.series,
            accession_number=record.accession_number,
            pacs_patient=patient,
        )
    except ValidationError as error:
        fields = sorted({str(item["loc"][0]) for item in error.errors(include_input=False) if item["loc"]})
        raise MalformedAnswerError(f"invalid study-level answer from the PACS ({', '.join(fields)})") from error


def build_listing(
    answers: Iterable[tuple[PacsPatientRef, Iterable[StudyRecord]]], display_names: Mapping[str, str]
) -> Listing:
    """All studies of the linked patients, checked and de-duplicated, sorted newest first."""
    rows: dict[str, CataloguedStudy] = {}
    dropped = 0
    for patient, records in answers:
        for record in records:
            if not belongs_to(record, patient):
                dropped += 1
                continue
            rows.setdefault(record.study_instance_uid, to_row(record, patient, display_names))
    ordered = sorted(
        rows.values(),
        key=lambda row: (row.date is not None, row.date, row.time is not None, row.time, row.study_instance_uid),
        reverse=True,
    )
    return Listing(tuple(ordered), dropped)
