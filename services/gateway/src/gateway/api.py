"""The REST API and the SSE streams (CONTRACT.md "Gateway REST"), as a FastAPI app.

- Every `/api/` request needs a token (`Authorization: Bearer`, or the console's `proxymage_token` cookie):
  checked by `ApiAuthMiddleware` before anything else (even a malformed body gets 401 without a token).
  `viewer` tokens may read; commands need `dcc` (403 otherwise).
- Errors are JSON `{"detail": ...}`: 401, 403, 404 unknown ids, 422 invalid input, 503 when Kafka or
  MongoDB cannot be reached; an unexpected exception is logged and answered with a JSON 500 (last resort).
- Reads of an enrolment or a meeting and every command are audited (ids only).
- Commands publish the inbound event on its topic and answer 202 `{"event_id": ...}` once Kafka has it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypeVar

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyCookie, HTTPBearer
from proxymage_shared import topics
from proxymage_shared.events import (
    BusinessId,
    EnrolmentWithdrawn,
    Event,
    ImagingRefresh,
    MeetingExperts,
    PatientEnrolled,
    RcpSettings,
    StudiesSelected,
    StudyInstanceUid,
    StudyRemoved,
)
from proxymage_shared.logging import get_logger
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import filters as flt
from gateway import views
from gateway.api_models import (
    Accepted,
    Enrolment,
    EnrolmentBody,
    ErrorMessage,
    ImagingSettingsBody,
    Meeting,
    MeetingEnrolments,
    MeetingExpertsBody,
    RcpOut,
    SelectionBody,
    WithdrawalBody,
)
from gateway.audit import Auditor
from gateway.auth import COOKIE_NAME, Principal, TokenVerifier, presented_token, scope_headers
from gateway.hub import RESYNC, Hub, Message
from gateway.live import enrolment_stream, meeting_stream
from gateway.projection import get_path
from gateway.store import ReadModelStore
from gateway.viewer import ViewerLinks

log = get_logger(__name__)

API_PREFIX: Final = "/api/v1"
E = TypeVar("E", bound=Event)
Publish = Callable[[str, str, Event], Awaitable[None]]


@dataclass
class ApiContext:
    store: ReadModelStore
    hub: Hub
    verifier: TokenVerifier
    auditor: Auditor
    links: ViewerLinks
    publish: Publish  # (contract topic, key, event): publishes on the deployment's (prefixed) topic
    today: Callable[[], dt.date]
    now: Callable[[], dt.datetime]
    heartbeat_seconds: float = 15.0
    page_size: int = 200


# --- authentication ----------------------------------------------------------------------------------------


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class ApiAuthMiddleware:
    """Authenticates every `/api/` request first; puts the `Principal` in the request state."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/api/"):
            await self.app(scope, receive, send)
            return
        principal = self.verifier.verify(presented_token(scope_headers(scope)))
        if principal is None:
            response = _json_error(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


# Declared for the OpenAPI document (the middleware does the checking).
_bearer = HTTPBearer(auto_error=False, description="A token of role `dcc` (read and commands) or `viewer` (read).")
_cookie_scheme = APIKeyCookie(name=COOKIE_NAME, auto_error=False, description="The same token, set by the console.")


def principal(request: Request) -> Principal:
    found = getattr(request.state, "principal", None)
    if not isinstance(found, Principal):  # only reachable if the middleware is not installed
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return found


def reader(request: Request) -> Principal:
    return principal(request)


def commander(request: Request) -> Principal:
    who = principal(request)
    if not who.may("command"):
        raise HTTPException(403, "this token may read but not send commands")
    return who


Reader = Annotated[Principal, Depends(reader)]
Commander = Annotated[Principal, Depends(commander)]
EnrolmentId = Annotated[BusinessId, Path(description="The DCC's enrolment id.")]
MeetingId = Annotated[BusinessId, Path(description="The DCC's meeting occurrence id.")]
RcpId = Annotated[BusinessId, Path(description="The DCC's tumour-board (RCP) id.")]
StudyUid = Annotated[StudyInstanceUid, Path(description="The study's StudyInstanceUID.")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "No valid token."},
    422: {"model": ErrorMessage, "description": "Invalid input."},
    503: {"model": ErrorMessage, "description": "MongoDB or Kafka cannot be reached; try again."},
}
_READ_ERRORS = {**_ERRORS, 404: {"model": ErrorMessage, "description": "Unknown id."}}
_COMMAND_ERRORS = {**_ERRORS, 403: {"model": ErrorMessage, "description": "The token may only read."}}


