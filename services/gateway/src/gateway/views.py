"""From read-model documents to the REST answers (pure; the typed documents of `gateway.read_model`).

Rules beyond CONTRACT.md's wording:
- The enrolment's lifecycle is decided by its two DCC parts, `enrolment` and `withdrawal`: the newer one
  (order key: the event's `EventStamp`, `occurred_at` to the millisecond, then `event_id`, as the
  identity-matcher orders them) wins. A withdrawal newer than the enrolled event makes `identity.status`
  `withdrawn` at once, without waiting for the identity-matcher; a newer enrolled event re-opens the enrolment
  (`pending` until its own outcome).
- `identity.status` is `pending` until the outcome of the enrolment's *current* DCC event arrives (a
  corrected identity makes the previous outcome obsolete). An outcome `withdrawn` answering a withdrawal the
  gateway has not consumed yet (its `source_occurred_at` is newer than the enrolled event) is current too.
- While withdrawn, a selected study the fetcher has not yet reported `removed` or `failed` shows `removed`
  (or `failed`, when selected after the withdrawal) with reason `enrolment_withdrawn`, and never a viewer
  link: the board stops seeing the images the moment the DCC withdraws the patient, not when the purge ends.
- Reasons: `"<code>: <texte>"` when the event carried a code, plus `reason_code` / `reason_text`
  (`gateway.reasons`).
- catalogued studies are listed only for a current `matched` identity, and only those of the PACS patients
  it links: after a correction, another person's studies never show.
- `selected`: in the latest selection and not removed after it. A selected study with no job state yet is
  `queued`; an unselected one is `not_requested`, or `removed` when the DCC removed it.
- a selected study is listed even if the catalogue does not (or no longer) list it, with what is known.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from proxymage_shared.events import ImagingFilters

from gateway import filters as flt
from gateway import meeting_day, reasons
from gateway.api_models import (
    Catalogue,
    Enrolment,
    EnrolmentSummary,
    Expertise,
    ExpertOut,
    Identity,
    IdentityView,
    Meeting,
    MeetingRef,
    Notification,
    PatientOut,
    RcpOut,
    Retrieval,
    RetrievalView,
    Study,
    StudyStates,
    Withdrawal,
)
from gateway.projection import order_key, study_key
from gateway.read_model import (
    CataloguedStudyPart,
    EnrolmentPart,
    EnrolmentRecord,
    IdentityPart,
    MeetingRecord,
    Part,
    RcpRecord,
    RetrievalPart,
    StoredExpert,
    WithdrawalPart,
)
from gateway.viewer import ViewerLinks


@dataclass(frozen=True, slots=True)
class CataloguedRow:
    """One catalogued study, as the filters see it."""

    study_instance_uid: str
    date: dt.date | None
    modalities: tuple[str, ...]
    study: CataloguedStudyPart


def _date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _datetime(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def rcp_filters(rcp: RcpRecord | None) -> ImagingFilters | None:
    settings = rcp.settings if rcp is not None else None
    return settings.imaging if settings is not None else None


def _order(part: Part | None) -> str:
    return part.order if part is not None else ""


def withdrawal_in_force(record: EnrolmentRecord) -> WithdrawalPart | None:
    """The `withdrawal` part when it is newer than the enrolled event (the enrolment is withdrawn), else None."""
    withdrawal = record.withdrawal
    if withdrawal is None:
        return None
    if record.enrolment is not None and _order(record.enrolment) > _order(withdrawal):
        return None  # re-opened by a newer enrolled event
    return withdrawal


def _source_order(identity: IdentityPart) -> str | None:
    """The order key of the DCC event an outcome answers, when the outcome says when that event occurred."""
    moment = _datetime(identity.source_occurred_at)
    source = identity.source_event_id
    return order_key(moment, source) if moment is not None and source else None


def _answers_current_event(identity: IdentityPart, enrolment: EnrolmentPart | None) -> bool:
    if enrolment is None or identity.source_event_id == enrolment.event_id:
        return True
    if identity.status != "withdrawn":
        return False
    # A withdrawal the gateway has not consumed yet, newer than the enrolled event it knows.
    source = _source_order(identity)
    return source is not None and source > _order(enrolment)


def withdrawn_since(record: EnrolmentRecord) -> str | None:
    """The order key of the withdrawal in force (seen by the gateway, or only through the identity-matcher's
    current `withdrawn` outcome), or None when the enrolment is not withdrawn."""
    withdrawal = withdrawal_in_force(record)
    if withdrawal is not None:
        return _order(withdrawal)
    identity = record.identity
    if identity is not None and identity.status == "withdrawn" and _answers_current_event(identity, record.enrolment):
        return _source_order(identity) or _order(identity)
    return None


def _reason_fields(told: reasons.ToldReason) -> dict[str, str | None]:
    return {"reason": told.rest, "reason_code": told.code, "reason_text": told.text}


def _withdrawn_identity(identity: IdentityPart | None, withdrawal: WithdrawalPart) -> Identity:
    answered = (
        identity is not None and identity.status == "withdrawn" and identity.source_event_id == withdrawal.event_id
    )
    told = reasons.told(identity) if answered else reasons.NO_REASON
    if told.rest is None:
        told = reasons.of("enrolment_withdrawn")
    return Identity(status="withdrawn", pacs_patients=0, near_misses=[], **_reason_fields(told))


def identity_view(record: EnrolmentRecord) -> Identity:
    identity = record.identity
    withdrawal = withdrawal_in_force(record)
    if withdrawal is not None:
        return _withdrawn_identity(identity, withdrawal)
    if identity is None or not _answers_current_event(identity, record.enrolment):
        return Identity(status="pending", pacs_patients=0, near_misses=[], reason=None)
    if identity.status == "withdrawn":
        return Identity(status="withdrawn", pacs_patients=0, near_misses=[], **_reason_fields(reasons.told(identity)))
    return Identity(
        status=identity.status,
        pacs_patients=len(identity.pacs_patients),
        near_misses=list(identity.near_misses),
        **_reason_fields(reasons.told(identity)),
    )


def withdrawal_view(record: EnrolmentRecord) -> Withdrawal | None:
    withdrawal = withdrawal_in_force(record)
    moment = _datetime(withdrawal.occurred_at) if withdrawal is not None else None
    if withdrawal is None or moment is None:
        return None
    return Withdrawal(at=moment, reason=withdrawal.reason or None)


def _linked_rows(record: EnrolmentRecord) -> list[CataloguedRow]:
    """The catalogue's studies that belong to the current matched identity."""
    if identity_view(record).status != "matched":
        return []
    catalogue = record.catalogue
    if catalogue is None:
        return []
    linked = [(ref.patient_id, ref.issuer) for ref in record.identity.pacs_patients] if record.identity else []
    rows = []
    for study in catalogue.studies:
        owner = study.pacs_patient
        if (owner.patient_id, owner.issuer) in linked:
            rows.append(
                CataloguedRow(
                    study_instance_uid=study.study_instance_uid,
                    date=_date(study.date),
                    modalities=study.modalities,
                    study=study,
                )
            )
    return rows


