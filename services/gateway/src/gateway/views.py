"""From read-model documents to the REST answers (pure; the documents come from `gateway.projection`).

Rules beyond CONTRACT.md's wording:
- `identity.status` is `pending` until the outcome of the enrolment's *current* enrolled event arrives
  (a corrected identity makes the previous outcome obsolete).
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
    Study,
    StudyStates,
)
from gateway.projection import get_path, study_key
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


def rcp_filters(rcp: Document | None) -> ImagingFilters | None:
    settings = get_path(rcp, "settings")
    if settings is None:
        return None
    return ImagingFilters.model_validate(settings["imaging"], strict=False)


def identity_view(document: Document) -> Identity:
    identity = get_path(document, "identity")
    enrolment = get_path(document, "enrolment")
    if identity is None or (enrolment is not None and identity.get("source_event_id") != enrolment.get("event_id")):
        return Identity(status="pending", pacs_patients=0, near_misses=[], reason=None)
    return Identity(
        status=identity["status"],
        pacs_patients=len(identity.get("pacs_patients") or ()),
        near_misses=[NearMiss.model_validate(item, strict=False) for item in identity.get("near_misses") or ()],
        reason=identity.get("reason"),
    )


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


def retrieval_view(
    document: Document, uid: str, *, selected: bool, patient_id: str | None, links: ViewerLinks
) -> Retrieval:
    job = get_path(document, f"retrieval.{study_key(uid)}")
    if selected:
        selection = get_path(document, "selection") or {}
        requested_again = (
            job is not None
            and job.get("status") == "removed"
            and str(job.get("occurred_at", "")) < str(selection.get("occurred_at", ""))
        )
        if job is None or requested_again:
            return Retrieval(
                status="queued", progress=None, attempts=0, next_attempt_at=None, reason=None, viewer_url=None
            )
    elif job is not None and job.get("status") == "removed":
        pass  # the fetcher confirmed the removal: show its state
    elif _removed_after_selection(document, uid):
        return Retrieval(
            status="removed", progress=None, attempts=0, next_attempt_at=None, reason=None, viewer_url=None
        )
    else:
        return Retrieval(
            status="not_requested", progress=None, attempts=0, next_attempt_at=None, reason=None, viewer_url=None
        )
    assert job is not None
    status = job["status"]
    progress = job.get("progress")
    return Retrieval(
        status=status,
        progress=Progress.model_validate(progress, strict=False) if progress else None,
        attempts=int(job.get("attempts") or 0),
        next_attempt_at=job.get("next_attempt_at"),
        reason=job.get("reason"),
        viewer_url=links.url(uid, patient_id) if status == "available" else None,
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


def expertise_view(document: Document) -> Expertise:
    selection = get_path(document, "selection") or {}
    notifications = get_path(document, "notifications") or {}
    items = [
        Notification(role=item.get("role"), status=item["status"], at=item["occurred_at"], reason=item.get("reason"))
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
        reason=catalogue.get("reason"),
        at=catalogue.get("occurred_at"),
        studies=len(_linked_rows(document)),
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
