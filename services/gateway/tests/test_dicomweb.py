"""The DICOMweb proxy's pure rules: which paths and queries pass, and the access cache (no servers)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from gateway.auth import COOKIE_NAME, TokenVerifier
from gateway.dicomweb import MAX_STUDIES_PER_QUERY, PREFIX, DicomWebProxy, StoreAccount, parse, study_query
from gateway.projection import Json, apply_patch, patches
from gateway.read_model import EnrolmentRecord, enrolment_record
from gateway.settings import ApiToken
from gateway.study_access import Grant, StudyAccess
from proxymage_shared.events import (
    EnrolmentWithdrawn,
    Event,
    IdentityResolved,
    ImagingCatalogued,
    StudiesSelected,
    StudyStatusChanged,
)

from .fakes import RecordingAuditor

S = "1.2.826.0.1.3680043.10.1338.1"
SE = "1.2.826.0.1.3680043.10.1338.2"
INSTANCE = "1.2.826.0.1.3680043.10.1338.3"


@pytest.mark.parametrize(
    "path",
    [
        f"/studies/{S}",
        f"/studies/{S}/metadata",
        f"/studies/{S}/rendered",
        f"/studies/{S}/thumbnail",
        f"/studies/{S}/series",
        f"/studies/{S}/instances",
        f"/studies/{S}/series/{SE}",
        f"/studies/{S}/series/{SE}/metadata",
        f"/studies/{S}/series/{SE}/thumbnail",
        f"/studies/{S}/series/{SE}/instances",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}/metadata",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}/rendered",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}/frames/1",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}/frames/1,2,3",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}/frames/1/rendered",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}/bulk/7fe00010",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}/bulk/00540016/0/00181072",
    ],
)
def test_every_read_path_names_its_study(path: str) -> None:
    target = parse(path)
    assert target is not None
    assert target.study == S
    assert target.path == path


def test_the_study_query_names_no_study() -> None:
    target = parse("/studies")
    assert target is not None
    assert target.study is None


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "/series",  # QIDO across the whole store
        "/instances",
        f"/studies/{S}/",
        f"/studies/{S}/../{S}",
        f"/studies/{S}/series/..",
        f"/studies/{S}%2Fseries",
        f"/studies/{S}/series/%2e%2e",
        "/studies/%31.2/series",
        f"/studies/{S}//series",
        f"/studies/.{S}",
        f"/studies/{S}./series",
        "/studies/1..2/series",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}/bulk/7fe00010/../../x",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}/frames/x",
        f"/studies/{S}/series/{SE}/instances/{INSTANCE}/file",  # Orthanc's own REST, not DICOMweb
        "/studies/abc",
        "/servers",  # Orthanc's DICOMweb client routes
        "/info",
    ],
)
def test_anything_else_is_refused(path: str) -> None:
    assert parse(path) is None


def test_a_study_query_must_name_studies_or_one_exact_patient() -> None:
    for refused in (
        "",
        "limit=10&offset=0",
        "PatientID=*",
        "PatientID=*0",
        "PatientID=%3F0042",
        "PatientID=P%5C1",
        "PatientID=",
        "PatientName=DOE*",
        "StudyInstanceUID=../x",
        "StudyInstanceUID=",
        "PatientID=P-1&PatientID=P-2",
    ):
        assert study_query(refused) is None, refused
    named = study_query(f"StudyInstanceUID={S}&includefield=00081030&PatientName=X*")
    assert named is not None
    assert named.study_instance_uids == (S,)
    assert named.query == f"StudyInstanceUID={S}&includefield=00081030&limit={MAX_STUDIES_PER_QUERY}"
    several = study_query(f"StudyInstanceUID={S}%2C{SE}")
    assert several is not None
    assert several.study_instance_uids == (S, SE)
    # Values go as the client encoded them: `^` stays `%5E` as sent, never re-encoded differently.
    patient = study_query("PatientID=P%5E1&limit=5000")
    assert patient is not None
    assert patient.patient_id == "P^1"
    assert patient.query == f"PatientID=P%5E1&limit={MAX_STUDIES_PER_QUERY}"
    small = study_query("PatientID=P-1&limit=3")
    assert small is not None
    assert small.query.endswith("limit=3")


def _enrolment(
    uid: str, patient_id: str, status: str, *, selected: str | None = None, withdrawn: bool = False
) -> dict[str, Json]:
    """An enrolment of the read model, as the projection writes it, with `uid` catalogued under `patient_id` and its
    job in `status`; `selected` (`uid` unless said) selected; withdrawn last if `withdrawn`."""

    def stamp(second: int) -> dict[str, Any]:
        return {"event_id": str(uuid.UUID(int=second)), "occurred_at": f"2026-01-01T00:00:0{second}+00:00"}

    ref = {"patient_id": patient_id, "issuer": "X"}
    study = {"study_instance_uid": uid, "description": None, "pacs": None, "date": None, "modalities": ["CT"]}
    events: list[Event] = [
        IdentityResolved.model_validate(
            {**stamp(1), "enrolment_id": "e-1", "source_event_id": str(uuid.UUID(int=99)), "status": "matched"}
            | {"pacs_patients": [ref]},
            strict=False,
        ),
        ImagingCatalogued.model_validate(
            {**stamp(2), "enrolment_id": "e-1", "status": "listed"}
            | {"studies": [{**study, "images": 1, "series": 1, "pacs_patient": ref}]},
            strict=False,
        ),
        StudiesSelected.model_validate(
            {**stamp(3), "enrolment_id": "e-1", "study_instance_uids": [selected or uid], "expertise_requested": False},
            strict=False,
        ),
        StudyStatusChanged.model_validate(
            {**stamp(4), "enrolment_id": "e-1", "study_instance_uid": uid, "status": status}
            | {"version": 1, "attempts": 0},
            strict=False,
        ),
    ]
    if withdrawn:
        events.append(EnrolmentWithdrawn.model_validate({**stamp(5), "enrolment_id": "e-1"}, strict=False))
    document: dict[str, Json] | None = None
    for patch in (patch for event in events for patch in patches(event)):
        document = apply_patch(document, patch)
    assert document is not None
    return document


class Lookups:
    def __init__(self, documents: list[dict[str, Json]]) -> None:
        self.documents = documents
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, study_instance_uids: object) -> list[EnrolmentRecord]:
        self.calls += 1
        await self.gate.wait()
        return [enrolment_record(document) for document in self.documents]


async def test_access_follows_the_enrolments_state_and_is_cached_until_forgotten() -> None:
    lookups = Lookups([_enrolment(S, "P-1", "available")])
    now = [0.0]
    access = StudyAccess(lookups, ttl_seconds=5, clock=lambda: now[0])
    assert await access.grants(S) == {Grant("e-1", "P-1")}
    assert await access.grants(S) == {Grant("e-1", "P-1")}
    assert lookups.calls == 1
    lookups.documents = [_enrolment(S, "P-1", "retrieving")]
    access.forget()  # the handlers applied an enrolment change
    assert await access.grants(S) == frozenset()
    lookups.documents = [_enrolment(S, "P-1", "available")]
    now[0] = 6.0  # past the TTL: asked again even without a change seen
    assert await access.grants(S) == {Grant("e-1", "P-1")}
    assert lookups.calls == 3


async def test_a_study_not_selected_or_not_complete_is_not_viewable() -> None:
    for status in ("queued", "retrieving", "not_yet_available", "failed", "removed"):
        access = StudyAccess(Lookups([_enrolment(S, "P-1", status)]))
        assert await access.grants(S) == frozenset(), status
    unselected = _enrolment(S, "P-1", "available", selected=SE)
    assert await StudyAccess(Lookups([unselected])).grants(S) == frozenset()


async def test_a_withdrawn_enrolment_closes_its_studies() -> None:
    withdrawn = _enrolment(S, "P-1", "available", withdrawn=True)
    assert await StudyAccess(Lookups([withdrawn])).grants(S) == frozenset()


async def test_concurrent_requests_share_one_lookup_and_a_change_meanwhile_is_not_cached() -> None:
    lookups = Lookups([_enrolment(S, "P-1", "available")])
    lookups.gate.clear()
    access = StudyAccess(lookups)
    waiting = [asyncio.ensure_future(access.grants(S)) for _ in range(50)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert lookups.calls == 1
    access.forget()  # a withdrawal projected while the lookup runs
    lookups.gate.set()
    assert {frozenset(found) for found in await asyncio.gather(*waiting)} == {frozenset({Grant("e-1", "P-1")})}
    lookups.documents = []
    assert await access.grants(S) == frozenset()  # the stale answer was not kept
    assert lookups.calls == 2


# --- the proxy as an ASGI app, in front of a fake store (httpx.MockTransport) --------------------------------

TOKEN = "jeton-dicomweb-essai"
OTHER = "1.2.826.0.1.3680043.10.1338.9"


def _study_item(uid: str, patient_id: str) -> dict[str, Any]:
    return {
        "0020000D": {"vr": "UI", "Value": [uid]},
        "00100020": {"vr": "LO", "Value": [patient_id]},
    }


class FakeStore:
    """Answers like Orthanc's DICOMweb plugin for a few paths, and remembers every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/dicom-web")
        if path == "/studies":
            # S twice (under P-1, its catalogued patient, and under P-2: another patient's study with the same
            # UID), and OTHER, selected by nobody.
            items = [_study_item(S, "P-1"), _study_item(S, "P-2"), _study_item(OTHER, "P-1")]
            return httpx.Response(200, json=items, headers={"content-type": "application/dicom+json"})
        if path.endswith("/frames/1"):
            frame = httpx.ByteStream(b"--frame--")  # a stream, as a real transport gives
            return httpx.Response(200, stream=frame, headers={"content-type": "multipart/related"})
        if path.endswith("/series"):
            return httpx.Response(200, json=[{"0020000E": {"vr": "UI", "Value": [SE]}}])
        return httpx.Response(404)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def auditor() -> RecordingAuditor:
    return RecordingAuditor()


