"""The REST reads (CONTRACT.md "Gateway REST"): an enrolment, a meeting's patients, and the extensions (meetings,
RCPs). Reads of an enrolment or of a meeting's patients are audited (ids only)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Query

from gateway import filters as flt
from gateway import views
from gateway.api_common import ERRORS, READ_ERRORS, ApiContext, EnrolmentId, MeetingId, RcpId, Reader, guarded
from gateway.api_models import Enrolment, Meeting, MeetingEnrolments, RcpOut
from gateway.auth import Principal

Endpoint = TypeVar("Endpoint", bound=Callable[..., object])
Modalities = Annotated[
    str | None,
    Query(
        max_length=200,
        pattern=flt.MODALITY_LIST_PATTERN,
        description="Override: modality codes separated by commas, e.g. `CT,MR` (any case; empty: all modalities).",
    ),
]
DateFrom = Annotated[
    dt.date | None,
    Query(
        description="Override: from this date, inclusive. Only with `date_to` (not after it), not with `within_months`."
    ),
]
DateTo = Annotated[
    dt.date | None,
    Query(description="Override: up to this date, inclusive. Only with `date_from`, not with `within_months`."),
]
WithinMonths = Annotated[
    int | None,
    Query(ge=1, le=1200, description="Override: the last N months. Not with `date_from`/`date_to`."),
]
AllStudies = Annotated[bool, Query(description="List every study (no filter).")]


async def read_enrolment(context: ApiContext, who: Principal, enrolment_id: str, overrides: flt.Overrides) -> Enrolment:
    """The enrolment's answer (404 when unknown), audited."""
    record = await guarded(context.store.enrolment(enrolment_id))
    if record is None:
        context.auditor.record(
            who=who.name,
            subject=who.subject,
            role=who.role,
            action="read_enrolment",
            status=404,
            enrolment_id=enrolment_id,
        )
        raise HTTPException(404, "unknown enrolment")
    rcp_id = record.enrolment.rcp_id if record.enrolment is not None else None
    rcp = await guarded(context.store.rcp(rcp_id)) if rcp_id else None
    answer = views.enrolment_view(record, rcp, overrides, context.today(), context.links)
    context.auditor.record(
        who=who.name,
        subject=who.subject,
        role=who.role,
        action="read_enrolment",
        status=200,
        enrolment_id=enrolment_id,
        meeting_id=answer.meeting_id,
    )
    return answer


async def read_meeting_enrolments(context: ApiContext, who: Principal, meeting_id: str) -> MeetingEnrolments:
    """The meeting's patients (404 when neither the meeting nor any enrolment of it is known), audited."""
    meeting = await guarded(context.store.meeting(meeting_id))
    records = await guarded(context.store.enrolments_of(meeting_id, meeting, context.page_size * 10))
    status = 200 if meeting is not None or records else 404
    context.auditor.record(
        who=who.name,
        subject=who.subject,
        role=who.role,
        action="read_meeting_enrolments",
        status=status,
        meeting_id=meeting_id,
    )
    if status == 404:
        raise HTTPException(404, "unknown meeting")
    details = views.meeting_view(meeting_id, meeting)
    return MeetingEnrolments(**details.model_dump(), enrolments=[views.summary_view(record) for record in records])


async def read_meeting(context: ApiContext, meeting_id: str) -> Meeting:
    meeting = await guarded(context.store.meeting(meeting_id))
    if meeting is None:
        raise HTTPException(404, "unknown meeting")
    return views.meeting_view(meeting_id, meeting)


async def read_meetings(context: ApiContext) -> list[Meeting]:
    """The known meetings, most recent first."""
    records = await guarded(context.store.meetings(context.page_size))
    meetings = [views.meeting_view(record.meeting_id, record) for record in records]
    return sorted(meetings, key=lambda item: (item.date or dt.date.min, item.meeting_id), reverse=True)


async def read_rcps(context: ApiContext) -> list[RcpOut]:
    records = await guarded(context.store.rcps(context.page_size))
    return [rcp for rcp in (views.rcp_view(record) for record in records) if rcp is not None]


async def read_rcp(context: ApiContext, rcp_id: str) -> RcpOut:
    record = await guarded(context.store.rcp(rcp_id))
    rcp = views.rcp_view(record) if record is not None else None
    if rcp is None:
        raise HTTPException(404, "unknown RCP")
    return rcp


def _get(
    router: APIRouter, path: str, model: object, summary: str, *, by_id: bool = True
) -> Callable[[Endpoint], Endpoint]:
    """A read route's decorator (tag `read`); `by_id`: the path names an id (404 when unknown)."""
    responses = READ_ERRORS if by_id else ERRORS
    return router.get(path, response_model=model, responses=responses, summary=summary, tags=["read"])


def add_read_routes(router: APIRouter, context: ApiContext) -> None:
    # The endpoints have no docstring: FastAPI would publish it as the operation's description.
    @_get(
        router,
        "/enrolments/{enrolment_id}",
        Enrolment,
        "An enrolment: identity outcome, filtered studies with their retrieval state, expertise",
    )
    async def get_enrolment(
        who: Reader,
        enrolment_id: EnrolmentId,
        modalities: Modalities = None,
        date_from: DateFrom = None,
        date_to: DateTo = None,
        within_months: WithinMonths = None,
        all: AllStudies = False,
    ) -> Enrolment:
        overrides = flt.Overrides(modalities, date_from, date_to, within_months, all)
        return await read_enrolment(context, who, enrolment_id, overrides)

    @_get(
        router,
        "/meetings/{meeting_id}/enrolments",
        MeetingEnrolments,
        "A meeting's patients, each with a summary of its studies' states",
    )
    async def get_meeting_enrolments(who: Reader, meeting_id: MeetingId) -> MeetingEnrolments:
        return await read_meeting_enrolments(context, who, meeting_id)

    @_get(router, "/meetings/{meeting_id}", Meeting, "Extension: a meeting's details and on-call experts")
    async def get_meeting(who: Reader, meeting_id: MeetingId) -> Meeting:
        return await read_meeting(context, meeting_id)

    @_get(
        router,
        "/meetings",
        list[Meeting],
        "Extension: the meetings known to the gateway (most recent first)",
        by_id=False,
    )
    async def list_meetings(who: Reader) -> list[Meeting]:
        return await read_meetings(context)

    @_get(router, "/rcps", list[RcpOut], "Extension: the RCPs and their default imaging filters", by_id=False)
    async def list_rcps(who: Reader) -> list[RcpOut]:
        return await read_rcps(context)

    @_get(router, "/rcps/{rcp_id}", RcpOut, "Extension: one RCP's default imaging filters")
    async def get_rcp(who: Reader, rcp_id: RcpId) -> RcpOut:
        return await read_rcp(context, rcp_id)
