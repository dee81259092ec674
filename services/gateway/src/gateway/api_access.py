"""Extensions for people: who am I (`GET /api/v1/me`, the console hides what the role cannot do) and an
enrolment's audit trail (`GET /api/v1/enrolments/{enrolment_id}/audit`, for the 3C and the DCC: right `audit`).

The trail holds ids, names of callers and times, no patient data; reading it is itself audited.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from gateway.api_common import ERRORS, READ_ERRORS, ApiContext, EnrolmentId, Reader, guarded, holding
from gateway.api_models import ErrorMessage
from gateway.audit import AuditRecord
from gateway.auth import RIGHTS, ROLE_LABELS, AnyRole, Principal, Right

AUDIT_LIMIT: Final = 500


class Me(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The person's name (signed in) or the token's name.")
    role: AnyRole
    role_label: str = Field(description="The role, in French, as the console shows it.")
    rights: list[Right] = Field(description=f"What the role allows, among {', '.join(RIGHTS)}.")
    person: bool = Field(description="True for a person signed in through OpenID Connect, false for a token.")


class AuditEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: dt.datetime
    who: str = Field(description="The person's name, or the token's name.")
    subject: str | None = Field(None, description="The identity provider's id of the person (None: a token).")
    role: str
    action: str = Field(description="read_enrolment, enrol, withdraw, select, remove_study, refresh, view_study...")
    status: int = Field(description="The HTTP status the request got.")
    event_id: str | None = None


class AuditTrail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enrolment_id: str
    entries: list[AuditEntry] = Field(description=f"Newest first, at most {AUDIT_LIMIT}.")


def _entry(record: AuditRecord) -> AuditEntry:
    status = record.get("status")
    at = record.get("at")
    return AuditEntry(
        at=at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(str(at)),
        who=str(record.get("who") or ""),
        subject=str(record["subject"]) if record.get("subject") else None,
        role=str(record.get("role") or ""),
        action=str(record.get("action") or ""),
        status=status if isinstance(status, int) else 0,
        event_id=str(record["event_id"]) if record.get("event_id") else None,
    )


def add_access_routes(router: APIRouter, context: ApiContext) -> None:
    @router.get(
        "/me",
        response_model=Me,
        responses=ERRORS,
        summary="Extension: the caller, their role and their rights",
        tags=["reads"],
    )
    async def get_me(who: Reader) -> Me:
        return Me(
            name=who.name,
            role=who.role,
            role_label=ROLE_LABELS[who.role],
            rights=list(who.rights()),
            person=who.subject is not None,
        )

    @router.get(
        "/enrolments/{enrolment_id}/audit",
        response_model=AuditTrail,
        responses={**READ_ERRORS, 403: {"model": ErrorMessage, "description": "The role lacks the right `audit`."}},
        summary="Extension: the enrolment's audit trail (who read or changed it, when); roles 3c and dcc",
        tags=["reads"],
    )
    async def get_enrolment_audit(
        enrolment_id: EnrolmentId, who: Annotated[Principal, Depends(holding("audit"))]
    ) -> AuditTrail:
        records = await guarded(context.store.audit_of(enrolment_id, AUDIT_LIMIT))
        known = bool(records) or await guarded(context.store.enrolment(enrolment_id)) is not None
        status = 200 if known else 404
        context.auditor.record(
            who=who.name,
            subject=who.subject,
            role=who.role,
            action="read_audit",
            status=status,
            enrolment_id=enrolment_id,
        )
        if not known:
            raise HTTPException(404, "unknown enrolment")
        return AuditTrail(enrolment_id=enrolment_id, entries=[_entry(record) for record in records])
