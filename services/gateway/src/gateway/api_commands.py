"""The REST commands (CONTRACT.md "Gateway REST"): each publishes one inbound event on its topic and answers 202
`{"event_id": ...}` once Kafka has it; audited (ids only). The routes are built from one table, `COMMANDS`."""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.exceptions import RequestValidationError
from proxymage_shared import topics
from proxymage_shared.events import (
    EnrolmentWithdrawn,
    Event,
    ImagingRefresh,
    MeetingExperts,
    PatientEnrolled,
    RcpSettings,
    StudiesSelected,
    StudyRemoved,
)
from pydantic import BaseModel, ValidationError

from gateway.api_common import (
    COMMAND_ERRORS,
    ApiContext,
    EnrolmentId,
    MeetingId,
    RcpId,
    StudyUid,
    UnavailableError,
    holding,
    log,
)
from gateway.api_models import (
    Accepted,
    EnrolmentBody,
    ImagingSettingsBody,
    MeetingExpertsBody,
    SelectionBody,
    WithdrawalBody,
)
from gateway.auth import ROLE_RIGHTS, Principal, Right
from gateway.experts import refused_experts

Arguments = Mapping[str, Any]  # an endpoint's arguments by name (path, query and body parameters)
Fields = dict[str, Any]  # an event's fields, as JSON
AuditId = Literal["enrolment_id", "meeting_id", "rcp_id"]


def _parameter(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def body_and_path(arguments: Arguments) -> Fields:
    """The event's fields: the JSON body's, then the path parameters."""
    fields: Fields = {}
    for value in arguments.values():
        if isinstance(value, BaseModel):
            fields.update(value.model_dump(mode="json", by_alias=True))
    return {**fields, **{name: value for name, value in arguments.items() if not isinstance(value, BaseModel)}}


def withdrawal_fields(arguments: Arguments) -> Fields:
    """The withdrawal's reason comes in the JSON body or in the query; the body's wins when both are given."""
    withdrawal: WithdrawalBody | None = arguments["withdrawal"]
    given = withdrawal.reason if withdrawal is not None and withdrawal.reason is not None else arguments["reason"]
    return {"enrolment_id": arguments["enrolment_id"], "reason": (given or "").strip() or None}


@dataclass(frozen=True, slots=True)
class Command:
    """One command route: how it is called, what it publishes and what the audit trail says of it."""

    name: str  # the endpoint's name: the OpenAPI operation id is made of it
    method: Literal["POST", "PUT", "DELETE"]
    path: str
    summary: str
    parameters: tuple[inspect.Parameter, ...]  # after the principal, in this order
    action: str  # the audit's action
    topic: str
    event: type[Event]
    key: str  # the event field that is the Kafka key
    audit: tuple[AuditId, ...]  # the event fields the audit entry names
    right: Right  # what the caller's role must allow (gateway.auth.ROLE_RIGHTS)
    fields: Callable[[Arguments], Fields] = body_and_path
    description: str | None = None
    # Refuses (RequestValidationError, 422) what the event's model admits but this gateway does not.
    check: Callable[[ApiContext, Fields], None] | None = None


MSSANTE_REFUSAL: Final = (
    "Adresse refusée : ce n'est pas une adresse de messagerie sécurisée de santé (MSSanté). Domaines admis : {}"
)


def secure_mail_only(context: ApiContext, fields: Fields) -> None:
    """An on-call expert's address must be MSSanté's (proxymage_shared.mssante): refused at entry with a French
    message, rather than accepted and refused at sending time by the expert-notifier."""
    refused = refused_experts(fields, context.expert_domains)
    if refused:
        message = MSSANTE_REFUSAL.format(", ".join(context.expert_domains))
        raise RequestValidationError(
            [{"type": "mssante_domain", "loc": ("body", name, "email"), "msg": message} for name in refused]
        )


ENROLMENT_ID: Final = _parameter("enrolment_id", EnrolmentId)
WITHDRAWAL_DESCRIPTION: Final = (
    "Every selected study goes to `removed` (reason `enrolment_withdrawn`), no PACS is queried any more, "
    "expertise e-mails not yet sent are cancelled; `identity.status` becomes `withdrawn`. A later "
    "`POST /api/v1/enrolments` for the same id re-opens it. Published even for an enrolment the read "
    "model does not know yet (events of one enrolment may arrive in any order). The optional reason "
    '(free text, at most 500 characters) comes in a JSON body `{"reason": "…"}` or in the '
    "`reason` query parameter; the body's wins when both are given."
)
WithdrawalReason = Annotated[
    str | None, Query(max_length=500, description="Why the patient is taken off the meeting (optional).")
]
OptionalWithdrawal = Annotated[WithdrawalBody | None, Body(description="Optional: the reason, as JSON.")]

COMMANDS: Final[tuple[Command, ...]] = (
    Command(
        "put_imaging_settings",
        "PUT",
        "/rcps/{rcp_id}/imaging-settings",
        "Publishes `dcc.rcp-settings.v1`: the RCP's default imaging filters",
        (_parameter("rcp_id", RcpId), _parameter("settings", ImagingSettingsBody)),
        "rcp_settings",
        topics.RCP_SETTINGS,
        RcpSettings,
        key="rcp_id",
        audit=("rcp_id",),
        right="settings",
    ),
    Command(
        "put_experts",
        "PUT",
        "/meetings/{meeting_id}/experts",
        "Publishes `dcc.meeting-experts.v1`: the meeting and its on-call experts",
        (_parameter("meeting_id", MeetingId), _parameter("experts", MeetingExpertsBody)),
        "meeting_experts",
        topics.MEETING_EXPERTS,
        MeetingExperts,
        key="meeting_id",
        audit=("meeting_id", "rcp_id"),
        description="Extension: an expert's address outside the allowed MSSanté domains is refused (422).",
        check=secure_mail_only,
        right="settings",
    ),
    Command(
        "post_enrolment",
        "POST",
        "/enrolments",
        "Publishes `dcc.patient-enrolled.v1` (a second one for the same id corrects the first)",
        (_parameter("enrolment", EnrolmentBody),),
        "enrol",
        topics.PATIENT_ENROLLED,
        PatientEnrolled,
        key="enrolment_id",
        audit=("enrolment_id", "meeting_id", "rcp_id"),
        right="enrol",
    ),
    Command(
        "delete_enrolment",
        "DELETE",
        "/enrolments/{enrolment_id}",
        "Publishes `dcc.enrolment-withdrawn.v1`: takes the patient off the meeting (CONTRACT v1.1)",
        (
            ENROLMENT_ID,
            _parameter("reason", WithdrawalReason, None),
            _parameter("withdrawal", OptionalWithdrawal, None),
        ),
        "withdraw",
        topics.ENROLMENT_WITHDRAWN,
        EnrolmentWithdrawn,
        key="enrolment_id",
        audit=("enrolment_id",),
        right="enrol",
        fields=withdrawal_fields,
        description=WITHDRAWAL_DESCRIPTION,
    ),
    Command(
        "put_selection",
        "PUT",
        "/enrolments/{enrolment_id}/selection",
        "Publishes `dcc.studies-selected.v1`: the full current selection",
        (ENROLMENT_ID, _parameter("selection", SelectionBody)),
        "select",
        topics.STUDIES_SELECTED,
        StudiesSelected,
        key="enrolment_id",
        audit=("enrolment_id",),
        right="select",
    ),
    Command(
        "delete_study",
        "DELETE",
        "/enrolments/{enrolment_id}/studies/{study_instance_uid}",
        "Publishes `dcc.study-removed.v1`",
        (ENROLMENT_ID, _parameter("study_instance_uid", StudyUid)),
        "remove_study",
        topics.STUDY_REMOVED,
        StudyRemoved,
        key="enrolment_id",
        audit=("enrolment_id",),
        right="select",
    ),
    Command(
        "post_refresh",
        "POST",
        "/enrolments/{enrolment_id}/refresh",
        "Publishes `dcc.imaging-refresh.v1`: re-list the studies, retry waiting ones now",
        (ENROLMENT_ID,),
        "refresh",
        topics.IMAGING_REFRESH,
        ImagingRefresh,
        key="enrolment_id",
        audit=("enrolment_id",),
        right="enrol",
    ),
)


def _event(context: ApiContext, command: Command, fields: Fields, event_id: uuid.UUID) -> Event:
    """The event to publish; the contract model has the last word (strict JSON validation, as for a Kafka
    message): an invalid one is a 422."""
    document = {**fields, "event_id": str(event_id), "occurred_at": context.now().isoformat()}
    try:
        return command.event.model_validate_json(json.dumps(document))
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False, include_input=False)) from error