def selected_uids(record: EnrolmentRecord) -> list[str]:
    """The StudyInstanceUIDs of the latest selection not removed since."""
    selection = record.selection
    if selection is None:
        return []
    chosen = []
    for study_instance_uid in selection.study_instance_uids:
        removal = record.removals.get(study_key(study_instance_uid))
        if removal is None or removal.order < selection.order:
            chosen.append(study_instance_uid)
    return chosen


def _removed_after_selection(record: EnrolmentRecord, study_instance_uid: str) -> bool:
    removal = record.removals.get(study_key(study_instance_uid))
    selection = record.selection
    return removal is not None and (selection is None or removal.order > selection.order)


def _plain(status: RetrievalView, told: reasons.ToldReason = reasons.NO_REASON) -> Retrieval:
    return Retrieval(
        status=status, progress=None, attempts=0, next_attempt_at=None, viewer_url=None, **_reason_fields(told)
    )


def _selected_state(record: EnrolmentRecord, job: RetrievalPart | None) -> Retrieval | None:
    """The state of a selected study when it is not the job's own (queued, or withdrawn meanwhile)."""
    selection = record.selection
    requested_again = (
        job is not None
        and job.status == "removed"
        and job.occurred_at < (selection.occurred_at if selection is not None else "")
    )
    since = withdrawn_since(record)
    confirmed = job is not None and not requested_again and job.status in ("removed", "failed")
    if since is not None and not confirmed:
        # Withdrawn: shown gone at once (the fetcher's own `removed`/`failed` follows).
        gone: RetrievalView = "failed" if _order(selection) > since else "removed"
        return _plain(gone, reasons.of("enrolment_withdrawn"))
    if job is None or requested_again:
        return _plain("queued")
    return None


