"""Adapters to the two DICOM peers (MIRC, the regional PACS; the viewer's store) and to the viewer store's
REST API (Orthanc) for purging removed studies."""

from __future__ import annotations

import httpx
from proxymage_shared.dicom import DicomClient, StudyRecord, study_query
from proxymage_shared.events import PacsPatientRef

from study_fetcher.ports import MoveControl, OnProgress, Pacs, StudyPresence, ViewerPurge, ViewerStoreUnavailableError

__all__ = ["DicomPacs", "OrthancRest", "Pacs", "StudyPresence", "ViewerPurge", "ViewerStoreUnavailableError"]


def _presence(records: list[StudyRecord], study_instance_uid: str) -> StudyPresence | None:
    # Re-check the key client-side: a peer that ignored it would answer other studies.
    matching = [record for record in records if record.study_instance_uid == study_instance_uid]
    if not matching:
        return None
    counts = [record.instances for record in matching if record.instances is not None]
    return StudyPresence(max(counts) if counts else None)


class DicomPacs:
    """MIRC and the viewer store over DICOM: C-FIND on both, C-MOVE from MIRC to `destination`."""

    def __init__(self, mirc: DicomClient, viewer: DicomClient, destination: str) -> None:
        self._mirc = mirc
        self._viewer = viewer
        self._destination = destination

    async def studies_of(self, patient: PacsPatientRef) -> list[StudyRecord]:
        return await self._mirc.find_studies(study_query(patient_id=patient.patient_id, issuer=patient.issuer))

    async def in_mirc(self, study_instance_uid: str) -> StudyPresence | None:
        records = await self._mirc.find_studies(study_query(study_instance_uid=study_instance_uid))
        return _presence(records, study_instance_uid)

    async def in_viewer(self, study_instance_uid: str) -> StudyPresence | None:
        records = await self._viewer.find_studies(study_query(study_instance_uid=study_instance_uid))
        return _presence(records, study_instance_uid)

    async def move(self, study_instance_uid: str, on_progress: OnProgress, control: MoveControl) -> int:
        """Moves the study MIRC -> viewer store; returns the completed sub-operations (raises otherwise)."""
        result = await self._mirc.move_study(
            study_instance_uid, self._destination, on_progress, control.cancel, on_started=control.on_started
        )
        return result.completed + result.warning


class OrthancRest:
    """Deletes studies from an Orthanc viewer store through its REST API."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None) -> None:
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), auth=auth, timeout=30.0, trust_env=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def delete_study(self, study_instance_uid: str) -> int:
        """Deletes every Orthanc study with this StudyInstanceUID; returns how many."""
        try:
            found = await self._client.post("/tools/lookup", content=study_instance_uid.encode())
            found.raise_for_status()
            ids = [item["ID"] for item in found.json() if item.get("Type") == "Study"]
            for orthanc_id in ids:
                answer = await self._client.delete(f"/studies/{orthanc_id}")
                if answer.status_code != 404:  # already gone: fine
                    answer.raise_for_status()
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            raise ViewerStoreUnavailableError(f"viewer store REST API: {type(error).__name__}") from error
        return len(ids)
