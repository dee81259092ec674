"""Extension routes of the meeting day (issue 15 point 1): a meeting's printable sheet, as JSON and as a PDF, and
the meetings of the next days that still have selected studies not available.

Every route reads like `GET /api/v1/meetings/{id}/enrolments` (any token may read) and is audited with ids only.

Why a read route for the home page's block rather than the console assembling it: the reason of each study not
available is on the enrolment's own answer, so the console would need one request per meeting and then one per
patient; here the gateway reads the few meetings of the window and their enrolments once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from gateway import filters as flt
from gateway import meeting_day, views
from gateway.api_common import ERRORS, READ_ERRORS, ApiContext, MeetingId, Reader, guarded
from gateway.auth import Principal
from gateway.read_model import MeetingRecord
from gateway.sheet_pdf import render_sheet_pdf

_EVERY_STUDY: Final = flt.Overrides(all=True)  # selected studies are listed whatever the filter; no filter is cheapest
# A file name every browser keeps as it is.
_UNSAFE_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")
Days = Annotated[
    int,
    Query(ge=0, le=14, description="Meetings dated from today to today plus this many days (2: the next 48 hours)."),
]
_PDF_ANSWER: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "The meeting sheet as a PDF document (A4, French).",
        "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
    },
    **READ_ERRORS,
}


async def _sheet(
    context: ApiContext, meeting_id: str, meeting: MeetingRecord | None, records_known: bool = False
) -> meeting_day.MeetingSheet | None:
    """The meeting's sheet, or None when neither the meeting nor any enrolment of it is known."""
    records = await guarded(context.store.enrolments_of(meeting_id, meeting, context.page_size * 10))
    if meeting is None and not records and not records_known:
        return None
    today = context.today()
    patients = [
        meeting_day.sheet_patient(
            views.enrolment_view(record, None, _EVERY_STUDY, today, context.links), views.study_states(record)
        )
        for record in records
    ]
    return meeting_day.meeting_sheet(views.meeting_view(meeting_id, meeting), patients)


async def read_sheet(context: ApiContext, who: Principal, meeting_id: str, action: str) -> meeting_day.MeetingSheet:
    meeting = await guarded(context.store.meeting(meeting_id))
    sheet = await _sheet(context, meeting_id, meeting)
    status = 404 if sheet is None else 200
    context.auditor.record(who=who.name, role=who.role, action=action, status=status, meeting_id=meeting_id)
    if sheet is None:
        raise HTTPException(404, "unknown meeting")
    return sheet


async def read_imaging_gaps(context: ApiContext, who: Principal, days: int) -> list[meeting_day.ImagingGap]:
    first_day = context.today()
    last_day = first_day + dt.timedelta(days=days)
    records = await guarded(context.store.meetings_dated(first_day, last_day, context.page_size))
    sheets = []
    for record in records:
        if meeting_day.in_window(views.meeting_view(record.meeting_id, record), first_day, last_day):
            sheet = await _sheet(context, record.meeting_id, record, records_known=True)
            if sheet is not None:
                sheets.append(sheet)
    context.auditor.record(who=who.name, role=who.role, action="read_imaging_gaps", status=200)
    return meeting_day.imaging_gaps(sheets, first_day, last_day)


def _file_name(meeting_id: str) -> str:
    return f"fiche-{_UNSAFE_FILE_NAME.sub('-', meeting_id)}.pdf"


def add_meeting_day_routes(router: APIRouter, context: ApiContext) -> None:
    # The endpoints have no docstring: FastAPI would publish it as the operation's description.
    @router.get(
        "/meetings/{meeting_id}/sheet",
        response_model=meeting_day.MeetingSheet,
        responses=READ_ERRORS,
        summary="Extension: a meeting's printable sheet: every patient with each selected study's state",
        tags=["read"],
    )
    async def get_meeting_sheet(who: Reader, meeting_id: MeetingId) -> meeting_day.MeetingSheet:
        return await read_sheet(context, who, meeting_id, "read_meeting_sheet")

    @router.get(
        "/meetings/{meeting_id}/sheet.pdf",
        response_class=Response,
        responses=_PDF_ANSWER,
        summary="Extension: a meeting's printable sheet as a PDF document",
        tags=["read"],
    )
    async def get_meeting_sheet_pdf(who: Reader, meeting_id: MeetingId) -> Response:
        sheet = await read_sheet(context, who, meeting_id, "export_meeting_sheet")
        printed_at = context.now().astimezone(context.zone)
        # About 20 ms per patient of CPU (fpdf2's table layout): off the event loop, which serves SSE and Kafka.
        document = await asyncio.to_thread(render_sheet_pdf, sheet, printed_at)
        return Response(
            document,
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'attachment; filename="{_file_name(meeting_id)}"',
                "Cache-Control": "no-store",  # patient identities: never kept by a proxy or the browser's cache
            },
        )

    @router.get(
        "/imaging-gaps",
        response_model=list[meeting_day.ImagingGap],
        responses=ERRORS,
        summary="Extension: the meetings of the next days whose selected studies are not all available, with why",
        tags=["read"],
    )
    async def get_imaging_gaps(who: Reader, days: Days = 2) -> list[meeting_day.ImagingGap]:
        return await read_imaging_gaps(context, who, days)