def retrieval_view(
    record: EnrolmentRecord,
    study_instance_uid: str,
    *,
    selected: bool,
    patient_id: str | None,
    links: ViewerLinks | None,
) -> Retrieval:
    """The study's state for this enrolment; `links` None leaves `viewer_url` unset."""
    job = record.retrieval.get(study_key(study_instance_uid))
    if selected:
        shown = _selected_state(record, job)
        if shown is not None:
            return shown
    elif job is not None and job.status == "removed":
        pass  # the fetcher confirmed the removal: show its state
    elif _removed_after_selection(record, study_instance_uid):
        return _plain("removed")
    else:
        return _plain("not_requested")
    assert job is not None
    return Retrieval(
        status=job.status,
        progress=job.progress,
        attempts=job.attempts,
        next_attempt_at=job.next_attempt_at,  # the stored text, validated by the model
        # A link only where the DICOMweb path opens the study: catalogued under a patient still linked.
        viewer_url=links.url(study_instance_uid, patient_id)
        if job.status == "available" and links and patient_id
        else None,
        **_reason_fields(reasons.told(job)),
    )


def _study(
    record: EnrolmentRecord,
    study_instance_uid: str,
    study: CataloguedStudyPart | None,
    *,
    selected: bool,
    links: ViewerLinks,
) -> Study:
    owner = study.pacs_patient if study is not None else None
    return Study(
        study_instance_uid=study_instance_uid,
        description=study.description if study else None,
        pacs=study.pacs if study else None,
        date=_date(study.date) if study else None,
        modalities=list(study.modalities) if study else [],
        images=study.images if study else None,
        series=study.series if study else None,
        selected=selected,
        retrieval=retrieval_view(
            record,
            study_instance_uid,
            selected=selected,
            patient_id=owner.patient_id if owner else None,
            links=links,
        ),
    )


def study_patient_id(record: EnrolmentRecord, study_instance_uid: str) -> str | None:
    for row in _linked_rows(record):
        if row.study_instance_uid == study_instance_uid:
            return row.study.pacs_patient.patient_id
    return None


def viewable_patient_id(record: EnrolmentRecord, study_instance_uid: str) -> str | None:
    """The PACS PatientID the study was catalogued under when the enrolment shows it `available`, else None.

    This is what opens a study to the viewer (gateway.dicomweb): selected for this enrolment, moved completely,
    and neither withdrawn nor removed since (the same rules as the state REST shows).
    """
    if study_instance_uid not in selected_uids(record):
        return None
    patient_id = study_patient_id(record, study_instance_uid)
    state = retrieval_view(record, study_instance_uid, selected=True, patient_id=patient_id, links=None)
    return patient_id if state.status == "available" else None


def expertise_view(record: EnrolmentRecord) -> Expertise:
    items = [
        Notification(
            role=item.role,
            status=item.status,
            at=item.occurred_at,  # the stored text, validated by the model
            **_reason_fields(reasons.told(item)),
        )
        for _, item in sorted(record.notifications.items())
    ]
    requested = record.selection.expertise_requested if record.selection is not None else False
    return Expertise(requested=requested, notifications=items)


def patient_view(record: EnrolmentRecord) -> PatientOut | None:
    if record.enrolment is None:
        return None
    return PatientOut(**record.enrolment.patient.model_dump())


def catalogue_view(record: EnrolmentRecord) -> Catalogue:
    catalogue = record.catalogue
    if catalogue is None:
        return Catalogue(status="pending", reason=None, at=None, studies=0)
    return Catalogue(
        status=catalogue.status,
        at=catalogue.occurred_at,  # the stored text, validated by the model
        studies=len(_linked_rows(record)),
        **_reason_fields(reasons.told(catalogue)),
    )


def _meeting_ref(enrolment: EnrolmentPart | None) -> MeetingRef | None:
    if enrolment is None:
        return None
    return MeetingRef(title=enrolment.meeting_title, date=_date(enrolment.meeting_date), centre=enrolment.centre)


