"""Typed C-FIND results and the status table, without a network."""

from __future__ import annotations

import datetime as dt

import pytest
from proxymage_shared.dicom import MalformedAnswerError, PatientRecord, StudyRecord
from proxymage_shared.dicom.results import parse_da, parse_tm
from proxymage_shared.dicom.status import Outcome, classify
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("19560412", dt.date(1956, 4, 12)),
        ("19560231", None),  # not a calendar date
        ("195604", None),  # incomplete
        ("1956-04-12", None),  # not DA
        ("", None),
        (None, None),
    ],
)
def test_parse_da(raw: str | None, expected: dt.date | None) -> None:
    assert parse_da(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("101502", dt.time(10, 15, 2)),
        ("1015", dt.time(10, 15)),
        ("10", dt.time(10)),
        ("101502.25", dt.time(10, 15, 2, 250000)),
        ("10:15:02", dt.time(10, 15, 2)),
        ("2561", None),
        ("abc", None),
    ],
)
def test_parse_tm(raw: str, expected: dt.time | None) -> None:
    assert parse_tm(raw) == expected


def test_patient_record_decodes_latin1_alphabetic_group() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = PersonName("BÉRANGER-FICTIF^Hélène".encode("latin-1") + b"=IDEO^GRAPHIC=")
    ds.PatientBirthName = PersonName("D'EXEMPLE^Hélène".encode("latin-1"))
    ds.PatientID = "T0001"
    ds.IssuerOfPatientID = "CHU-FICTIF-TOURS"
    ds.PatientBirthDate = "19560231"
    ds.PatientSex = "F"
    record = PatientRecord.from_dataset(ds)
    assert record.patient_name == "BÉRANGER-FICTIF^Hélène"
    assert record.birth_name == "D'EXEMPLE^Hélène"
    assert record.birth_date is None
    assert record.birth_date_raw == "19560231"
    assert record.issuer == "CHU-FICTIF-TOURS"
    assert record.character_sets == ("ISO_IR 100",)


def test_patient_record_without_patient_id_is_malformed() -> None:
    ds = Dataset()
    ds.PatientName = "X^Y"
    with pytest.raises(MalformedAnswerError):
        PatientRecord.from_dataset(ds)


def test_study_record_tolerates_bad_values() -> None:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.3"
    ds.StudyDate = "20230301"
    ds.ModalitiesInStudy = ["CT", "SR"]
    ds.NumberOfStudyRelatedInstances = "412"
    ds.NumberOfStudyRelatedSeries = "-4"
    ds.StudyDescription = "TDM THORAX"
    record = StudyRecord.from_dataset(ds)
    assert record.date == dt.date(2023, 3, 1)
    assert record.modalities == ("CT", "SR")
    assert record.instances == 412
    assert record.series is None
    assert record.accession_number is None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, Outcome.SUCCESS),
        (0xFF00, Outcome.PENDING),
        (0xFF01, Outcome.PENDING),
        (0xB000, Outcome.WARNING),
        (0xA801, Outcome.PERMANENT),
        (0xA702, Outcome.TRANSIENT),
        (0xC000, Outcome.TRANSIENT),
        (0xC123, Outcome.TRANSIENT),
        (0xA123, Outcome.PERMANENT),
        (0xFE00, Outcome.CANCELLED),
    ],
)
def test_status_classification(status: int, outcome: Outcome) -> None:
    assert classify(status)[0] is outcome
