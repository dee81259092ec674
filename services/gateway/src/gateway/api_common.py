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
from proxymage_shared.mssante import DEFAULT_ALLOWED_DOMAINS

from gateway.api_models import ErrorMessage
from gateway.audit import Auditor
from gateway.auth import Principal, Right, TokenVerifier
from gateway.hub import Hub
from gateway.ports import ReadModelReader
from gateway.read_model import StoredDocumentError
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
    # Experts' addresses must match these (proxymage_shared.mssante; the setting PROXYMAGE_SMTP__ALLOWED_DOMAINS).
    expert_domains: tuple[str, ...] = DEFAULT_ALLOWED_DOMAINS
    zone: dt.tzinfo = dt.UTC  # the hospitals' time zone (`settings.timezone`): times printed for people


def json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def principal(request: Request) -> Principal:
    found = getattr(request.state, "principal", None)
    if not isinstance(found, Principal):  # only reachable if the middleware is not installed
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return found


def reader(request: Request) -> Principal:
    return principal(request)


_AUDIT_IDS: Final = ("enrolment_id", "meeting_id", "rcp_id")


def forbidden_detail(who: Principal, right: Right) -> str:
    return f"the role {who.role!r} may not do this: it needs the right {right!r} (GET /api/v1/me lists yours)"


def holding(right: Right) -> Callable[[Request], Principal]:
    """A dependency: the caller, when their role has `right` (403 otherwise)."""

    def check(request: Request) -> Principal:
        who = principal(request)
        if not who.may(right):
            # A refusal is audited too (the 3C sees who tried what), with the ids the path names.
            ids = {name: str(request.path_params[name]) for name in _AUDIT_IDS if name in request.path_params}
            context = getattr(request.app.state, "context", None)
            if isinstance(context, ApiContext):
                context.auditor.record(
                    who=who.name, subject=who.subject, role=who.role, action=f"forbidden_{right}", status=403, **ids
                )
            raise HTTPException(403, forbidden_detail(who, right))
        return who

    check.__name__ = f"holding_{right}"
    return check


Reader = Annotated[Principal, Depends(reader)]
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
        "description": (
            "The caller's role lacks the right this command needs, or a command sent with the console's cookie "
            "came from another site."
        ),
    },
    413: {"model": ErrorMessage, "description": "The body is larger than the gateway accepts (1 MiB by default)."},
}


class UnavailableError(Exception):
    """A dependency (MongoDB, Kafka) failed: answered 503."""


async def guarded(call: Awaitable[T]) -> T:
    """The answer of a read of the read model; a failure is a 503, but for a stored document the read model cannot
    read (no use trying again: `api` answers 500 and logs it)."""
    try:
        return await call
    except StoredDocumentError:
        raise
    except Exception as error:
        log.warning("dependency_failed", error=type(error).__name__)
        raise UnavailableError("the read model cannot be reached; try again") from error
