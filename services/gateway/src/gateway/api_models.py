"""The REST API's bodies and answers (CONTRACT.md "Gateway REST"), documented by FastAPI in `/openapi.json`.

Answers follow CONTRACT.md exactly; the few extra fields (marked "extension") are optional additions the
operator console uses, which the contract allows ("extend only compatibly").

Request bodies carry the inbound events' fields minus `event_id` and `occurred_at` (the gateway sets them)
and minus the id given in the path. They have the contract models' constraints; dates are ISO strings
(`YYYY-MM-DD`) and booleans/integers are never coerced from strings, like the Kafka consumers' JSON
validation. The event built from a body is validated once more by the contract model itself.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal, TypeAlias

from proxymage_shared.events import (
    BusinessId,
    ExpertRole,
    ImagingFilters,
    Modality,
    NearMiss,
    NonEmptyText,
    NotificationStatus,
    Progress,
    Sex,
    StudyInstanceUid,
)
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
)

from gateway.api_types import ExpertEmail, WholeNumber

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_date_text(value: Any) -> Any:
    if isinstance(value, str) and _ISO_DATE.match(value):
        return value
    raise ValueError("expected a date as YYYY-MM-DD")


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date_text), WithJsonSchema({"type": "string", "format": "date"})]


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


# --- Request bodies --------------------------------------------------------------------------------------


class NoDateFilterBody(_Body):
    kind: Literal["none"]


class BetweenDatesBody(_Body):
    """Studies dated from `from` to `to`, both inclusive."""

    kind: Literal["between"]
    date_from: IsoDate = Field(alias="from")
    date_to: IsoDate = Field(alias="to")


class WithinMonthsBody(_Body):
    """Studies dated on or after today minus `months` calendar months."""

    kind: Literal["within_months"]
    months: WholeNumber = Field(ge=1, le=1200)


class ImagingFiltersBody(_Body):
    modalities: list[Modality] = Field(max_length=18, description="Modalities to list; empty means all.")
    date_filter: Annotated[NoDateFilterBody | BetweenDatesBody | WithinMonthsBody, Field(discriminator="kind")]


class ImagingSettingsBody(_Body):
    """`PUT /api/v1/rcps/{rcp_id}/imaging-settings` -> `dcc.rcp-settings.v1`."""

    title: NonEmptyText
    centre: NonEmptyText
    imaging: ImagingFiltersBody


class ExpertBody(_Body):
    name: NonEmptyText
    email: ExpertEmail


class MeetingExpertsBody(_Body):
    """`PUT /api/v1/meetings/{meeting_id}/experts` -> `dcc.meeting-experts.v1`."""

    rcp_id: BusinessId
    title: NonEmptyText
    date: IsoDate
    centre: NonEmptyText
    on_call_radiologist: ExpertBody | None
    on_call_nuclear_physician: ExpertBody | None


class PatientBody(_Body):
    birth_name: NonEmptyText
    used_name: NonEmptyText | None
    first_name: NonEmptyText
    birth_date: IsoDate
    sex: Sex


class PersonBody(_Body):
    name: NonEmptyText


class EnrolmentBody(_Body):
    """`POST /api/v1/enrolments` -> `dcc.patient-enrolled.v1` (a second one for the same id replaces it)."""

    enrolment_id: BusinessId
    meeting_id: BusinessId
    rcp_id: BusinessId
    meeting_title: NonEmptyText
    meeting_date: IsoDate
    centre: NonEmptyText
    patient: PatientBody
    consent: StrictBool
    requested_by: PersonBody


class SelectionBody(_Body):
    """`PUT /api/v1/enrolments/{id}/selection` -> `dcc.studies-selected.v1` (the full current selection)."""

    study_instance_uids: list[StudyInstanceUid] = Field(max_length=1000)
    expertise_requested: StrictBool


class WithdrawalBody(_Body):
    """`DELETE /api/v1/enrolments/{id}` (optional body) -> `dcc.enrolment-withdrawn.v1`."""

    reason: Annotated[str, Field(max_length=500)] | None = Field(
        default=None, description="Why the patient is taken off the meeting (free text, optional)."
    )


class Accepted(BaseModel):
    """A command was published: the event's id (the DCC may use it to correlate)."""

    event_id: uuid.UUID


# --- Answers ------------------------------------------------------------------------------------------------

IdentityView: TypeAlias = Literal["pending", "matched", "unmatched", "no_consent", "withdrawn", "error"]
RetrievalView: TypeAlias = Literal[
    "not_requested", "queued", "retrieving", "not_yet_available", "available", "failed", "removed"
]
# Extension (issue 15, the meeting day): a patient's imaging at a glance (`gateway.meeting_day.imaging_state`).
ImagingState: TypeAlias = Literal[
    "failed", "not_identified", "waiting", "none_selected", "no_consent", "available", "withdrawn"
]

