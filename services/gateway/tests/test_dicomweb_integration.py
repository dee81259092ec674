"""The viewer's DICOMweb path against the real stack: the gateway in-process (Kafka, FerretDB) proxying the VIEWER
Orthanc's DICOMweb plugin. Raw HTTP/1.1 over a socket for the path tricks (an HTTP client would normalise them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from proxymage_dev.seed_pacs import store_studies
from proxymage_dev.synthetic import SyntheticStudy, large_study, synthetic_studies
from proxymage_dev.testing import eventually
from proxymage_shared import topics
from proxymage_shared.settings import DicomPeer

from .harness import DCC_TOKEN, VIEWER_TOKEN, RunningGateway, base, make_available, running_gateway

pytestmark = pytest.mark.integration

E = "enr-dw-1"
M = "m-dw-1"
COOKIE = {"Cookie": f"proxymage_token={VIEWER_TOKEN}"}


@dataclass
class Stored:
    shown: SyntheticStudy  # available for enrolment E
    other: SyntheticStudy  # in the viewer store too, another patient's, selected by nobody

    @staticmethod
    def series(study: SyntheticStudy) -> str:
        return str(study.instances[0].SeriesInstanceUID)

    @staticmethod
    def instance(study: SyntheticStudy) -> str:
        return str(study.instances[0].SOPInstanceUID)


@pytest.fixture
async def gw(stack_env: dict[str, str], unique: str) -> AsyncIterator[RunningGateway]:
    # A long cache life: only the handlers' invalidation can close a study within the tests' deadlines.
    async with running_gateway(unique, viewer_access_cache_seconds=300) as running:
        yield running


@pytest.fixture(scope="module")
def stored(stack_env: dict[str, str]) -> Stored:
    """Two small studies of two patients (seed 7: no other test uses it), stored straight into VIEWER."""
    viewer = DicomPeer(
        ae_title=stack_env["PROXYMAGE_VIEWER__AE_TITLE"],
        host=stack_env["PROXYMAGE_VIEWER__HOST"],
        port=int(stack_env["PROXYMAGE_VIEWER__PORT"]),
    )
    studies = sorted(synthetic_studies(7), key=lambda s: len(s.instances))
    shown = studies[0]
    other = next(s for s in studies if s.patient.patient_id != shown.patient.patient_id)
    report = store_studies([shown, other], viewer, "PM_DEV")
    assert report.failed == 0
    return Stored(shown, other)


async def raw_get(gw: RunningGateway, target: str, method: str = "GET") -> int:
    """The status of a request sent byte for byte as written (no client-side normalisation of the path)."""
    port = int(gw.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: proxymage_token={DCC_TOKEN}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()


async def test_an_available_study_reads_through_the_proxy_and_nothing_else_does(
    gw: RunningGateway, stored: Stored
) -> None:
    shown, other = stored.shown, stored.other
    series, instance = Stored.series(shown), Stored.instance(shown)
    await make_available(gw, shown, E)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30, trust_env=False) as anonymous:
        qido = f"/dicom-web/studies?StudyInstanceUID={shown.study_instance_uid}"
        # No session: 401, whatever the study.
        for path in (qido, f"/dicom-web/studies/{shown.study_instance_uid}/series"):
            assert (await anonymous.get(path)).status_code == 401

        # With the console's session cookie (a read-only `viewer` token is enough).
        found = await anonymous.get(qido, headers=COOKIE)
        assert found.status_code == 200, found.text
        assert found.headers["content-type"].startswith("application/dicom+json")
        assert [item["0020000D"]["Value"][0] for item in found.json()] == [shown.study_instance_uid]
        assert found.json()[0]["00100020"]["Value"][0] == shown.patient.patient_id

        listed = await anonymous.get(f"/dicom-web/studies/{shown.study_instance_uid}/series", headers=COOKIE)
        assert listed.status_code == 200
        assert series in [item["0020000E"]["Value"][0] for item in listed.json()]
        # Orthanc writes absolute URLs: they point back at the gateway, never at the store's own port.
        assert gw.url in listed.text
        assert ":18043" not in listed.text

        metadata = await anonymous.get(
            f"/dicom-web/studies/{shown.study_instance_uid}/series/{series}/metadata", headers=COOKIE
        )
        assert metadata.status_code == 200
        assert len(metadata.json()) == sum(1 for i in shown.instances if str(i.SeriesInstanceUID) == series)
        assert ":18043" not in metadata.text

        frame = await anonymous.get(
            f"/dicom-web/studies/{shown.study_instance_uid}/series/{series}/instances/{instance}/frames/1",
            headers={**COOKIE, "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
        )
        assert frame.status_code == 200
        assert frame.headers["content-type"].startswith("multipart/related")
        assert len(frame.content) > 1000  # pixel data
        assert frame.headers["cache-control"] == "private, no-store"

        # HEAD: the headers alone.
        head = await anonymous.head(f"/dicom-web/studies/{shown.study_instance_uid}/series", headers=COOKIE)
        assert head.status_code == 200
        assert head.headers["content-type"].startswith("application/dicom+json")

        # A bearer token works as well.
        bearer = await anonymous.get(qido, headers={"Authorization": f"Bearer {DCC_TOKEN}"})
        assert bearer.status_code == 200

    # Another patient's study is in the store but available for nobody: 404, by path and by query; a query by its
    # PatientID lists nothing of it.
    for path in (
        f"/dicom-web/studies?StudyInstanceUID={other.study_instance_uid}",
        f"/dicom-web/studies/{other.study_instance_uid}/series",
        f"/dicom-web/studies/{other.study_instance_uid}/metadata",
        f"/dicom-web/studies/{other.study_instance_uid}/series/{Stored.series(other)}/instances/"
        f"{Stored.instance(other)}/frames/1",
    ):
        assert (await gw.client.get(path)).status_code == 404, path
    by_patient = await gw.client.get(f"/dicom-web/studies?PatientID={other.patient.patient_id}")
    assert by_patient.status_code == 200
    assert by_patient.json() == []
    # Its series under the available study's UID: the store itself checks the hierarchy.
    crossed = await gw.client.get(
        f"/dicom-web/studies/{shown.study_instance_uid}/series/{Stored.series(other)}/metadata"
    )
    assert crossed.status_code == 404
    # No browsing of the whole store.
    for path in ("/dicom-web/studies", "/dicom-web/studies?limit=100", "/dicom-web/series", "/dicom-web/instances"):
        assert (await gw.client.get(path)).status_code == 404, path

    # Writes: 405, with or without a study.
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/dicom-web/studies", f"/dicom-web/studies/{shown.study_instance_uid}"):
            answer = await gw.client.request(method, path, content=b"x")
            assert answer.status_code == 405, (method, path)
            assert answer.headers["allow"] == "GET, HEAD"

    # Path tricks, byte for byte: 404.
    uid = shown.study_instance_uid
    for target in (
        f"/dicom-web/studies/{uid}/../{other.study_instance_uid}/series",
        f"/dicom-web/studies/{other.study_instance_uid}/../{uid}/series",
        f"/dicom-web/studies/{uid}%2Fseries",
        f"/dicom-web/studies/{uid}/series/%2e%2e/%2e%2e/{other.study_instance_uid}",
        f"/dicom-web/studies/{uid}/series/..%2F..%2F{other.study_instance_uid}",
        f"/dicom-web/studies/{uid}/series/{series}/instances/{instance}/file",
        "/dicom-web/../patients",
        "/dicom-web/%2e%2e/patients",
    ):
        assert await raw_get(gw, target) == 404, target
    assert await raw_get(gw, f"/dicom-web/studies/{uid}/series") == 200


async def test_a_removed_study_closes_at_once(gw: RunningGateway, stored: Stored) -> None:
    shown = stored.shown
    await make_available(gw, shown, E)
    path = f"/dicom-web/studies/{shown.study_instance_uid}/series"
    assert (await gw.client.get(path)).status_code == 200
    await gw.send(topics.STUDY_REMOVED, base(enrolment_id=E, study_instance_uid=shown.study_instance_uid), E)

    async def closed() -> bool:
        return (await gw.client.get(path)).status_code == 404

    await eventually(closed, 3, "the removed study to be closed to the viewer")


async def test_an_available_study_missing_from_the_store_is_a_404(gw: RunningGateway) -> None:
    # `available` in the read model, but purged from (or never in) the viewer store: the store's 404 passes.
    purged = large_study(20_261_130, 2)
    await make_available(gw, purged, "enr-dw-purged")
    for path in (
        f"/dicom-web/studies?StudyInstanceUID={purged.study_instance_uid}",
        f"/dicom-web/studies/{purged.study_instance_uid}/series",
        f"/dicom-web/studies/{purged.study_instance_uid}/metadata",
    ):
        assert (await gw.client.get(path)).status_code == 404, path


async def test_a_withdrawn_enrolment_closes_its_studies_at_once(gw: RunningGateway, stored: Stored) -> None:
    shown = stored.shown
    await make_available(gw, shown, E)
    path = f"/dicom-web/studies/{shown.study_instance_uid}/metadata"
    first = await gw.client.get(path)
    assert first.status_code == 200, first.text
    withdrawn = await gw.client.delete(f"/api/v1/enrolments/{E}", params={"reason": "consentement retiré"})
    assert withdrawn.status_code == 202, withdrawn.text

    async def closed() -> bool:
        answer: Any = await gw.client.get(path)
        return bool(answer.status_code == 404)

    # The gateway's own projection of the withdrawal it published closes the study (no fetcher in this test).
    await eventually(closed, 5, "the withdrawn enrolment's study to be closed to the viewer")
    assert json.loads((await gw.client.get(path)).text)["detail"] == "not found"
