"""The read model's documents as typed values: each stored part parsed once, by the store (`gateway.store`), and
read by the views and the live updates (`gateway.views`, `gateway.handlers`).

The stored shape is `gateway.projection`'s (one part per patch path, each with its `order` key); field names here
are the stored ones. Every field the projection writes whenever it writes the part is required (a value may be
null, the key may not be missing), so a field renamed on one side, or missing from a stored part, is a
`StoredDocumentError` when the document is read, never a silent None (test_read_model checks that the parts
declare exactly the keys the projection stores). Only a whole part may be absent from a document. Unknown keys
are ignored: a gateway may read a document that a newer instance wrote during a rolling update.

These types are the read model's own: the REST models (`gateway.api_models`) are built from them by the views.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, TypeAlias, TypeVar

from proxymage_shared.errors import PermanentError, describe
from proxymage_shared.events import (
    CatalogueStatus,
    ExpertRole,
    IdentityStatus,
    ImagingFilters,
    NearMiss,
    NotificationStatus,
    Progress,
    RetrievalStatus,
    Sex,
)
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gateway.projection import ENROLMENTS, MEETINGS, RCPS, Collection

# A document as MongoDB returns it: the read model's collections hold JSON values only (`gateway.projection`),
# the audit's entries datetimes too.
StoredDocument: TypeAlias = dict[str, object]


class StoredDocumentError(PermanentError):
    """A stored document does not have the read model's shape (a field renamed or missing): a bug, or a document
    written by a version whose parts differ. The message names the document and the fields, never their values."""


def _imaging(value: object) -> ImagingFilters:
    # The contract's model is strict (no text for a date, no list for a tuple); stored, they are JSON.
    return ImagingFilters.model_validate(value, strict=False)


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Part(_Value):
    """What every part the projection writes holds: its order key and the stamp of the event that wrote it."""

    order: str
    event_id: str
    occurred_at: str


class ReasonedPart(Part):
    """A part that carries a reason (`gateway.reasons.told`)."""

    reason: str | None
    # Written since CONTRACT v1.1 (29 November): a part stored before it has no code, read as none.
    reason_code: str | None = None


class PacsRef(_Value):
    patient_id: str
    issuer: str | None


class RequestedBy(_Value):
    name: str


class StoredPatient(_Value):
    """The DCC's identity of the patient (never logged)."""

    birth_name: str
    used_name: str | None
    first_name: str
    birth_date: dt.date
    sex: Sex


class EnrolmentPart(Part):
    """`enrolment`: the DCC's enrolled event."""

    enrolment_id: str
    meeting_id: str
    rcp_id: str
    meeting_title: str
    meeting_date: str
    centre: str
    patient: StoredPatient
    consent: bool
    requested_by: RequestedBy


class WithdrawalPart(Part):
    """`withdrawal`: the DCC's withdrawal."""

    reason: str | None


class IdentityPart(ReasonedPart):
    """`identity`: the identity-matcher's outcome."""

    status: IdentityStatus
    source_event_id: str
    # Written since CONTRACT v1.1 (29 November): an outcome stored before it is read as not answering any event.
    source_occurred_at: str | None = None
    meeting_id: str | None
    meeting_date: str | None
    pacs_patients: tuple[PacsRef, ...]
    near_misses: tuple[NearMiss, ...]


class CataloguedStudyPart(_Value):
    """One study of the catalogue."""

    study_instance_uid: str
    description: str | None
    pacs: str | None
    date: str | None
    time: str | None
    modalities: tuple[str, ...]
    images: int | None
    series: int | None
    accession_number: str | None
    pacs_patient: PacsRef


class CataloguePart(ReasonedPart):
    """`catalogue`: the fetcher's list of the linked patients' studies."""

    status: CatalogueStatus
    studies: tuple[CataloguedStudyPart, ...]