_REASON_CODE = "Extension: the stable code of `reason` (null when the event carried none)."
_REASON_TEXT = "Extension: the French text of `reason`, for people (what the console shows)."


def _reason_code() -> Any:
    return Field(default=None, description=_REASON_CODE)


def _reason_text() -> Any:
    return Field(default=None, description=_REASON_TEXT)


class Identity(BaseModel):
    status: IdentityView
    pacs_patients: int = Field(ge=0, description="How many PACS patients are linked.")
    near_misses: list[NearMiss]
    reason: str | None = Field(
        default=None, description='Extension: why, as "<code>: <texte>" (e.g. no consent, withdrawn).'
    )
    reason_code: str | None = _reason_code()
    reason_text: str | None = _reason_text()


class Retrieval(BaseModel):
    status: RetrievalView
    progress: Progress | None
    attempts: int = Field(ge=0)
    next_attempt_at: AwareDatetime | None
    reason: str | None = Field(description='Why not (yet) available: "<code>: <texte>", or the text as published.')
    viewer_url: str | None = Field(description="Set only when `available`.")
    reason_code: str | None = _reason_code()
    reason_text: str | None = _reason_text()


class Study(BaseModel):
    study_instance_uid: str
    description: str | None
    pacs: str | None
    date: dt.date | None
    modalities: list[str]
    images: int | None
    series: int | None
    selected: bool
    retrieval: Retrieval


class Notification(BaseModel):
    role: ExpertRole | None
    status: NotificationStatus
    at: AwareDatetime
    reason: str | None = Field(
        default=None, description='Extension: why it waits, failed, was refused or cancelled ("<code>: <texte>").'
    )
    reason_code: str | None = _reason_code()
    reason_text: str | None = _reason_text()


class Expertise(BaseModel):
    requested: bool
    notifications: list[Notification]


class PatientOut(BaseModel):
    """Extension: the DCC's identity of the patient, for the console's lists (never logged)."""

    birth_name: str
    used_name: str | None
    first_name: str
    birth_date: dt.date
    sex: Sex


class MeetingRef(BaseModel):
    title: str | None
    date: dt.date | None
    centre: str | None


class Catalogue(BaseModel):
    """Extension: the state of the study list (pending until the PACS has been queried)."""

    status: Literal["pending", "listed", "error"]
    reason: str | None
    reason_code: str | None = _reason_code()
    reason_text: str | None = _reason_text()
    at: AwareDatetime | None
    studies: int = Field(ge=0, description="Studies catalogued for the linked patients, before filters.")


class Withdrawal(BaseModel):
    """Extension: the DCC withdrew the enrolment (`dcc.enrolment-withdrawn.v1`) and has not re-opened it."""

    at: AwareDatetime = Field(description="When the DCC withdrew it (the event's `occurred_at`).")
    reason: str | None = Field(description="The DCC's free text, if any.")


class Enrolment(BaseModel):
    enrolment_id: str
    meeting_id: str | None
    rcp_id: str | None
    identity: Identity
    filters: ImagingFilters
    studies: list[Study]
    expertise: Expertise
    # Extensions
    consent: bool | None = None
    patient: PatientOut | None = None
    requested_by: str | None = None
    meeting: MeetingRef | None = None
    catalogue: Catalogue | None = None
    withdrawal: Withdrawal | None = None


class StudyStates(BaseModel):
    selected: int = Field(ge=0, description="Studies selected for the meeting.")
    by_status: dict[str, int] = Field(description="Selected (or removed) studies by retrieval status.")


class EnrolmentSummary(BaseModel):
    enrolment_id: str
    patient: PatientOut | None
    consent: bool | None
    identity_status: IdentityView
    catalogued: int | None = Field(description="Studies catalogued (before filters), null until listed.")
    studies: StudyStates
    expertise_requested: bool
    # Extensions (issue 15, the meeting day)
    requested_by: str | None = Field(
        default=None, description="Extension: the requesting doctor, as the DCC named them."
    )
    imaging_state: ImagingState | None = Field(
        default=None,
        description="Extension: the patient's imaging at a glance (identity outcome and selected studies).",
    )


class ExpertOut(BaseModel):
    name: str
    email: str


class Meeting(BaseModel):
    meeting_id: str
    rcp_id: str | None
    title: str | None
    date: dt.date | None
    centre: str | None
    on_call_radiologist: ExpertOut | None = None
    on_call_nuclear_physician: ExpertOut | None = None


class MeetingEnrolments(Meeting):
    enrolments: list[EnrolmentSummary]


class RcpOut(BaseModel):
    rcp_id: str
    title: str
    centre: str
    imaging: ImagingFilters


class ErrorMessage(BaseModel):
    detail: Any = Field(description="What went wrong (a message, or the list of invalid fields).")
