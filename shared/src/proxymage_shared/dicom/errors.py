"""DICOM failures, split as everywhere in Proxymage into transient (retry later) and permanent.

Errors raised for a DIMSE status carry it in `status`, so a caller can react to a specific refusal (e.g.
narrow a C-FIND that the PACS refused as too large with 0xA700).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxymage_shared.errors import PermanentError, TransientError

if TYPE_CHECKING:  # results.py imports this module
    from proxymage_shared.dicom.results import MoveResult


class DicomUnavailableError(TransientError):
    """The peer could not be reached, refused or dropped the association, or timed out."""


class DicomTransientError(TransientError):
    """The peer answered with a status that may change later (out of resources, unable to process)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DicomPermanentError(PermanentError):
    """The peer refused the request itself (e.g. unknown move destination): retrying cannot help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MalformedAnswerError(TransientError):
    """The peer's answer could not be decoded. Transient: the PACS may be fixed; the caller reports it."""


class IncompleteMoveError(TransientError):
    """The move ended, but not every instance arrived: never treat the study as complete. `result` is how it
    ended (final status and sub-operation counts), for the caller to assess what arrived."""

    def __init__(self, message: str, *, result: MoveResult) -> None:
        super().__init__(message)
        self.result = result


class MoveCancelledError(TransientError):
    """The caller cancelled the move (C-CANCEL, then A-ABORT if the peer went on): nothing it stored counts."""