def enrolment_view(
    record: EnrolmentRecord,
    rcp: RcpRecord | None,
    overrides: flt.Overrides,
    today: dt.date,
    links: ViewerLinks,
) -> Enrolment:
    """`GET /api/v1/enrolments/{id}`. Raises `filters.InvalidFilterError` for overrides that make no sense."""
    enrolment = record.enrolment
    filters = flt.effective_filters(rcp_filters(rcp), overrides)
    chosen = selected_uids(record)
    rows = _linked_rows(record)
    listed = flt.visible(rows, filters, chosen, today)
    studies = [
        _study(record, row.study_instance_uid, row.study, selected=row.study_instance_uid in chosen, links=links)
        for row in listed
    ]
    known = {row.study_instance_uid for row in rows}
    studies += [
        _study(record, study_instance_uid, None, selected=True, links=links)
        for study_instance_uid in chosen
        if study_instance_uid not in known
    ]
    return Enrolment(
        enrolment_id=record.enrolment_id,
        meeting_id=meeting_of(record),
        rcp_id=enrolment.rcp_id if enrolment is not None else None,
        identity=identity_view(record),
        filters=filters,
        studies=studies,
        expertise=expertise_view(record),
        consent=enrolment.consent if enrolment is not None else None,
        patient=patient_view(record),
        requested_by=enrolment.requested_by.name if enrolment is not None else None,
        meeting=_meeting_ref(enrolment),
        catalogue=catalogue_view(record),
        withdrawal=withdrawal_view(record),
    )


def meeting_of(record: EnrolmentRecord) -> str | None:
    """The enrolment's meeting: as the DCC enrolled it, else as the identity outcome says."""
    enrolment, identity = record.enrolment, record.identity
    return (enrolment.meeting_id if enrolment else None) or (identity.meeting_id if identity else None)


def study_states(record: EnrolmentRecord) -> StudyStates:
    chosen = selected_uids(record)
    statuses: Counter[str] = Counter()
    study_instance_uids = set(chosen) | {item.study_instance_uid for item in record.removals.values()}
    for study_instance_uid in sorted(study_instance_uids):
        view = retrieval_view(
            record, study_instance_uid, selected=study_instance_uid in chosen, patient_id=None, links=_NO_LINKS
        )
        if view.status != "not_requested":
            statuses[view.status] += 1
    return StudyStates(selected=len(chosen), by_status=dict(sorted(statuses.items())))


_NO_LINKS = ViewerLinks("")


def summary_view(record: EnrolmentRecord) -> EnrolmentSummary:
    identity: IdentityView = identity_view(record).status
    states = study_states(record)
    enrolment = record.enrolment
    return EnrolmentSummary(
        enrolment_id=record.enrolment_id,
        patient=patient_view(record),
        consent=enrolment.consent if enrolment is not None else None,
        identity_status=identity,
        catalogued=len(_linked_rows(record)) if record.catalogue is not None else None,
        studies=states,
        expertise_requested=expertise_view(record).requested,
        requested_by=enrolment.requested_by.name if enrolment is not None else None,
        imaging_state=meeting_day.imaging_state(identity, states),
    )


def meeting_view(meeting_id: str, record: MeetingRecord | None) -> Meeting:
    """Prefers the DCC's meeting event; falls back on what enrolments said about the meeting."""
    experts = record.experts if record is not None else None
    details = experts or (record.enrolment_details if record is not None else None)
    return Meeting(
        meeting_id=meeting_id,
        rcp_id=details.rcp_id if details else None,
        title=details.title if details else None,
        date=_date(details.date) if details else None,
        centre=details.centre if details else None,
        on_call_radiologist=_expert(experts.on_call_radiologist) if experts else None,
        on_call_nuclear_physician=_expert(experts.on_call_nuclear_physician) if experts else None,
    )


def _expert(expert: StoredExpert | None) -> ExpertOut | None:
    return ExpertOut(name=expert.name, email=expert.email) if expert is not None else None


def rcp_view(record: RcpRecord) -> RcpOut | None:
    settings = record.settings
    if settings is None:
        return None
    return RcpOut(rcp_id=record.rcp_id, title=settings.title, centre=settings.centre, imaging=settings.imaging)
