"""Typed, keyword-only factories for the identifiers we send (PS3.4 §C.6 Query/Retrieve models).

Every key we want back is in the identifier (empty = return key), and the requested character set is
UTF-8 so a PACS that can answer in UTF-8 does; we decode whatever it answers with (ISO_IR 100 often).
"""

from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset

PATIENT_RETURN_KEYS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientBirthName",
)

STUDY_RETURN_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "AccessionNumber",
    "InstitutionName",
    "PatientID",
    "IssuerOfPatientID",
)


def _da(value: dt.date) -> str:
    return value.strftime("%Y%m%d")


def patient_query(
    *,
    birth_date: dt.date | None = None,
    patient_name: str | None = None,
    patient_id: str | None = None,
    sex: str | None = None,
) -> Dataset:
    """Patient-level C-FIND identifier; unset matching keys are sent empty, as return keys."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "PATIENT"
    for keyword in PATIENT_RETURN_KEYS:
        setattr(ds, keyword, "")
    if birth_date is not None:
        ds.PatientBirthDate = _da(birth_date)
    if patient_name is not None:
        ds.PatientName = patient_name
    if patient_id is not None:
        ds.PatientID = patient_id
    if sex is not None:
        ds.PatientSex = sex
    return ds


def study_query(
    *,
    patient_id: str | None = None,
    issuer: str | None = None,
    study_instance_uid: str | None = None,
) -> Dataset:
    """Study-level C-FIND identifier (Study Root)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in STUDY_RETURN_KEYS:
        setattr(ds, keyword, "")
    if patient_id is not None:
        ds.PatientID = patient_id
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    if study_instance_uid is not None:
        ds.StudyInstanceUID = study_instance_uid
    return ds


def study_move_identifier(study_instance_uid: str) -> Dataset:
    """Study-level C-MOVE identifier (Study Root): the whole study."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_instance_uid
    return ds