class UnavailableError(Exception):
    """A dependency (MongoDB, Kafka) failed: answered 503."""


# --- the app -------------------------------------------------------------------------------------------------


def create_api(context: ApiContext, *, title: str = "Proxymage gateway", version: str = "1") -> FastAPI:
    app = FastAPI(
        title=title,
        version=version,
        description="The DCC's window on Proxymage: read model, commands and live updates (CONTRACT.md).",
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.context = context
    app.add_middleware(ApiAuthMiddleware, verifier=context.verifier)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        # A body that is not even text (FastAPI says 400) is invalid input like any other: 422.
        if error.status_code == 400:
            return _json_error(422, str(error.detail))
        return await http_exception_handler(request, error)

    @app.exception_handler(UnavailableError)
    async def unavailable(_: Request, error: UnavailableError) -> JSONResponse:
        return _json_error(503, str(error) or "a dependency is unavailable; try again")

    @app.exception_handler(flt.InvalidFilterError)
    async def invalid_filter(_: Request, error: flt.InvalidFilterError) -> JSONResponse:
        return _json_error(422, str(error))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("unexpected_error", path=request.url.path, error=type(error).__name__)
        return _json_error(500, "internal error")

    app.include_router(_router(context))
    return app


async def _guarded(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except Exception as error:
        log.warning("dependency_failed", error=type(error).__name__)
        raise UnavailableError("the read model cannot be reached; try again") from error


def _router(context: ApiContext) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, dependencies=[Security(_bearer), Security(_cookie_scheme)])

    # --- reads ------------------------------------------------------------------------------------------

    @router.get(
        "/enrolments/{enrolment_id}",
        response_model=Enrolment,
        responses=_READ_ERRORS,
        summary="An enrolment: identity outcome, filtered studies with their retrieval state, expertise",
        tags=["read"],
    )
    async def get_enrolment(
        who: Reader,
        enrolment_id: EnrolmentId,
        modalities: Annotated[
            str | None, Query(max_length=200, description="Override: `CT,MR` (empty: all modalities).")
        ] = None,
        date_from: Annotated[dt.date | None, Query(description="Override: from this date (with date_to).")] = None,
        date_to: Annotated[dt.date | None, Query(description="Override: up to this date, inclusive.")] = None,
        within_months: Annotated[int | None, Query(ge=1, le=1200, description="Override: the last N months.")] = None,
        all: Annotated[bool, Query(description="List every study (no filter).")] = False,
    ) -> Enrolment:
        document = await _guarded(context.store.enrolment(enrolment_id))
        if document is None:
            context.auditor.record(
                who=who.name, role=who.role, action="read_enrolment", status=404, enrolment_id=enrolment_id
            )
            raise HTTPException(404, "unknown enrolment")
        rcp_id = (get_path(document, "enrolment") or {}).get("rcp_id")
        rcp = await _guarded(context.store.rcp(rcp_id)) if rcp_id else None
        overrides = flt.Overrides(modalities, date_from, date_to, within_months, all)
        answer = views.enrolment_view(document, rcp, overrides, context.today(), context.links)
        context.auditor.record(
            who=who.name,
            role=who.role,
            action="read_enrolment",
            status=200,
            enrolment_id=enrolment_id,
            meeting_id=answer.meeting_id,
        )
        return answer

    @router.get(
        "/meetings/{meeting_id}/enrolments",
        response_model=MeetingEnrolments,
        responses=_READ_ERRORS,
        summary="A meeting's patients, each with a summary of its studies' states",
        tags=["read"],
    )
    async def get_meeting_enrolments(who: Reader, meeting_id: MeetingId) -> MeetingEnrolments:
        meeting = await _guarded(context.store.meeting(meeting_id))
        documents = await _guarded(context.store.enrolments_of(meeting_id, meeting, context.page_size * 10))
        status = 200 if meeting is not None or documents else 404
        context.auditor.record(
            who=who.name, role=who.role, action="read_meeting_enrolments", status=status, meeting_id=meeting_id
        )
        if status == 404:
            raise HTTPException(404, "unknown meeting")
        details = views.meeting_view(meeting_id, meeting)
        return MeetingEnrolments(
            **details.model_dump(), enrolments=[views.summary_view(document) for document in documents]
        )

    @router.get(
        "/meetings/{meeting_id}",
        response_model=Meeting,
        responses=_READ_ERRORS,
        summary="Extension: a meeting's details and on-call experts",
        tags=["read"],
    )
    async def get_meeting(who: Reader, meeting_id: MeetingId) -> Meeting:
        meeting = await _guarded(context.store.meeting(meeting_id))
        if meeting is None:
            raise HTTPException(404, "unknown meeting")
        return views.meeting_view(meeting_id, meeting)

    @router.get(
        "/meetings",
        response_model=list[Meeting],
        responses=_ERRORS,
        summary="Extension: the meetings known to the gateway (most recent first)",
        tags=["read"],
    )
    async def list_meetings(who: Reader) -> list[Meeting]:
        documents = await _guarded(context.store.meetings(context.page_size))
        meetings = [views.meeting_view(document["_id"], document) for document in documents]
        return sorted(meetings, key=lambda item: (item.date or dt.date.min, item.meeting_id), reverse=True)

    @router.get(
        "/rcps",
        response_model=list[RcpOut],
        responses=_ERRORS,
        summary="Extension: the RCPs and their default imaging filters",
        tags=["read"],
    )
    async def list_rcps(who: Reader) -> list[RcpOut]:
        documents = await _guarded(context.store.rcps(context.page_size))
        return [rcp for rcp in (views.rcp_view(document) for document in documents) if rcp is not None]

    @router.get(
        "/rcps/{rcp_id}",
        response_model=RcpOut,
        responses=_READ_ERRORS,
        summary="Extension: one RCP's default imaging filters",
        tags=["read"],
    )
    async def get_rcp(who: Reader, rcp_id: RcpId) -> RcpOut:
        document = await _guarded(context.store.rcp(rcp_id))
        rcp = views.rcp_view(document) if document is not None else None
        if rcp is None:
            raise HTTPException(404, "unknown RCP")
        return rcp

    # --- live updates -------------------------------------------------------------------------------------

    sse_responses: dict[int | str, dict[str, Any]] = {
        **_ERRORS,
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "Server-sent events."},
    }

    @router.get(
        "/enrolments/{enrolment_id}/events",
        response_class=StreamingResponse,
        responses=sse_responses,
        summary="Server-sent events: the enrolment's state changes (resume with Last-Event-ID)",
        tags=["live"],
    )
    async def enrolment_events(who: Reader, request: Request, enrolment_id: EnrolmentId) -> StreamingResponse:
        return _sse(context, request, enrolment_stream(enrolment_id))

    @router.get(
        "/meetings/{meeting_id}/events",
        response_class=StreamingResponse,
        responses=sse_responses,
        summary="Server-sent events: the state changes of the meeting and of its enrolments",
        tags=["live"],
    )
    async def meeting_events(who: Reader, request: Request, meeting_id: MeetingId) -> StreamingResponse:
        return _sse(context, request, meeting_stream(meeting_id))

    # --- commands -----------------------------------------------------------------------------------------

    async def publish(
        who: Principal,
        action: str,
        topic: str,
        key: str,
        model: type[E],
        fields: dict[str, Any],
        *,
        enrolment_id: str | None = None,
        meeting_id: str | None = None,
        rcp_id: str | None = None,
    ) -> Accepted:
        event_id = uuid.uuid4()
        try:
            # The contract model has the last word (strict JSON validation, as for a Kafka message).
            event = model.model_validate_json(
                json.dumps({**fields, "event_id": str(event_id), "occurred_at": context.now().isoformat()})
            )
        except ValidationError as error:
            raise RequestValidationError(error.errors(include_url=False, include_input=False)) from error
        try:
            await context.publish(topic, key, event)
        except Exception as error:
            log.warning("command_publish_failed", topic=topic, error=type(error).__name__)
            context.auditor.record(
                who=who.name,
                role=who.role,
                action=action,
                status=503,
                enrolment_id=enrolment_id,
                meeting_id=meeting_id,
                rcp_id=rcp_id,
            )
            raise UnavailableError("the command could not be published to Kafka; try again") from error
        context.auditor.record(
            who=who.name,
            role=who.role,
            action=action,
            status=202,
            enrolment_id=enrolment_id,
            meeting_id=meeting_id,
            rcp_id=rcp_id,
            event_id=str(event_id),
        )
        log.info("command_published", topic=topic, event_id=str(event_id), action=action, who=who.name)
        return Accepted(event_id=event_id)

    def body(model: BaseModel) -> dict[str, Any]:
        dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True)
        return dumped

    @router.put(
        "/rcps/{rcp_id}/imaging-settings",
        status_code=202,
        response_model=Accepted,
        responses=_COMMAND_ERRORS,
        summary="Publishes `dcc.rcp-settings.v1`: the RCP's default imaging filters",
        tags=["commands"],
    )
    async def put_imaging_settings(who: Commander, rcp_id: RcpId, settings: ImagingSettingsBody) -> Accepted:
        return await publish(
            who,
            "rcp_settings",
            topics.RCP_SETTINGS,
            rcp_id,
            RcpSettings,
            {**body(settings), "rcp_id": rcp_id},
            rcp_id=rcp_id,
        )

    @router.put(
        "/meetings/{meeting_id}/experts",
        status_code=202,
        response_model=Accepted,
        responses=_COMMAND_ERRORS,
        summary="Publishes `dcc.meeting-experts.v1`: the meeting and its on-call experts",
        tags=["commands"],
    )
    async def put_experts(who: Commander, meeting_id: MeetingId, experts: MeetingExpertsBody) -> Accepted:
        fields = {**body(experts), "meeting_id": meeting_id}
        return await publish(
            who,
            "meeting_experts",
            topics.MEETING_EXPERTS,
            meeting_id,
            MeetingExperts,
            fields,
            meeting_id=meeting_id,
            rcp_id=experts.rcp_id,
        )

    @router.post(
        "/enrolments",
        status_code=202,
        response_model=Accepted,
        responses=_COMMAND_ERRORS,
        summary="Publishes `dcc.patient-enrolled.v1` (a second one for the same id corrects the first)",
        tags=["commands"],
    )
    async def post_enrolment(who: Commander, enrolment: EnrolmentBody) -> Accepted:
        return await publish(
            who,
            "enrol",
            topics.PATIENT_ENROLLED,
            enrolment.enrolment_id,
            PatientEnrolled,
            body(enrolment),
            enrolment_id=enrolment.enrolment_id,
            meeting_id=enrolment.meeting_id,
            rcp_id=enrolment.rcp_id,
        )

    @router.delete(
        "/enrolments/{enrolment_id}",
        status_code=202,
        response_model=Accepted,
        responses=_COMMAND_ERRORS,
        summary="Publishes `dcc.enrolment-withdrawn.v1`: takes the patient off the meeting (CONTRACT v1.1)",
        description=(
            "Every selected study goes to `removed` (reason `enrolment_withdrawn`), no PACS is queried any more, "
            "expertise e-mails not yet sent are cancelled; `identity.status` becomes `withdrawn`. A later "
            "`POST /api/v1/enrolments` for the same id re-opens it. Published even for an enrolment the read "
            "model does not know yet (events of one enrolment may arrive in any order). The optional reason "
            '(free text, at most 500 characters) comes in a JSON body `{"reason": "…"}` or in the '
            "`reason` query parameter; the body's wins when both are given."
        ),
        tags=["commands"],
    )
    async def delete_enrolment(
        who: Commander,
        enrolment_id: EnrolmentId,
        reason: Annotated[
            str | None, Query(max_length=500, description="Why the patient is taken off the meeting (optional).")
        ] = None,
        withdrawal: Annotated[WithdrawalBody | None, Body(description="Optional: the reason, as JSON.")] = None,
    ) -> Accepted:
        given = withdrawal.reason if withdrawal is not None and withdrawal.reason is not None else reason
        fields = {"enrolment_id": enrolment_id, "reason": (given or "").strip() or None}
        return await publish(
            who,
            "withdraw",
            topics.ENROLMENT_WITHDRAWN,
            enrolment_id,
            EnrolmentWithdrawn,
            fields,
            enrolment_id=enrolment_id,
        )

    @router.put(
        "/enrolments/{enrolment_id}/selection",
        status_code=202,
        response_model=Accepted,
        responses=_COMMAND_ERRORS,
        summary="Publishes `dcc.studies-selected.v1`: the full current selection",
        tags=["commands"],
    )
    async def put_selection(who: Commander, enrolment_id: EnrolmentId, selection: SelectionBody) -> Accepted:
        fields = {**body(selection), "enrolment_id": enrolment_id}
        return await publish(
            who, "select", topics.STUDIES_SELECTED, enrolment_id, StudiesSelected, fields, enrolment_id=enrolment_id
        )

    @router.delete(
        "/enrolments/{enrolment_id}/studies/{study_instance_uid}",
        status_code=202,
        response_model=Accepted,
        responses=_COMMAND_ERRORS,
        summary="Publishes `dcc.study-removed.v1`",
        tags=["commands"],
    )
    async def delete_study(who: Commander, enrolment_id: EnrolmentId, study_instance_uid: StudyUid) -> Accepted:
        fields = {"enrolment_id": enrolment_id, "study_instance_uid": study_instance_uid}
        return await publish(
            who, "remove_study", topics.STUDY_REMOVED, enrolment_id, StudyRemoved, fields, enrolment_id=enrolment_id
        )

    @router.post(
        "/enrolments/{enrolment_id}/refresh",
        status_code=202,
        response_model=Accepted,
        responses=_COMMAND_ERRORS,
        summary="Publishes `dcc.imaging-refresh.v1`: re-list the studies, retry waiting ones now",
        tags=["commands"],
    )
    async def post_refresh(who: Commander, enrolment_id: EnrolmentId) -> Accepted:
        return await publish(
            who,
            "refresh",
            topics.IMAGING_REFRESH,
            enrolment_id,
            ImagingRefresh,
            {"enrolment_id": enrolment_id},
            enrolment_id=enrolment_id,
        )

    return router