@pytest.fixture
async def proxy(store: FakeStore, auditor: RecordingAuditor) -> Any:
    verifier = TokenVerifier(
        [ApiToken(name="lecteur", role="viewer", sha256=hashlib.sha256(TOKEN.encode()).hexdigest())]
    )
    access = StudyAccess(Lookups([_enrolment(S, "P-1", "available")]))
    app = FastAPI()
    proxy = DicomWebProxy(
        StoreAccount("http://store.test/dicom-web"),
        verifier,
        access,
        auditor,
        public_url="https://proxymage.example.org",
        transport=httpx.MockTransport(store.handle),
    )
    app.mount(PREFIX, proxy)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as client:
        yield client
    await proxy.close()


FRAME = f"/dicom-web/studies/{S}/series/{SE}/instances/{INSTANCE}/frames/1"


async def test_sign_in_comes_first_then_read_only(proxy: httpx.AsyncClient, store: FakeStore) -> None:
    assert (await proxy.get(FRAME)).status_code == 401
    assert (await proxy.post("/dicom-web/studies", content=b"x")).status_code == 401
    proxy.cookies.set(COOKIE_NAME, TOKEN)
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        answer = await proxy.request(method, "/dicom-web/studies")
        assert answer.status_code == 405, method
        assert answer.headers["allow"] == "GET, HEAD"
    assert store.requests == []


