"""The DICOMweb proxy's pure rules: which paths and queries pass, and the access cache (no servers)."""

from __future__ import annotations

import asyncio

import pytest
from gateway.dicomweb import StudyAccess, parse, study_query
from proxymage_shared.mongo import Document

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


def test_a_study_query_must_narrow_to_a_study_or_a_patient() -> None:
    assert study_query("") is None
    assert study_query("limit=10&offset=0") is None
    assert study_query("PatientID=*") is None
    assert study_query("PatientName=DOE*") is None
    assert study_query("StudyInstanceUID=../x") is None
    named = study_query(f"StudyInstanceUID={S}&includefield=00081030")
    assert named is not None
    assert named.study_uids == (S,)
    several = study_query(f"StudyInstanceUID={S},{SE}")
    assert several is not None
    assert several.study_uids == (S, SE)
    patient = study_query("PatientID=P-1")
    assert patient is not None
    assert patient.study_uids == ()
    assert "PatientID=P-1" in patient.query


def _enrolment(uid: str, patient_id: str, status: str) -> Document:
    """An enrolment of the read model with `uid` selected and catalogued under `patient_id`."""
    key = uid.replace(".", "_")
    return {
        "_id": "e-1",
        "catalogue": {
            "order": "1",
            "studies": [{"study_instance_uid": uid, "pacs_patient": {"patient_id": patient_id, "issuer": "X"}}],
        },
        "identity": {"order": "1", "status": "matched", "pacs_patients": [{"patient_id": patient_id, "issuer": "X"}]},
        "selection": {"order": "2", "occurred_at": "2026-01-01T00:00:00", "study_instance_uids": [uid]},
        "retrieval": {key: {"order": "3", "status": status, "occurred_at": "2026-01-01T00:00:01"}},
    }


class Lookups:
    def __init__(self, documents: list[Document]) -> None:
        self.documents = documents
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, uid: str) -> list[Document]:
        self.calls += 1
        await self.gate.wait()
        return list(self.documents)


async def test_access_follows_the_enrolments_state_and_is_cached_until_forgotten() -> None:
    lookups = Lookups([_enrolment(S, "P-1", "available")])
    now = [0.0]
    access = StudyAccess(lookups, ttl_seconds=5, clock=lambda: now[0])
    assert await access.patient_ids(S) == {"P-1"}
    assert await access.patient_ids(S) == {"P-1"}
    assert lookups.calls == 1
    lookups.documents = [_enrolment(S, "P-1", "retrieving")]
    access.forget()  # the projector applied an enrolment change
    assert await access.patient_ids(S) == frozenset()
    lookups.documents = [_enrolment(S, "P-1", "available")]
    now[0] = 6.0  # past the TTL: asked again even without a change seen
    assert await access.patient_ids(S) == {"P-1"}
    assert lookups.calls == 3


async def test_a_study_not_selected_or_not_complete_is_not_viewable() -> None:
    for status in ("queued", "retrieving", "not_yet_available", "failed", "removed"):
        access = StudyAccess(Lookups([_enrolment(S, "P-1", status)]))
        assert await access.patient_ids(S) == frozenset(), status
    unselected = _enrolment(S, "P-1", "available")
    unselected["selection"]["study_instance_uids"] = [SE]
    assert await StudyAccess(Lookups([unselected])).patient_ids(S) == frozenset()


async def test_a_withdrawn_enrolment_closes_its_studies() -> None:
    withdrawn = _enrolment(S, "P-1", "available")
    withdrawn["withdrawal"] = {"order": "4", "occurred_at": "2026-01-01T00:00:02"}
    assert await StudyAccess(Lookups([withdrawn])).patient_ids(S) == frozenset()


async def test_concurrent_requests_share_one_lookup_and_a_change_meanwhile_is_not_cached() -> None:
    lookups = Lookups([_enrolment(S, "P-1", "available")])
    lookups.gate.clear()
    access = StudyAccess(lookups)
    waiting = [asyncio.ensure_future(access.patient_ids(S)) for _ in range(50)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert lookups.calls == 1
    access.forget()  # a withdrawal projected while the lookup runs
    lookups.gate.set()
    assert {frozenset(found) for found in await asyncio.gather(*waiting)} == {frozenset({"P-1"})}
    lookups.documents = []
    assert await access.patient_ids(S) == frozenset()  # the stale answer was not kept
    assert lookups.calls == 2
