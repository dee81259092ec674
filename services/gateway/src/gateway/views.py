"""From read-model documents to the REST answers (pure; the documents come from `gateway.projection`).

Rules beyond CONTRACT.md's wording:
- The enrolment's lifecycle is decided by its two DCC parts, `enrolment` and `withdrawal`: the newer one
  (order key: `occurred_at`, then `event_id`) wins. A withdrawal newer than the enrolled event makes
  `identity.status` `withdrawn` at once, without waiting for the identity-matcher; a newer enrolled event
  re-opens the enrolment (`pending` until its own outcome).
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
from typing import Any

from proxymage_shared.events import ImagingFilters, NearMiss, Progress

from gateway import filters as flt
from gateway import reasons
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
from gateway.projection import ORDER, get_path, order_key, study_key
from gateway.viewer import ViewerLinks

Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CataloguedRow:
    """One catalogued study, as the filters see it."""

    study_instance_uid: str
    date: dt.date | None
    modalities: tuple[str, ...]
    raw: Document


def _date(value: Any) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _datetime(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def rcp_filters(rcp: Document | None) -> ImagingFilters | None:
    settings = get_path(rcp, "settings")
    if settings is None:
        return None
    return ImagingFilters.model_validate(settings["imaging"], strict=False)


def _order(part: Document | None) -> str:
    return str((part or {}).get(ORDER, ""))


def withdrawal_in_force(document: Document) -> Document | None:
    """The `withdrawal` part when it is newer than the enrolled event (the enrolment is withdrawn), else None."""
    withdrawal = get_path(document, "withdrawal")
    if withdrawal is None:
        return None
    enrolment = get_path(document, "enrolment")
    if enrolment is not None and _order(enrolment) > _order(withdrawal):
        return None  # re-opened by a newer enrolled event
    return withdrawal


def _source_order(identity: Document) -> str | None:
    """The order key of the DCC event an outcome answers, when the outcome says when that event occurred."""
    moment = _datetime(identity.get("source_occurred_at"))
    source = identity.get("source_event_id")
    return order_key(moment, source) if moment is not None and source else None


def _answers_current_event(identity: Document, enrolment: Document | None) -> bool:
    if enrolment is None or identity.get("source_event_id") == enrolment.get("event_id"):
        return True
    if identity.get("status") != "withdrawn":
        return False
    # A withdrawal the gateway has not consumed yet, newer than the enrolled event it knows.
    source = _source_order(identity)
    return source is not None and source > _order(enrolment)


def withdrawn_since(document: Document) -> str | None:
    """The order key of the withdrawal in force (seen by the gateway, or only through the identity-matcher's
    current `withdrawn` outcome), or None when the enrolment is not withdrawn."""
    withdrawal = withdrawal_in_force(document)
    if withdrawal is not None:
        return _order(withdrawal)
    identity = get_path(document, "identity")
    if (
        identity is not None
        and identity.get("status") == "withdrawn"
        and _answers_current_event(identity, get_path(document, "enrolment"))
    ):
        return _source_order(identity) or _order(identity)
    return None


def _reason_fields(told: reasons.ToldReason) -> dict[str, str | None]:
    return {"reason": told.rest, "reason_code": told.code, "reason_text": told.text}


def _withdrawn_identity(identity: Document | None, withdrawal: Document) -> Identity:
    answered = (
        identity is not None
        and identity.get("status") == "withdrawn"
        and identity.get("source_event_id") == withdrawal.get("event_id")
    )
    told = reasons.told(identity) if answered else reasons.NO_REASON
    if told.rest is None:
        told = reasons.of("enrolment_withdrawn")
    return Identity(status="withdrawn", pacs_patients=0, near_misses=[], **_reason_fields(told))


def identity_view(document: Document) -> Identity:
    identity = get_path(document, "identity")
    withdrawal = withdrawal_in_force(document)
    if withdrawal is not None:
        return _withdrawn_identity(identity, withdrawal)
    if identity is None or not _answers_current_event(identity, get_path(document, "enrolment")):
        return Identity(status="pending", pacs_patients=0, near_misses=[], reason=None)
    if identity.get("status") == "withdrawn":
        return Identity(status="withdrawn", pacs_patients=0, near_misses=[], **_reason_fields(reasons.told(identity)))
    return Identity(
        status=identity["status"],
        pacs_patients=len(identity.get("pacs_patients") or ()),
        near_misses=[NearMiss.model_validate(item, strict=False) for item in identity.get("near_misses") or ()],
        **_reason_fields(reasons.told(identity)),
    )


def withdrawal_view(document: Document) -> Withdrawal | None:
    withdrawal = withdrawal_in_force(document)
    moment = _datetime((withdrawal or {}).get("occurred_at"))
    if withdrawal is None or moment is None:
        return None
    reason = withdrawal.get("reason")
    return Withdrawal(at=moment, reason=reason if isinstance(reason, str) and reason else None)


def _linked_rows(document: Document) -> list[CataloguedRow]:
    """The catalogue's studies that belong to the current matched identity."""
    if identity_view(document).status != "matched":
        return []
    catalogue = get_path(document, "catalogue")
    identity = get_path(document, "identity") or {}
    if catalogue is None:
        return []
    linked = [(ref.get("patient_id"), ref.get("issuer")) for ref in identity.get("pacs_patients") or ()]
    rows = []
    for study in catalogue.get("studies") or ():
        owner = study.get("pacs_patient") or {}
        if (owner.get("patient_id"), owner.get("issuer")) in linked:
            rows.append(
                CataloguedRow(
                    study_instance_uid=study["study_instance_uid"],
                    date=_date(study.get("date")),
                    modalities=tuple(study.get("modalities") or ()),
                    raw=study,
                )
            )
    return rows