async def test_reads_go_upstream_without_the_users_credentials(proxy: httpx.AsyncClient, store: FakeStore) -> None:
    request = proxy.build_request("GET", FRAME, headers={"Authorization": f"Bearer {TOKEN}", "Cookie": "other=1"})
    del request.headers["accept-encoding"]  # a client that asks for no compression gets none
    answer = await proxy.send(request)
    assert answer.status_code == 200
    assert answer.content == b"--frame--"
    assert answer.headers["cache-control"] == "private, no-store"
    sent = store.requests[-1]
    assert sent.method == "GET"
    assert "authorization" not in sent.headers
    assert "cookie" not in sent.headers
    assert sent.headers["forwarded"] == "host=proxymage.example.org;proto=https"
    assert sent.headers["accept-encoding"] == "identity"


async def test_head_gets_the_headers_alone_from_a_get(proxy: httpx.AsyncClient, store: FakeStore) -> None:
    proxy.cookies.set(COOKIE_NAME, TOKEN)
    answer = await proxy.head(FRAME)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "multipart/related"
    assert store.requests[-1].method == "GET"


async def test_a_closed_study_is_never_asked_for(proxy: httpx.AsyncClient, store: FakeStore) -> None:
    proxy.cookies.set(COOKIE_NAME, TOKEN)
    for path in (
        f"/dicom-web/studies/{OTHER}/series",
        f"/dicom-web/studies/{OTHER}/series/{SE}/instances/{INSTANCE}/frames/1",
        f"/dicom-web/studies?StudyInstanceUID={OTHER}",
    ):
        assert (await proxy.get(path)).status_code == 404, path
    assert store.requests == []


async def test_a_study_query_keeps_available_studies_under_their_catalogued_patient(
    proxy: httpx.AsyncClient, store: FakeStore
) -> None:
    proxy.cookies.set(COOKIE_NAME, TOKEN)
    answer = await proxy.get("/dicom-web/studies", params={"PatientID": "P-1"})
    assert answer.status_code == 200
    # S under P-1 only: not the same UID under P-2, not OTHER (available for nobody).
    assert answer.json() == [_study_item(S, "P-1")]
    assert store.requests[-1].url.query.decode() == "PatientID=P-1&limit=100"
    assert (await proxy.get("/dicom-web/studies", params={"PatientID": "P*"})).status_code == 404
    assert (await proxy.get("/dicom-web/studies")).status_code == 404


async def test_views_are_audited_once_per_reader_and_study_per_minute(
    proxy: httpx.AsyncClient, auditor: RecordingAuditor
) -> None:
    proxy.cookies.set(COOKIE_NAME, TOKEN)
    for _ in range(3):
        await proxy.get(f"/dicom-web/studies/{S}/series")
        await proxy.get(FRAME)  # frames are not audited one by one
    await proxy.get(f"/dicom-web/studies/{OTHER}/series")
    assert auditor.records == [
        {
            "who": "lecteur",
            "subject": None,
            "role": "viewer",
            "action": "view_study",
            "status": 200,
            "enrolment_id": "e-1",
        },
        {
            "who": "lecteur",
            "subject": None,
            "role": "viewer",
            "action": "view_study",
            "status": 404,
            "enrolment_id": None,
        },
    ]
