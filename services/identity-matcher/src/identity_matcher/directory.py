"""The regional PACS as a patient directory: patient-level C-FIND on MIRC, narrowed when it must be."""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from proxymage_shared.dicom import DicomTransientError, PatientRecord, patient_query
from proxymage_shared.dicom.status import STATUSES
from proxymage_shared.errors import TransientError
from proxymage_shared.logging import get_logger
from pydicom.dataset import Dataset

from identity_matcher.ports import Candidates, PatientDirectory
from identity_matcher.query_plan import PatientKeys, QueryLevel

__all__ = ["AnswerTooLargeError", "Candidates", "MircDirectory", "PatientDirectory", "PatientFinder"]

log = get_logger(__name__)

# PS3.4 §C.4.1.1.4: statuses with which a PACS refuses an answer it finds too large.
REFUSED_AS_TOO_LARGE: Final = frozenset(code for code in (0xA700, 0xA701) if code in STATUSES)


class AnswerTooLargeError(TransientError):
    """Even the narrowest query was capped or refused by the PACS."""


class PatientFinder(Protocol):
    """What the directory needs of a DICOM client (`DicomClient.find_patients`)."""

    async def find_patients(self, identifier: Dataset) -> list[PatientRecord]: ...


class MircDirectory:
    """Runs a query plan on MIRC: the first level whose every query answers below the cap wins."""

    def __init__(self, client: PatientFinder, max_answers: int) -> None:
        self._client = client
        self._max_answers = max_answers

    async def _query(self, keys: PatientKeys) -> list[PatientRecord] | None:
        """The answers, or None when the PACS capped or refused them as too large."""
        identifier = patient_query(birth_date=keys.birth_date, sex=keys.sex, patient_name=keys.name_pattern)
        try:
            records = await self._client.find_patients(identifier)
        except DicomTransientError as error:
            if error.status in REFUSED_AS_TOO_LARGE:
                return None
            raise
        return None if len(records) >= self._max_answers else records

    async def find(self, plan: tuple[QueryLevel, ...], vigilance: tuple[PatientKeys, ...] = ()) -> Candidates:
        """The first level of `plan` that answers below the cap, plus the `vigilance` queries' answers."""
        # Independent queries run at once (the client's pool bounds the associations to MIRC).
        main = asyncio.ensure_future(self._first_complete_level(plan))
        try:
            vigilant = await asyncio.gather(*(self._query(keys) for keys in vigilance))
        finally:
            found = await main
        extra = tuple(record for answer in vigilant for record in answer or ())  # a capped answer is skipped
        return Candidates(found.records + extra, found.level)

    async def _first_complete_level(self, plan: tuple[QueryLevel, ...]) -> Candidates:
        for level in plan:
            if not level.queries:
                continue
            found: dict[tuple[str, str | None], PatientRecord] = {}
            for keys in level.queries:
                records = await self._query(keys)
                if records is None:
                    log.info("patient_query_narrowed", level=level.name)
                    break
                for record in records:
                    found.setdefault((record.patient_id, record.issuer), record)
            else:
                return Candidates(tuple(found.values()), level.name)
        raise AnswerTooLargeError("MIRC capped or refused every patient query, even the narrowest")
