"""Typed C-FIND results: what a PACS answered, decoded, with dates as `date` and counts as `int`.

PACS data is not trusted: a value that is missing or does not parse becomes `None` (the raw text is kept
where a caller must tell "missing" from "invalid", e.g. a birth date for identity vigilance). A dataset that
cannot be decoded at all raises `MalformedAnswerError`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from proxymage_shared.dicom.errors import MalformedAnswerError


def parse_da(value: str | None) -> dt.date | None:
    """DA (PS3.5 §6.2): exactly YYYYMMDD and a real calendar date; anything else is `None`."""
    if not value or len(value) != 8 or not value.isdigit():
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def parse_tm(value: str | None) -> dt.time | None:
    """TM (PS3.5 §6.2): HH[MM[SS[.F{1,6}]]], also the old HH:MM:SS form."""
    if not value:
        return None
    text = value.strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    try:
        return dt.time(
            int(whole[0:2]),
            int(whole[2:4] or 0),
            int(whole[4:6] or 0),
            int((fraction + "000000")[:6]) if fraction else 0,
        )
    except ValueError:
        return None


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    text = str(value).strip()
    return text or None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _alphabetic(ds: Dataset, keyword: str) -> str | None:
    """The alphabetic component group of a PN value, decoded with the dataset's character set."""
    value: Any = ds.get(keyword)
    if value is None or value == "":
        return None
    if not isinstance(value, PersonName):
        value = PersonName(str(value))
    groups = value.components
    alphabetic = groups[0] if groups else ""
    return alphabetic or None


def _multi(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else list(value)  # a MultiValue for multi-valued elements
    return tuple(str(item).strip() for item in items if str(item).strip())


def _character_sets(ds: Dataset) -> tuple[str, ...]:
    return _multi(ds, "SpecificCharacterSet")


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """One patient-level C-FIND answer. Names are the decoded alphabetic group, e.g. `DUPONT^MARIE`."""

    patient_id: str
    issuer: str | None
    patient_name: str | None
    birth_name: str | None
    birth_date_raw: str | None
    birth_date: dt.date | None
    sex: str | None
    character_sets: tuple[str, ...]

    @classmethod
    def from_dataset(cls, ds: Dataset) -> PatientRecord:
        try:
            patient_id = _text(ds, "PatientID")
            if patient_id is None:
                raise MalformedAnswerError("patient-level answer without PatientID")
            birth_date_raw = _text(ds, "PatientBirthDate")
            return cls(
                patient_id=patient_id,
                issuer=_text(ds, "IssuerOfPatientID"),
                patient_name=_alphabetic(ds, "PatientName"),
                birth_name=_alphabetic(ds, "PatientBirthName"),
                birth_date_raw=birth_date_raw,
                birth_date=parse_da(birth_date_raw),
                sex=_text(ds, "PatientSex"),
                character_sets=_character_sets(ds),
            )
        except MalformedAnswerError:
            raise
        except Exception as error:
            raise MalformedAnswerError(f"undecodable patient-level answer: {type(error).__name__}") from error


@dataclass(frozen=True, slots=True)
class StudyRecord:
    """One study-level C-FIND answer."""

    study_instance_uid: str
    patient_id: str | None
    issuer: str | None
    date: dt.date | None
    time: dt.time | None
    description: str | None
    modalities: tuple[str, ...]
    series: int | None
    instances: int | None
    accession_number: str | None
    institution_name: str | None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> StudyRecord:
        try:
            uid = _text(ds, "StudyInstanceUID")
            if uid is None:
                raise MalformedAnswerError("study-level answer without StudyInstanceUID")
            return cls(
                study_instance_uid=uid,
                patient_id=_text(ds, "PatientID"),
                issuer=_text(ds, "IssuerOfPatientID"),
                date=parse_da(_text(ds, "StudyDate")),
                time=parse_tm(_text(ds, "StudyTime")),
                description=_text(ds, "StudyDescription"),
                modalities=_multi(ds, "ModalitiesInStudy"),
                series=_int(ds, "NumberOfStudyRelatedSeries"),
                instances=_int(ds, "NumberOfStudyRelatedInstances"),
                accession_number=_text(ds, "AccessionNumber"),
                institution_name=_text(ds, "InstitutionName"),
            )
        except MalformedAnswerError:
            raise
        except Exception as error:
            raise MalformedAnswerError(f"undecodable study-level answer: {type(error).__name__}") from error


@dataclass(frozen=True, slots=True)
class MoveProgress:
    """Sub-operation counts of a C-MOVE (PS3.4 §C.4.2.1.6)."""

    remaining: int
    completed: int
    failed: int
    warning: int

    @property
    def total(self) -> int:
        return self.remaining + self.completed + self.failed + self.warning


@dataclass(frozen=True, slots=True)
class MoveResult:
    """How a C-MOVE ended: final status and sub-operation counts."""

    status: int
    completed: int
    failed: int
    warning: int

    @property
    def complete(self) -> bool:
        """True only when nothing failed: a "success" with failed sub-operations is not complete."""
        return self.status == 0x0000 and self.failed == 0