class SelectionPart(Part):
    """`selection`: the DCC's latest selection."""

    study_instance_uids: tuple[str, ...]
    expertise_requested: bool


class RemovalPart(Part):
    """`removals.<study key>`: the DCC removed the study."""

    study_instance_uid: str


class RetrievalPart(ReasonedPart):
    """`retrieval.<study key>`: the fetcher's job state for the study."""

    study_instance_uid: str
    status: RetrievalStatus
    version: int
    progress: Progress | None
    attempts: int
    next_attempt_at: str | None


class NotificationPart(ReasonedPart):
    """`notifications.<role>`: the notifier's state of one expertise request."""

    meeting_id: str | None
    role: ExpertRole | None
    status: NotificationStatus
    version: int


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

    rcp_id: str
    title: str
    date: str
    centre: str


class StoredExpert(_Value):
    name: str
    email: str


class ExpertsPart(MeetingFacts):
    """`experts`: the DCC's meeting event."""

    meeting_id: str
    on_call_radiologist: StoredExpert | None
    on_call_nuclear_physician: StoredExpert | None


class MemberPart(_Value):
    """`members.<member key>`: one enrolment of the meeting. Without a stamp when the members migration listed it
    (`store.ReadModelStore.ensure_indexes`): membership has no order to compare."""

    enrolment_id: str
    order: str | None = None
    event_id: str | None = None
    occurred_at: str | None = None


class MeetingRecord(_Value):
    """A `meetings` document."""

    meeting_id: str = Field(alias="_id")
    experts: ExpertsPart | None = None
    enrolment_details: MeetingFacts | None = None
    members: dict[str, MemberPart] | None = None  # None: projected before meetings listed their enrolments


class RcpSettingsPart(Part):
    """`settings`: the DCC's RCP settings."""

    rcp_id: str
    title: str
    centre: str
    imaging: Annotated[ImagingFilters, BeforeValidator(_imaging)]


class RcpRecord(_Value):
    """An `rcps` document."""

    rcp_id: str = Field(alias="_id")
    settings: RcpSettingsPart | None = None


class MeetingOfEnrolment(_Value):
    """`enrolment.meeting_id` of an `enrolments` document: all the members migration reads of one."""

    class Enrolment(_Value):
        meeting_id: str

    enrolment_id: str = Field(alias="_id")
    enrolment: Enrolment | None = None


class MembersOfMeeting(_Value):
    """`members` of a `meetings` document: all the members migration reads of one."""

    meeting_id: str = Field(alias="_id")
    members: dict[str, MemberPart] | None = None


Record: TypeAlias = EnrolmentRecord | MeetingRecord | RcpRecord
Parsed = TypeVar("Parsed", bound=_Value)

_RECORDS: dict[Collection, type[EnrolmentRecord] | type[MeetingRecord] | type[RcpRecord]] = {
    ENROLMENTS: EnrolmentRecord,
    MEETINGS: MeetingRecord,
    RCPS: RcpRecord,
}


def parse(model: type[Parsed], collection: Collection, document: Mapping[str, object]) -> Parsed:
    """The typed value of a document of `collection`; `StoredDocumentError` when it does not have the shape."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        # `from None`: the validation error's text quotes the stored values (patient identity); `describe` does not.
        raise StoredDocumentError(
            f"{collection} document {str(document.get('_id'))!r} does not match the read model: {describe(error)}"
        ) from None


def enrolment_record(document: Mapping[str, object]) -> EnrolmentRecord:
    return parse(EnrolmentRecord, ENROLMENTS, document)


def meeting_record(document: Mapping[str, object]) -> MeetingRecord:
    return parse(MeetingRecord, MEETINGS, document)


def rcp_record(document: Mapping[str, object]) -> RcpRecord:
    return parse(RcpRecord, RCPS, document)


def parse_document(collection: Collection, document: Mapping[str, object]) -> Record:
    """The typed value of a document of `collection`."""
    return parse(_RECORDS[collection], collection, document)