async def publish(context: ApiContext, who: Principal, command: Command, arguments: Arguments) -> Accepted:
    """Publishes the command's event and audits it (503 when Kafka does not take it)."""
    fields = command.fields(arguments)
    if command.check is not None:
        command.check(context, fields)
    event_id = uuid.uuid4()
    event = _event(context, command, fields, event_id)
    ids = {name: fields.get(name) for name in command.audit}
    try:
        await context.publish(command.topic, str(fields[command.key]), event)
    except Exception as error:
        log.warning("command_publish_failed", topic=command.topic, error=type(error).__name__)
        context.auditor.record(
            who=who.name, subject=who.subject, role=who.role, action=command.action, status=503, **ids
        )
        raise UnavailableError("the command could not be published to Kafka; try again") from error
    context.auditor.record(
        who=who.name,
        subject=who.subject,
        role=who.role,
        action=command.action,
        status=202,
        event_id=str(event_id),
        **ids,
    )
    log.info("command_published", topic=command.topic, event_id=str(event_id), action=command.action, who=who.name)
    return Accepted(event_id=event_id)


def endpoint(context: ApiContext, command: Command) -> Callable[..., Any]:
    """The route's endpoint: FastAPI reads its parameters from `__signature__` (the principal, then the table's).
    It has no docstring: FastAPI would publish it as the operation's description."""

    async def call(who: Principal, **arguments: Any) -> Accepted:
        return await publish(context, who, command, arguments)

    call.__name__ = call.__qualname__ = command.name
    call.__doc__ = None
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [_parameter("who", Annotated[Principal, Depends(holding(command.right))]), *command.parameters],
        return_annotation=Accepted,
    )
    return call


def _with_right(command: Command) -> str:
    """The operation's description, with who may call it (roles holding the command's right)."""
    roles = ", ".join(f"`{role}`" for role, rights in ROLE_RIGHTS.items() if command.right in rights)
    allowed = f"Needs the right `{command.right}` (roles {roles}; 403 otherwise)."
    return f"{command.description}\n\n{allowed}" if command.description else allowed


def add_command_routes(router: APIRouter, context: ApiContext) -> None:
    for command in COMMANDS:
        router.add_api_route(
            command.path,
            endpoint(context, command),
            methods=[command.method],
            status_code=202,
            response_model=Accepted,
            responses=COMMAND_ERRORS,
            summary=command.summary,
            description=_with_right(command),
            tags=["commands"],
        )