def selected_uids(document: Document) -> list[str]:
    selection = get_path(document, "selection")
    if selection is None:
        return []
    removals = get_path(document, "removals") or {}
    chosen = []
    for uid in selection.get("study_instance_uids") or ():
        removal = removals.get(study_key(uid))
        if removal is None or str(removal.get("order", "")) < str(selection.get("order", "")):
            chosen.append(uid)
    return chosen


def _removed_after_selection(document: Document, uid: str) -> bool:
    removal = get_path(document, f"removals.{study_key(uid)}")
    selection = get_path(document, "selection")
    return removal is not None and (selection is None or str(removal["order"]) > str(selection.get("order", "")))


def _plain(status: RetrievalView, told: reasons.ToldReason = reasons.NO_REASON) -> Retrieval:
    return Retrieval(
        status=status, progress=None, attempts=0, next_attempt_at=None, viewer_url=None, **_reason_fields(told)
    )


def retrieval_view(
    document: Document, uid: str, *, selected: bool, patient_id: str | None, links: ViewerLinks | None
) -> Retrieval:
    """The study's state for this enrolment; `links` None leaves `viewer_url` unset."""
    job = get_path(document, f"retrieval.{study_key(uid)}")
    if selected:
        selection = get_path(document, "selection") or {}
        requested_again = (
            job is not None
            and job.get("status") == "removed"
            and str(job.get("occurred_at", "")) < str(selection.get("occurred_at", ""))
        )
        since = withdrawn_since(document)
        confirmed = job is not None and not requested_again and job.get("status") in ("removed", "failed")
        if since is not None and not confirmed:
            # Withdrawn: shown gone at once (the fetcher's own `removed`/`failed` follows).
            gone: RetrievalView = "failed" if _order(selection) > since else "removed"
            return _plain(gone, reasons.of("enrolment_withdrawn"))
        if job is None or requested_again:
            return _plain("queued")
    elif job is not None and job.get("status") == "removed":
        pass  # the fetcher confirmed the removal: show its state
    elif _removed_after_selection(document, uid):
        return _plain("removed")
    else:
        return _plain("not_requested")
    assert job is not None
    status = job["status"]
    progress = job.get("progress")
    return Retrieval(
        status=status,
        progress=Progress.model_validate(progress, strict=False) if progress else None,
        attempts=int(job.get("attempts") or 0),
        next_attempt_at=job.get("next_attempt_at"),
        # A link only where the DICOMweb path opens the study: catalogued under a patient still linked.
        viewer_url=links.url(uid, patient_id) if status == "available" and links and patient_id else None,
        **_reason_fields(reasons.told(job)),
    )


def _study(document: Document, uid: str, raw: Document | None, *, selected: bool, links: ViewerLinks) -> Study:
    raw = raw or {}
    owner = raw.get("pacs_patient") or {}
    return Study(
        study_instance_uid=uid,
        description=raw.get("description"),
        pacs=raw.get("pacs"),
        date=_date(raw.get("date")),
        modalities=list(raw.get("modalities") or ()),
        images=raw.get("images"),
        series=raw.get("series"),
        selected=selected,
        retrieval=retrieval_view(document, uid, selected=selected, patient_id=owner.get("patient_id"), links=links),
    )


def study_patient_id(document: Document, uid: str) -> str | None:
    for row in _linked_rows(document):
        if row.study_instance_uid == uid:
            owner = row.raw.get("pacs_patient") or {}
            value = owner.get("patient_id")
            return value if isinstance(value, str) else None
    return None


def viewable_patient_id(document: Document, uid: str) -> str | None:
    """The PACS PatientID the study was catalogued under when the enrolment shows it `available`, else None.

    This is what opens a study to the viewer (gateway.dicomweb): selected for this enrolment, moved completely,
    and neither withdrawn nor removed since (the same rules as the state REST shows).
    """
    if uid not in selected_uids(document):
        return None
    patient_id = study_patient_id(document, uid)
    state = retrieval_view(document, uid, selected=True, patient_id=patient_id, links=None)
    return patient_id if state.status == "available" else None


