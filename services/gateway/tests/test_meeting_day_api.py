"""The meeting day's REST extensions over an in-memory read model (no server): the sheet as JSON and PDF, the
next days' meetings with studies not available, 404 for an unknown meeting, every read audited (ids only)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pypdf
import pytest

from .fakes import FakeReadModel, reading_client
from .test_meeting_day import half_available
from .test_projection import UIDS, fold

AuditRecord = dict[str, Any]
MEETING_DAY = dt.date(2023, 3, 22)  # the meeting date of test_projection's events


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, list[AuditRecord]]]:
    _, events = half_available("Hélène", "00000000-0000-0000-0000-0000000000ac", expertise_requested=False)
    store = FakeReadModel()
    store.documents.update(fold(events))  # type: ignore[arg-type]
    now = dt.datetime(2023, 3, 21, 13, 0, tzinfo=dt.UTC)
    async with reading_client(store, today=MEETING_DAY - dt.timedelta(days=1), now=now) as reading:
        yield reading


async def _audited(audited: list[AuditRecord], action: str) -> dict[str, Any]:
    for record in audited:
        if record["action"] == action:
            return record
    raise AssertionError(f"no audit record {action!r} in {audited}")


async def test_the_sheet_as_json(client: tuple[httpx.AsyncClient, list[AuditRecord]]) -> None:
    http, _ = client
    answer = await http.get("/api/v1/meetings/m-1/sheet")
    assert answer.status_code == 200
    sheet = answer.json()
    assert sheet["meeting_id"] == "m-1"
    (patient,) = sheet["patients"]
    assert patient["patient"]["first_name"] == "Hélène"
    assert patient["imaging_state"] == "waiting"
    assert {study["study_instance_uid"]: study["status"] for study in patient["studies"]} == {
        UIDS[0]: "available",
        UIDS[1]: "queued",
    }
    assert (await http.get("/api/v1/meetings/m-inconnue/sheet")).status_code == 404
    assert (await http.get("/api/v1/meetings/m-1/sheet", headers={"Authorization": "Bearer faux"})).status_code == 401


async def test_the_sheet_as_pdf(client: tuple[httpx.AsyncClient, list[AuditRecord]]) -> None:
    http, _ = client
    answer = await http.get("/api/v1/meetings/m-1/sheet.pdf")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["content-disposition"] == 'attachment; filename="fiche-m-1.pdf"'
    assert answer.headers["cache-control"] == "no-store"
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(answer.content)).pages)
    assert "B Hélène" in text
    assert "éditée le 21/03/2023 à 13:00" in text  # the context's zone (UTC here)
    assert (await http.get("/api/v1/meetings/m-inconnue/sheet.pdf")).status_code == 404


async def test_the_next_days_meetings_with_studies_not_available(
    client: tuple[httpx.AsyncClient, list[AuditRecord]],
) -> None:
    http, _ = client
    answer = await http.get("/api/v1/imaging-gaps")  # today is the day before the meeting
    assert answer.status_code == 200
    (gap,) = answer.json()
    assert gap["meeting_id"] == "m-1"
    assert gap["date"] == MEETING_DAY.isoformat()
    (patient,) = gap["patients"]
    assert [study["study_instance_uid"] for study in patient["studies"]] == [UIDS[1]]
    assert (await http.get("/api/v1/imaging-gaps", params={"days": 0})).json() == []  # the meeting is tomorrow
    assert (await http.get("/api/v1/imaging-gaps", params={"days": 15})).status_code == 422


async def test_every_read_is_audited_with_ids_only(client: tuple[httpx.AsyncClient, list[AuditRecord]]) -> None:
    http, audited = client
    await http.get("/api/v1/meetings/m-1/sheet")
    await http.get("/api/v1/meetings/m-1/sheet.pdf")
    await http.get("/api/v1/imaging-gaps")
    await http.get("/api/v1/meetings/m-inconnue/sheet")
    sheet = await _audited(audited, "read_meeting_sheet")
    assert (sheet["who"], sheet["role"], sheet["status"], sheet["meeting_id"]) == (
        "lecture-essai",
        "viewer",
        200,
        "m-1",
    )
    assert (await _audited(audited, "export_meeting_sheet"))["meeting_id"] == "m-1"
    assert (await _audited(audited, "read_imaging_gaps"))["status"] == 200
    assert any(record["status"] == 404 and record["meeting_id"] == "m-inconnue" for record in audited)
    assert "Hélène" not in repr(audited)
