"""What the REST routes share (`gateway.api`): the context, the principals, the path parameters, the documented
error answers and the 503 of an unreachable dependency."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypeVar

from fastapi import Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from proxymage_shared.events import BusinessId, Event, StudyInstanceUid
from proxymage_shared.logging import get_logger

from gateway.api_models import ErrorMessage
from gateway.audit import Auditor
from gateway.auth import Principal, TokenVerifier
from gateway.hub import Hub
from gateway.ports import ReadModelReader
from gateway.viewer import ViewerLinks

log = get_logger("gateway.api")

API_PREFIX: Final = "/api/v1"
Publish = Callable[[str, str, Event], Awaitable[None]]
T = TypeVar("T")


@dataclass
class ApiContext:
    store: ReadModelReader
    hub: Hub
    verifier: TokenVerifier
    auditor: Auditor
    links: ViewerLinks
    publish: Publish  # (contract topic, key, event): publishes on the deployment's (prefixed) topic
    today: Callable[[], dt.date]
    now: Callable[[], dt.datetime]
    heartbeat_seconds: float = 15.0
    page_size: int = 200


def json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


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

ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    # Before the gateway sees it: uvicorn answers a request that is not valid HTTP/1.1 (e.g. a Content-Length
    # that is not a number), in plain text.
    400: {
        "description": "The request is not valid HTTP (answered by the HTTP server, in plain text).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    401: {"model": ErrorMessage, "description": "No valid token."},
    422: {"model": ErrorMessage, "description": "Invalid input."},
    503: {"model": ErrorMessage, "description": "MongoDB or Kafka cannot be reached; try again."},
}
READ_ERRORS: Final = {**ERRORS, 404: {"model": ErrorMessage, "description": "Unknown id."}}
COMMAND_ERRORS: Final = {
    **ERRORS,
    403: {
        "model": ErrorMessage,
        "description": "The token may only read, or a command sent with the console's cookie came from another site.",
    },
    413: {"model": ErrorMessage, "description": "The body is larger than the gateway accepts (1 MiB by default)."},
}


class UnavailableError(Exception):
    """A dependency (MongoDB, Kafka) failed: answered 503."""


async def guarded(call: Awaitable[T]) -> T:
    """The answer of a read of the read model; a failure is a 503."""
    try:
        return await call
    except Exception as error:
        log.warning("dependency_failed", error=type(error).__name__)
        raise UnavailableError("the read model cannot be reached; try again") from error