def expertise_view(document: Document) -> Expertise:
    selection = get_path(document, "selection") or {}
    notifications = get_path(document, "notifications") or {}
    items = [
        Notification(
            role=item.get("role"), status=item["status"], at=item["occurred_at"], **_reason_fields(reasons.told(item))
        )
        for _, item in sorted(notifications.items())
        if isinstance(item, dict)
    ]
    return Expertise(requested=bool(selection.get("expertise_requested", False)), notifications=items)


def patient_view(document: Document) -> PatientOut | None:
    patient = get_path(document, "enrolment.patient")
    return PatientOut.model_validate(patient) if patient is not None else None


def catalogue_view(document: Document) -> Catalogue:
    catalogue = get_path(document, "catalogue")
    if catalogue is None:
        return Catalogue(status="pending", reason=None, at=None, studies=0)
    return Catalogue(
        status=catalogue["status"],
        at=catalogue.get("occurred_at"),
        studies=len(_linked_rows(document)),
        **_reason_fields(reasons.told(catalogue)),
    )


def enrolment_view(
    document: Document,
    rcp: Document | None,
    overrides: flt.Overrides,
    today: dt.date,
    links: ViewerLinks,
) -> Enrolment:
    """`GET /api/v1/enrolments/{id}`. Raises `filters.InvalidFilterError` for overrides that make no sense."""
    enrolment = get_path(document, "enrolment") or {}
    identity = get_path(document, "identity") or {}
    filters = flt.effective_filters(rcp_filters(rcp), overrides)
    chosen = selected_uids(document)
    rows = _linked_rows(document)
    listed = flt.visible(rows, filters, chosen, today)
    studies = [
        _study(document, row.study_instance_uid, row.raw, selected=row.study_instance_uid in chosen, links=links)
        for row in listed
    ]
    known = {row.study_instance_uid for row in rows}
    studies += [_study(document, uid, None, selected=True, links=links) for uid in chosen if uid not in known]
    return Enrolment(
        enrolment_id=document["_id"],
        meeting_id=enrolment.get("meeting_id") or identity.get("meeting_id"),
        rcp_id=enrolment.get("rcp_id"),
        identity=identity_view(document),
        filters=filters,
        studies=studies,
        expertise=expertise_view(document),
        consent=enrolment.get("consent"),
        patient=patient_view(document),
        requested_by=(enrolment.get("requested_by") or {}).get("name"),
        meeting=MeetingRef(
            title=enrolment.get("meeting_title"),
            date=_date(enrolment.get("meeting_date")),
            centre=enrolment.get("centre"),
        )
        if enrolment
        else None,
        catalogue=catalogue_view(document),
        withdrawal=withdrawal_view(document),
    )


def study_states(document: Document) -> StudyStates:
    chosen = selected_uids(document)
    statuses: Counter[str] = Counter()
    uids = set(chosen) | {
        item["study_instance_uid"]
        for item in (get_path(document, "removals") or {}).values()
        if isinstance(item, dict) and "study_instance_uid" in item
    }
    for uid in sorted(uids):
        view = retrieval_view(document, uid, selected=uid in chosen, patient_id=None, links=_NO_LINKS)
        if view.status != "not_requested":
            statuses[view.status] += 1
    return StudyStates(selected=len(chosen), by_status=dict(sorted(statuses.items())))


_NO_LINKS = ViewerLinks("")


def summary_view(document: Document) -> EnrolmentSummary:
    enrolment = get_path(document, "enrolment") or {}
    identity: IdentityView = identity_view(document).status
    catalogue = get_path(document, "catalogue")
    return EnrolmentSummary(
        enrolment_id=document["_id"],
        patient=patient_view(document),
        consent=enrolment.get("consent"),
        identity_status=identity,
        catalogued=len(_linked_rows(document)) if catalogue is not None else None,
        studies=study_states(document),
        expertise_requested=expertise_view(document).requested,
    )


def meeting_view(meeting_id: str, document: Document | None) -> Meeting:
    """Prefers the DCC's meeting event; falls back on what enrolments said about the meeting."""
    experts = get_path(document, "experts")
    details = experts or get_path(document, "enrolment_details") or {}

    def expert(role: str) -> ExpertOut | None:
        value = (experts or {}).get(role)
        return ExpertOut.model_validate(value) if isinstance(value, dict) else None

    return Meeting(
        meeting_id=meeting_id,
        rcp_id=details.get("rcp_id"),
        title=details.get("title"),
        date=_date(details.get("date")),
        centre=details.get("centre"),
        on_call_radiologist=expert("on_call_radiologist"),
        on_call_nuclear_physician=expert("on_call_nuclear_physician"),
    )


def rcp_view(document: Document) -> RcpOut | None:
    settings = get_path(document, "settings")
    if settings is None:
        return None
    return RcpOut(
        rcp_id=document["_id"],
        title=settings["title"],
        centre=settings["centre"],
        imaging=ImagingFilters.model_validate(settings["imaging"], strict=False),
    )
