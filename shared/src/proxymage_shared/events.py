"""The event contract: one pydantic model per message of CONTRACT.md and ARCHITECTURE.md's topics.

Inbound events (DCC -> Proxymage) are validated strictly: missing or ill-typed required fields make the
event invalid (it goes to `<topic>.dlq` with the reason), while unknown fields are ignored so the DCC may add
fields compatibly. Strict mode means no silent coercion: `"consent": "yes"` or a numeric `occurred_at` is an
error, not a guess.

Outcome events are Proxymage's own; the same models are used to publish (serialised with
`to_kafka_value`) and to consume them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Final, Literal, TypeAlias

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

# CONTRACT.md "Common rules": the 18 modality codes of the seed (user guide §4.1).
MODALITIES: Final = (
    "AU", "CR", "CT", "DX", "ES", "MG", "MR", "NM", "OT",
    "PT", "RF", "RT", "SC", "SR", "US", "VL", "XA", "XC",
)  # fmt: skip
Modality: TypeAlias = Literal[
    "AU", "CR", "CT", "DX", "ES", "MG", "MR", "NM", "OT",
    "PT", "RF", "RT", "SC", "SR", "US", "VL", "XA", "XC",
]  # fmt: skip

# A DICOM UID (PS3.5 §9.1): dot-separated numeric components, at most 64 characters.
StudyInstanceUid = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)]
# Business ids chosen by the DCC: non-empty, no surrounding spaces, usable as a Kafka key and in a URL path.
BusinessId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
NonEmptyText = Annotated[str, StringConstraints(min_length=1, max_length=500)]
EmailAddress = Annotated[str, StringConstraints(pattern=r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$", max_length=254)]

Sex: TypeAlias = Literal["M", "F", "U"]


def new_event_id() -> uuid.UUID:
    return uuid.uuid4()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, populate_by_name=True)


class Event(_Model):
    """Fields every event carries: `event_id` makes handling idempotent, `occurred_at` orders versions."""

    event_id: uuid.UUID
    occurred_at: AwareDatetime

    def to_kafka_value(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


# --- Inbound: RCP settings -------------------------------------------------------------------------------


class NoDateFilter(_Model):
    kind: Literal["none"]


class BetweenDates(_Model):
    """Studies dated from `from` to `to`, both inclusive."""

    kind: Literal["between"]
    date_from: dt.date = Field(alias="from")
    date_to: dt.date = Field(alias="to")


class WithinMonths(_Model):
    """Studies dated on or after today minus `months` calendar months."""

    kind: Literal["within_months"]
    months: int = Field(ge=1, le=1200)


DateFilter = Annotated[NoDateFilter | BetweenDates | WithinMonths, Field(discriminator="kind")]


class ImagingFilters(_Model):
    modalities: tuple[Modality, ...] = Field(description="Modalities to list; empty means all.")
    date_filter: DateFilter


class RcpSettings(Event):
    """`dcc.rcp-settings.v1`, key `rcp_id`: default imaging filters of a tumour-board type."""

    rcp_id: BusinessId
    title: NonEmptyText
    centre: NonEmptyText
    imaging: ImagingFilters


# --- Inbound: meeting experts ------------------------------------------------------------------------------


class Expert(_Model):
    name: NonEmptyText
    email: EmailAddress


class MeetingExperts(Event):
    """`dcc.meeting-experts.v1`, key `meeting_id`: one meeting occurrence and its on-call experts."""

    meeting_id: BusinessId
    rcp_id: BusinessId
    title: NonEmptyText
    date: dt.date
    centre: NonEmptyText
    on_call_radiologist: Expert | None
    on_call_nuclear_physician: Expert | None


# --- Inbound: enrolment, selection, removal, refresh --------------------------------------------------------


class Patient(_Model):
    """The DCC's identity of the patient: the five strong traits (CONTRACT.md "Identity rules")."""

    birth_name: NonEmptyText
    used_name: NonEmptyText | None
    first_name: NonEmptyText
    birth_date: dt.date
    sex: Sex


class Person(_Model):
    name: NonEmptyText


class PatientEnrolled(Event):
    """`dcc.patient-enrolled.v1`, key `enrolment_id`. A later event for the same enrolment replaces it."""

    enrolment_id: BusinessId
    meeting_id: BusinessId
    rcp_id: BusinessId
    meeting_title: NonEmptyText
    meeting_date: dt.date
    centre: NonEmptyText
    patient: Patient
    consent: bool
    requested_by: Person


class StudiesSelected(Event):
    """`dcc.studies-selected.v1`, key `enrolment_id`: the full current selection (replaces the previous)."""

    enrolment_id: BusinessId
    study_instance_uids: tuple[StudyInstanceUid, ...] = Field(max_length=1000)
    expertise_requested: bool


class StudyRemoved(Event):
    """`dcc.study-removed.v1`, key `enrolment_id`."""

    enrolment_id: BusinessId
    study_instance_uid: StudyInstanceUid


class ImagingRefresh(Event):
    """`dcc.imaging-refresh.v1`, key `enrolment_id`: re-list the studies, retry waiting ones now."""

    enrolment_id: BusinessId


class EnrolmentWithdrawn(Event):
    """`dcc.enrolment-withdrawn.v1`, key `enrolment_id`: the patient is taken off the meeting (CONTRACT v1.1).

    Everything Proxymage holds for the enrolment is withdrawn: no PACS query any more, selected studies
    `removed` (reason `enrolment_withdrawn`), viewer-store copies deleted once no live enrolment needs them,
    expertise e-mails not yet sent `cancelled`. A later enrolled event (newer `occurred_at`) re-opens it.
    """

    enrolment_id: BusinessId
    reason: Annotated[str, StringConstraints(max_length=500)] | None = Field(
        default=None, description="Free text, optional; never shown to the experts."
    )


