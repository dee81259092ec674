"""DICOM query/retrieve: an async client over pynetdicom, typed queries and results, status tables."""

from proxymage_shared.dicom.client import DicomClient, DicomTimeouts, echo_check
from proxymage_shared.dicom.errors import (
    DicomPermanentError,
    DicomTransientError,
    DicomUnavailableError,
    IncompleteMoveError,
    MalformedAnswerError,
    MoveCancelledError,
)
from proxymage_shared.dicom.queries import patient_query, study_move_identifier, study_query
from proxymage_shared.dicom.results import MoveProgress, MoveResult, PatientRecord, StudyRecord

__all__ = [
    "DicomClient",
    "DicomPermanentError",
    "DicomTimeouts",
    "DicomTransientError",
    "DicomUnavailableError",
    "IncompleteMoveError",
    "MalformedAnswerError",
    "MoveCancelledError",
    "MoveProgress",
    "MoveResult",
    "PatientRecord",
    "StudyRecord",
    "echo_check",
    "patient_query",
    "study_move_identifier",
    "study_query",
]
