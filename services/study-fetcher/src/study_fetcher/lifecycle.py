"""The enrolment's lifecycle as the fetcher sees it, and what it means for each selected study (pure).

CONTRACT v1.1, "Lifecycle of an enrolment": a selection only ever moves studies of a PACS patient currently
linked to the enrolment and present in its current catalogue. The identity-matcher orders the DCC's enrolled
and withdrawn events and publishes the outcome (`identity.resolved.v1`); this module turns the latest outcome
into verdicts:

| lifecycle status                   | a selection made after the last closure | made before it         |
|------------------------------------|-----------------------------------------|------------------------|
| unknown / pending (no outcome yet) | `Hold` waiting_identity                 | `Void` (closure's code)|
| matched, catalogue not listed yet  | `Hold` waiting_catalogue                | `Void`                 |
| matched, study in the catalogue    | `Admit` (owner = the linked patient)    | `Void`                 |
| matched, study not in it           | `Deny` not_patient_study                | `Void`                 |
| unmatched                          | `Deny` patient_not_found                | `Void`                 |
| no_consent / withdrawn             | `Deny` no_consent / enrolment_withdrawn | `Void`                 |

A closure's code: consent_withdrawn (no_consent) or enrolment_withdrawn (withdrawn).

A selection made while the enrolment was closed, judged after a re-opening, is denied as it was then.

"Before the last closure" makes the outcome that of the events' `occurred_at` order whatever their arrival
order: a selection older than a withdrawal never moves anything, and a later enrolled event with consent
re-opens the enrolment from scratch (the old selection stays removed; the DCC selects again).

When the lifecycle changes (`on_change`), each existing job is judged again: a closure removes every job
(`Close` with consent_withdrawn / enrolment_withdrawn), a corrected identity removes the jobs of PACS patients
no longer linked (`Close` identity_changed) and keeps the others, and held jobs are settled once the identity
and the catalogue are known.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from proxymage_shared.reasons import Reason

from study_fetcher import domain
from study_fetcher.domain import Admission, Admit, Close, Deny, Hold, Job, Owner, Settle, Void

LifecycleStatus: TypeAlias = Literal["pending", "matched", "unmatched", "no_consent", "withdrawn"]
CLOSED: Final = frozenset({"no_consent", "withdrawn"})

# The reason a closure gives to what it removes, and to a selection made while closed.
_REMOVED_BY: Final[dict[str, str]] = {"no_consent": "consent_withdrawn", "withdrawn": "enrolment_withdrawn"}
_DENIED_BY: Final[dict[str, str]] = {"no_consent": "no_consent", "withdrawn": "enrolment_withdrawn"}


@dataclass(frozen=True, slots=True)
class Lifecycle:
    status: LifecycleStatus = "pending"
    patients: frozenset[Owner] = frozenset()
    # uid -> the linked patient whose study it is; None until listed for the current identity.
    catalogue: Mapping[str, Owner] | None = None
    closed_at: dt.datetime | None = None  # occurred_at of the DCC event that last closed the enrolment
    closed_by: LifecycleStatus | None = None  # no_consent or withdrawn
    reopened_at: dt.datetime | None = None  # occurred_at of the enrolled event that re-opened it after that

    @property
    def closed(self) -> bool:
        return self.status in CLOSED


def advance(life: Lifecycle, status: LifecycleStatus, source_at: dt.datetime, patients: frozenset[Owner]) -> Lifecycle:
    """The lifecycle after a newer outcome (`status`, answering a DCC event of time `source_at`). A closure
    remembers its time (older selections are void whatever their arrival order); re-opening after a closure
    remembers its own (what was selected while closed stays denied). The catalogue is listed again for every
    new outcome (None until then), except that a closed or unmatched enrolment has none at all."""
    closed_at, closed_by, reopened_at = life.closed_at, life.closed_by, life.reopened_at
    if status in CLOSED:
        if closed_at is None or closed_at <= source_at:
            closed_at, closed_by = source_at, status
    elif life.status in CLOSED:
        reopened_at = source_at
    return Lifecycle(
        status=status,
        patients=patients if status == "matched" else frozenset(),
        catalogue=None if status in ("matched", "pending") else {},
        closed_at=closed_at,
        closed_by=closed_by,
        reopened_at=reopened_at,
    )


def judge(life: Lifecycle, study_instance_uid: str, selected_at: dt.datetime) -> Admission:
    """The verdict on one study of a selection made at `selected_at` (see the table above)."""
    if life.closed_at is not None and life.closed_by is not None:
        if selected_at < life.closed_at:
            return Void(Reason.of(_REMOVED_BY[life.closed_by]))
        if life.reopened_at is not None and selected_at < life.reopened_at:
            return Deny(Reason.of(_DENIED_BY[life.closed_by]))  # made while closed: re-opening starts afresh
    if life.status in CLOSED:
        return Deny(Reason.of(_DENIED_BY[life.status]))
    if life.status == "pending":
        return Hold(Reason.of("waiting_identity"))
    if life.status == "unmatched":
        return Deny(Reason.of("patient_not_found"))
    if life.catalogue is None:
        return Hold(Reason.of("waiting_catalogue"))
    owner = life.catalogue.get(study_instance_uid)
    if owner is None or owner not in life.patients:
        return Deny(Reason.of("not_patient_study"))
    return Admit(owner)


def on_change(life: Lifecycle, job: Job, study_instance_uid: str, changed_at: dt.datetime) -> Settle | Close | None:
    """What the lifecycle `life` (just changed, at event time `changed_at`) does to an existing job."""
    if job.state == "removed":
        return None
    if domain.undecided(job):
        verdict = judge(life, study_instance_uid, job.selected_at)
        if isinstance(verdict, Void):
            return Close(changed_at, verdict.reason)
        return Settle(verdict)  # a no-op when the verdict is unchanged
    if life.status in CLOSED:
        return Close(changed_at, Reason.of(_REMOVED_BY[life.status]), Reason.of(_DENIED_BY[life.status]))
    if job.owner is None or life.status == "pending":
        return None  # legacy job without owner, or a correction being resolved: its outcome decides
    if life.status == "unmatched" or job.owner not in life.patients:
        return Close(changed_at, Reason.of("identity_changed"))
    return None