# --- SSE -----------------------------------------------------------------------------------------------------


def _sse(context: ApiContext, request: Request, stream: str) -> StreamingResponse:
    last_event_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return StreamingResponse(
        _event_stream(context.hub, stream, last_event_id, context.heartbeat_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resync(stream: str) -> bytes:
    # No id: the client keeps its Last-Event-ID until a real message arrives.
    return f"event: {RESYNC}\ndata: {json.dumps({'stream': stream, 'reload': True})}\n\n".encode()


async def _event_stream(hub: Hub, stream: str, last_event_id: str | None, heartbeat: float) -> AsyncIterator[bytes]:
    with hub.subscribe(stream, last_event_id) as subscription:
        yield b"retry: 3000\n: connected\n\n"
        if subscription.resync:
            yield _resync(stream)
        for message in subscription.backlog:
            yield message.encode()
        listener = subscription.listener
        while True:
            if listener.overflowed:
                while not listener.queue.empty():
                    listener.queue.get_nowait()
                listener.overflowed = False
                yield _resync(stream)
            item: Message | None
            try:
                # Waited for in this task (`asyncio.wait_for` would start a task per message: one more turn of
                # the event loop between the projection's write and the client).
                async with asyncio.timeout(heartbeat):
                    item = await listener.queue.get()
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if item is None:
                return
            yield item.encode()