# --- Outcomes ------------------------------------------------------------------------------------------------

IdentityStatus: TypeAlias = Literal["matched", "unmatched", "no_consent", "withdrawn", "error"]
# A reason comes as a stable code (for programs; see proxymage_shared.reasons) and a French text (for people).
ReasonCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{0,63}$")]
IdentityTrait: TypeAlias = Literal["birth_name", "used_name", "first_name", "birth_date", "sex"]
NearMissKind: TypeAlias = Literal[
    "separator",
    "apostrophe_or_space_removed",
    "truncated",
    "one_edit",
    "day_month_swapped",
    "one_digit",
    "birth_name_is_used_name",
    "missing",
    "invalid",
]


class NearMiss(_Model):
    """A candidate that failed on one trait: which trait and what kind of difference, never its values."""

    trait: IdentityTrait
    kind: NearMissKind


class PacsPatientRef(_Model):
    """A PACS patient linked to the enrolment: PatientID qualified by its issuer (one per hospital)."""

    patient_id: NonEmptyText
    issuer: str | None


class IdentityResolved(Event):
    """`identity.resolved.v1`, key `enrolment_id`: the enrolment's lifecycle as the identity-matcher decided it.

    Carries the meeting so the fetcher can compute retrieval deadlines without reading the DCC topics
    (unknown only for an enrolment withdrawn before any enrolled event was seen).
    `source_event_id` / `source_occurred_at` are the DCC event this outcome answers: an enrolled event
    (`matched`, `unmatched`, `no_consent`, `error`) or a withdrawal (`withdrawn`); a newer one supersedes it.
    """

    enrolment_id: BusinessId
    source_event_id: uuid.UUID
    source_occurred_at: AwareDatetime | None = None
    meeting_id: BusinessId | None = None
    meeting_date: dt.date | None = None
    status: IdentityStatus
    pacs_patients: tuple[PacsPatientRef, ...] = ()
    near_misses: tuple[NearMiss, ...] = ()
    reason: str | None = None
    reason_code: ReasonCode | None = None


class CataloguedStudy(_Model):
    """One study found in MIRC for a linked patient (the columns of the user guide §5)."""

    study_instance_uid: StudyInstanceUid
    description: str | None
    pacs: str | None
    date: dt.date | None
    time: dt.time | None = None
    modalities: tuple[str, ...]
    images: int | None
    series: int | None
    accession_number: str | None = None
    pacs_patient: PacsPatientRef


CatalogueStatus: TypeAlias = Literal["listed", "error"]


class ImagingCatalogued(Event):
    """`imaging.catalogued.v1`, key `enrolment_id`: *all* studies of the linked patients (no filter)."""

    enrolment_id: BusinessId
    status: CatalogueStatus
    studies: tuple[CataloguedStudy, ...] = ()
    reason: str | None = None
    reason_code: ReasonCode | None = None


RetrievalStatus: TypeAlias = Literal["queued", "retrieving", "not_yet_available", "available", "failed", "removed"]


class Progress(_Model):
    done: int = Field(ge=0)
    total: int = Field(ge=0)


class StudyStatusChanged(Event):
    """`imaging.study-status.v1`, key `enrolment_id`: every state change of one retrieval job.

    `version` increases with every change of the job, so a consumer ignores stale or replayed updates.
    """

    enrolment_id: BusinessId
    study_instance_uid: StudyInstanceUid
    status: RetrievalStatus
    version: int = Field(ge=1)
    progress: Progress | None = None
    attempts: int = Field(ge=0)
    next_attempt_at: AwareDatetime | None = None
    reason: str | None = None
    reason_code: ReasonCode | None = None


ExpertRole: TypeAlias = Literal["radiologist", "nuclear_physician"]
# CONTRACT v1.1: `waiting` (requested, but the enrolment is not matched or no selected study is available
# yet), `not_sent` (the meeting date passed first), `cancelled` (consent or enrolment withdrawn).
NotificationStatus: TypeAlias = Literal[
    "pending", "waiting", "sent", "failed", "refused", "skipped", "not_sent", "cancelled"
]


class ExpertiseNotification(Event):
    """`expertise.notification.v1`, key `enrolment_id`: every state change of one expertise e-mail."""

    enrolment_id: BusinessId
    meeting_id: BusinessId | None
    role: ExpertRole | None
    status: NotificationStatus
    reason: str | None = None
    reason_code: ReasonCode | None = None
    version: int = Field(ge=1)


# Which model each topic carries (for consumers, the AsyncAPI document and contract tests).
INBOUND_EVENT_TYPES: Final[dict[str, type[Event]]] = {}
OUTCOME_EVENT_TYPES: Final[dict[str, type[Event]]] = {}


def _register() -> None:
    from proxymage_shared import topics

    INBOUND_EVENT_TYPES.update(
        {
            topics.RCP_SETTINGS: RcpSettings,
            topics.MEETING_EXPERTS: MeetingExperts,
            topics.PATIENT_ENROLLED: PatientEnrolled,
            topics.STUDIES_SELECTED: StudiesSelected,
            topics.STUDY_REMOVED: StudyRemoved,
            topics.IMAGING_REFRESH: ImagingRefresh,
            topics.ENROLMENT_WITHDRAWN: EnrolmentWithdrawn,
        }
    )
    OUTCOME_EVENT_TYPES.update(
        {
            topics.IDENTITY_RESOLVED: IdentityResolved,
            topics.IMAGING_CATALOGUED: ImagingCatalogued,
            topics.STUDY_STATUS: StudyStatusChanged,
            topics.EXPERTISE_NOTIFICATION: ExpertiseNotification,
        }
    )


_register()
