"""The read model's documents as typed values: each stored part parsed once, by the store (`gateway.store`), and
read by the views and the live updates (`gateway.views`, `gateway.handlers`).

The stored shape is `gateway.projection`'s (one part per patch path, each with its `order` key); field names here
are the stored ones, so a document written by any earlier version reads the same. What the projection stores
comes from validated events, so a field the views always needed is required here too; the rest defaults to what
the views assumed when it is absent.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias

from proxymage_shared.events import (
    CatalogueStatus,
    IdentityStatus,
    ImagingFilters,
    NearMiss,
    NotificationStatus,
    Progress,
    RetrievalStatus,
)
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gateway.api_models import ExpertOut, PatientOut
from gateway.projection import ENROLMENTS, MEETINGS, RCPS, Collection, Json


def _near_misses(value: Any) -> tuple[NearMiss, ...]:
    return tuple(NearMiss.model_validate(item, strict=False) for item in value or ())


def _progress(value: Any) -> Progress | None:
    return Progress.model_validate(value, strict=False) if value else None


def _imaging(value: Any) -> ImagingFilters:
    return ImagingFilters.model_validate(value, strict=False)


def _count(value: Any) -> Any:
    return value or 0


def _expert(value: Any) -> ExpertOut | None:
    return ExpertOut.model_validate(value) if isinstance(value, dict) else None


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Part(_Value):
    """What every stored part holds: its order key and the stamp of the event that wrote it."""

    order: str = ""
    event_id: str | None = None
    occurred_at: str | None = None


class ReasonedPart(Part):
    """A part that may carry a reason (`gateway.reasons.told`)."""

    reason: str | None = None
    reason_code: str | None = None


class PacsRef(_Value):
    patient_id: str | None = None
    issuer: str | None = None


class RequestedBy(_Value):
    name: str | None = None


class EnrolmentPart(Part):
    """`enrolment`: the DCC's enrolled event."""

    meeting_id: str | None = None
    rcp_id: str | None = None
    meeting_title: str | None = None
    meeting_date: str | None = None
    centre: str | None = None
    patient: PatientOut | None = None
    consent: bool | None = None
    requested_by: RequestedBy | None = None


class WithdrawalPart(Part):
    """`withdrawal`: the DCC's withdrawal."""

    reason: str | None = None


class IdentityPart(ReasonedPart):
    """`identity`: the identity-matcher's outcome."""

    status: IdentityStatus
    source_event_id: str | None = None
    source_occurred_at: str | None = None
    meeting_id: str | None = None
    pacs_patients: tuple[PacsRef, ...] = ()
    near_misses: Annotated[tuple[NearMiss, ...], BeforeValidator(_near_misses)] = ()


class CataloguedStudyPart(_Value):
    """One study of the catalogue."""

    study_instance_uid: str
    description: str | None = None
    pacs: str | None = None
    date: str | None = None
    modalities: tuple[str, ...] = ()
    images: int | None = None
    series: int | None = None
    pacs_patient: PacsRef | None = None


class CataloguePart(ReasonedPart):
    """`catalogue`: the fetcher's list of the linked patients' studies."""

    status: CatalogueStatus
    studies: tuple[CataloguedStudyPart, ...] = ()


class SelectionPart(Part):
    """`selection`: the DCC's latest selection."""

    study_instance_uids: tuple[str, ...] = ()
    expertise_requested: bool = False


class RemovalPart(Part):
    """`removals.<study key>`: the DCC removed the study."""

    study_instance_uid: str | None = None


class RetrievalPart(ReasonedPart):
    """`retrieval.<study key>`: the fetcher's job state for the study."""

    status: RetrievalStatus
    study_instance_uid: str | None = None
    progress: Annotated[Progress | None, BeforeValidator(_progress)] = None
    attempts: Annotated[int, BeforeValidator(_count)] = 0
    next_attempt_at: str | None = None


class NotificationPart(ReasonedPart):
    """`notifications.<role>`: the notifier's state of one expertise request."""

    role: str | None = None
    status: NotificationStatus


class EnrolmentRecord(_Value):
    """An `enrolments` document."""

    enrolment_id: str = Field(alias="_id")
    enrolment: EnrolmentPart | None = None
    withdrawal: WithdrawalPart | None = None
    identity: IdentityPart | None = None
    catalogue: CataloguePart | None = None
    selection: SelectionPart | None = None
    removals: dict[str, RemovalPart] = Field(default_factory=dict)
    retrieval: dict[str, RetrievalPart] = Field(default_factory=dict)
    notifications: dict[str, NotificationPart] = Field(default_factory=dict)


class MeetingFacts(Part):
    """What is said about a meeting: by every enrolment (`enrolment_details`) or by the DCC's meeting event."""

    rcp_id: str | None = None
    title: str | None = None
    date: str | None = None
    centre: str | None = None


class ExpertsPart(MeetingFacts):
    """`experts`: the DCC's meeting event."""

    on_call_radiologist: Annotated[ExpertOut | None, BeforeValidator(_expert)] = None
    on_call_nuclear_physician: Annotated[ExpertOut | None, BeforeValidator(_expert)] = None


class MemberPart(_Value):
    """`members.<member key>`: one enrolment of the meeting."""

    enrolment_id: str


class MeetingRecord(_Value):
    """A `meetings` document."""

    meeting_id: str = Field(alias="_id")
    experts: ExpertsPart | None = None
    enrolment_details: MeetingFacts | None = None
    members: dict[str, MemberPart] | None = None  # None: projected before meetings listed their enrolments


class RcpSettingsPart(Part):
    """`settings`: the DCC's RCP settings."""

    title: str
    centre: str
    imaging: Annotated[ImagingFilters, BeforeValidator(_imaging)]


class RcpRecord(_Value):
    """An `rcps` document."""

    rcp_id: str = Field(alias="_id")
    settings: RcpSettingsPart | None = None


Record: TypeAlias = EnrolmentRecord | MeetingRecord | RcpRecord
StoredDocument: TypeAlias = dict[str, Json]  # a document as MongoDB holds it

_RECORDS: dict[Collection, type[EnrolmentRecord] | type[MeetingRecord] | type[RcpRecord]] = {
    ENROLMENTS: EnrolmentRecord,
    MEETINGS: MeetingRecord,
    RCPS: RcpRecord,
}


def enrolment_record(document: StoredDocument) -> EnrolmentRecord:
    return EnrolmentRecord.model_validate(document)


def meeting_record(document: StoredDocument) -> MeetingRecord:
    return MeetingRecord.model_validate(document)


def rcp_record(document: StoredDocument) -> RcpRecord:
    return RcpRecord.model_validate(document)


def parse_document(collection: Collection, document: StoredDocument) -> Record:
    """The typed value of a document of `collection`."""
    return _RECORDS[collection].model_validate(document)
