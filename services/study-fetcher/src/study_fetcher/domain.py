"""The retrieval state machine of one job (enrolment x StudyInstanceUID), pure: no I/O, no asyncio, no clock.

Like the steps of Orthanc's jobs engine, every fact the outside world reports about a job is an *input*;
`transition(job, input, policy)` answers the job's next value, or `None` when the input does not apply in
the job's state (a replayed or stale event, a worker that lost the job to a removal...).

State table (rows: current state; columns: inputs; `-` = not applicable, the job is unchanged;
n.y.a. = not_yet_available):

=========== ============ ============= =========== ============== =========== ========= ================ =======
state       Select       Remove        Refresh     Start          Progressed  Verified  Retry            Refused
            (newer)      (newer)
=========== ============ ============= =========== ============== =========== ========= ================ =======
queued      queued [1]   removed       -           retrieving     -           -         -                -
retrieving  retriev. [1] removed       -           retrieving [2] retrieving  available n.y.a./failed [3] failed
n.y.a.      n.y.a. [1]   removed       n.y.a. [6]  retrieving     -           -         -                -
available   avail. [1]   removed       -           -              -           -         -                -
failed      failed [1]   removed       queued [4]  -              -           -         -                -
removed     queued [5]   -             -           -              -           -         -                -
=========== ============ ============= =========== ============== =========== ========= ================ =======

PeerBack (a peer answers again) applies to `not_yet_available` only, which it keeps [7].

[1] a newer selection of a live job only records its time (`selected_at`): no state change, no new version.
[2] a worker taking over a job whose previous worker died (its lease expired): a new attempt, with the reason
    `resumed` ("reprise après interruption") until it ends, so the status says why it starts again.
[3] `failed` ("deadline passed: <cause>") once the deadline is reached, else `not_yet_available` with the
    next attempt on the backoff schedule, never later than the deadline (so the last try runs at it).
[4] only before the deadline: a user's Refresh retries a study that MIRC refused (e.g. once an operator has
    fixed the move destination).
[5] only by a selection newer than the removal: nothing else leaves `removed` (a move that ends after the
    removal, a replayed older selection, a refresh...). A removal older than the latest selection is ignored.
[6] due now (unless it already is).
[7] only for a job waiting because that peer was unreachable (`waiting_for`): due at the time given (a few
    seconds from now, jittered by the caller), with the reason saying the peer answers again.

Admission (CONTRACT v1.1, `study_fetcher.lifecycle`): every selection comes with the verdict of the enrolment's
lifecycle on that study (`Select.admission`): `Admit` (the study of a currently linked PACS patient, in the
current catalogue), `Hold` (identity or catalogue not known yet: the job waits, `queued` and *held*: no
worker may start it), `Deny` (unmatched, no consent, withdrawn, not the patient's study: `failed` with the
reason, nothing moved) or `Void` (the selection predates the enrolment's closure: `removed`). A held job is
settled later by `Admit` / `Deny`; `Close` (consent or enrolment withdrawn, corrected identity) removes any
job that is not removed yet, whatever it was doing, with the reason. A job that failed on admission is
never re-queued by a Refresh: only a newer selection, judged again, can revive it.

`available` is reached only through `Verified`, which only `assess_move` (a move without failed
sub-operations whose result the viewer store confirms) or `assess_reuse` (the same for an earlier recorded
move of the study) produce.

Every change that a consumer can see (state, attempts, progress, next attempt, reason) increments `version`
by exactly one; bookkeeping-only changes keep it. Consumers ignore an update whose version is not newer.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field, replace
from typing import Final, TypeAlias

from proxymage_shared.events import RetrievalStatus
from proxymage_shared.reasons import Reason
from proxymage_shared.retry import BackoffSchedule

State: TypeAlias = RetrievalStatus
STATES: Final[tuple[State, ...]] = ("queued", "retrieving", "not_yet_available", "available", "failed", "removed")
# A live job still uses (or will use) its study in the viewer store.
LIVE_STATES: Final = frozenset({"queued", "retrieving", "not_yet_available", "available"})
# States in which a worker may start an attempt (when due); `retrieving` only when its lease has expired.
WAITING_STATES: Final = frozenset({"queued", "not_yet_available"})

# Reasons (a stable code and the French text users read: CONTRACT v1.1, proxymage_shared.reasons).
NOT_IN_MIRC: Final = Reason.of("not_in_mirc")
PACS_UNREACHABLE: Final = Reason.of("pacs_unreachable")
VIEWER_UNREACHABLE: Final = Reason.of("viewer_unreachable")
DEADLINE_PASSED: Final = "deadline_passed"
RESUMED: Final = Reason.of("resumed")  # a worker takes over an attempt whose worker stopped (lease expired)
# The peers a job can wait for, by the reason it waits with, and what it says once the peer answers again.
PEER_OF_REASON: Final[dict[str, str]] = {PACS_UNREACHABLE.code: "mirc", VIEWER_UNREACHABLE.code: "viewer"}
PEER_BACK: Final[dict[str, Reason]] = {"mirc": Reason.of("pacs_back"), "viewer": Reason.of("viewer_back")}
# Failures decided by the enrolment's lifecycle, not by a retrieval: a Refresh never retries them.
ADMISSION_CODES: Final = frozenset(
    {"patient_not_found", "no_consent", "enrolment_withdrawn", "consent_withdrawn", "not_patient_study",
     "identity_changed"}
)  # fmt: skip

Owner: TypeAlias = tuple[str, str | None]  # the linked PACS patient a study was admitted for: (PatientID, issuer)


@dataclass(frozen=True, slots=True)
class Progress:
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class Job:
    """What the state machine knows of one retrieval job."""

    state: State
    version: int
    attempts: int
    next_attempt_at: dt.datetime | None
    deadline: dt.datetime | None
    reason: str | None
    progress: Progress | None
    selected_at: dt.datetime  # event time of the newest DCC selection that includes the study
    removed_at: dt.datetime | None = None  # event time of the removal that applies, if removed
    reason_code: str | None = None  # the stable code of `reason` (proxymage_shared.reasons)
    held: bool = False  # queued, waiting for the enrolment's identity or catalogue: no worker may start it
    owner: Owner | None = None  # the linked PACS patient the study was admitted for


@dataclass(frozen=True, slots=True)
class RetrievalPolicy:
    """The backoff policy as data (from settings). `rng` draws the jitter; tests pass a seeded one."""

    schedule: BackoffSchedule = field(default_factory=BackoffSchedule)
    rng: random.Random = field(default_factory=random.Random)


# --- admission verdicts (study_fetcher.lifecycle.judge) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admit:
    """The study belongs to a PACS patient linked to the enrolment now, and is in its current catalogue."""

    owner: Owner | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """Not decidable yet (identity or catalogue unknown): wait, without touching any PACS."""

    reason: Reason


@dataclass(frozen=True, slots=True)
class Deny:
    """Never to be moved for this enrolment as it stands: `failed` with the reason."""

    reason: Reason


@dataclass(frozen=True, slots=True)
class Void:
    """The selection is older than the enrolment's closure (withdrawal, consent withdrawn): `removed`."""

    reason: Reason


Admission: TypeAlias = Admit | Hold | Deny | Void

# --- inputs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Select:
    """The DCC's selection (event time `at`) includes the study; `admission` is the lifecycle's verdict."""

    at: dt.datetime
    admission: Admission  # no default: a selection is never admitted without the lifecycle's verdict


@dataclass(frozen=True, slots=True)
class Settle:
    """The lifecycle judges an undecided job again (identity resolved, catalogue listed, re-opened)."""

    admission: Admit | Hold | Deny


def undecided(job: Job) -> bool:
    """Held, or failed on admission without ever being admitted: the lifecycle may still change its verdict."""
    return (job.state == "queued" and job.held) or (
        job.state == "failed" and job.reason_code in ADMISSION_CODES and job.owner is None
    )


@dataclass(frozen=True, slots=True)
class Close:
    """Consent withdrawn, enrolment withdrawn or identity corrected (event time `at`): stop and remove.

    A job selected *after* `at` (its selection arrived before the closure did) was never wanted under the
    closed enrolment: with a `denial`, it ends `failed` with it instead, undecided (a re-opening judges it
    again), as if the closure had arrived first."""

    at: dt.datetime
    reason: Reason
    denial: Reason | None = None


@dataclass(frozen=True, slots=True)
class Remove:
    """The DCC removed the study (or a newer selection dropped it), at event time `at`."""

    at: dt.datetime


@dataclass(frozen=True, slots=True)
class Refresh:
    """The DCC asks to retry waiting studies now."""

    now: dt.datetime


@dataclass(frozen=True, slots=True)
class Start:
    """A worker claimed the job and starts an attempt."""

    now: dt.datetime


@dataclass(frozen=True, slots=True)
class PeerBack:
    """`peer` answers again: a job waiting because it was unreachable is due at `at`."""

    peer: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class Progressed:
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class Verified:
    """A complete move of the study, confirmed by the viewer store's instance count."""

    instances: int


@dataclass(frozen=True, slots=True)
class Retry:
    """The attempt did not make the study available for a reason that may go away."""

    now: dt.datetime
    reason: Reason


@dataclass(frozen=True, slots=True)
class Refused:
    """MIRC refused the move itself (e.g. the destination is unknown to it): retrying cannot help."""

    reason: Reason


Input: TypeAlias = (
    Select | Settle | Close | Remove | Refresh | Start | Progressed | Verified | Retry | Refused | PeerBack
)
Outcome: TypeAlias = Verified | Retry | Refused  # how an attempt ends


def new_job(selected_at: dt.datetime, deadline: dt.datetime | None, admission: Admission) -> Job:
    """A freshly selected study, version 1 (the first version consumers see): `queued` when admitted (or
    held), `failed` when denied, `removed` when the selection predates the enrolment's closure."""
    job = Job("queued", 1, 0, None, deadline, None, None, selected_at)
    return _admitted(job, admission, selected_at)


def _admitted(job: Job, admission: Admission, at: dt.datetime) -> Job:
    """`job` (already versioned by the caller) as `admission` says, selected at `at`."""
    fresh = replace(job, selected_at=at, removed_at=None, progress=None, next_attempt_at=None)
    match admission:
        case Admit(owner=owner):
            return replace(fresh, state="queued", held=False, owner=owner, reason=None, reason_code=None)
        case Hold(reason=reason):
            return replace(fresh, state="queued", held=True, owner=None, reason=reason.text, reason_code=reason.code)
        case Deny(reason=reason):
            return replace(fresh, state="failed", held=False, owner=None, reason=reason.text, reason_code=reason.code)
        case Void(reason=reason):
            return replace(
                fresh,
                state="removed",
                held=False,
                owner=None,
                removed_at=at,
                reason=reason.text,
                reason_code=reason.code,
            )
    raise AssertionError(f"unknown admission {admission!r}")  # pragma: no cover - exhaustive match


def _reason(job: Job, reason: Reason | None) -> dict[str, object]:
    return {"reason": reason.text if reason else None, "reason_code": reason.code if reason else None}


def removed_tombstone(removed_at: dt.datetime) -> Job:
    """A removal for a study never selected: remembered (version 0, never published) so that an older
    selection arriving late cannot start it."""
    return Job("removed", 0, 0, None, None, None, None, dt.datetime.min.replace(tzinfo=dt.UTC), removed_at)


def _changed(job: Job, **changes: object) -> Job:
    return replace(job, version=job.version + 1, **changes)  # type: ignore[arg-type]


def transition(job: Job, event: Input, policy: RetrievalPolicy) -> Job | None:
    """The job after `event`, or None when `event` does not apply (see the state table above)."""
    state = job.state
    match event:
        case Select(at=at, admission=admission):
            if state == "removed":
                if (job.removed_at is not None and at <= job.removed_at) or isinstance(admission, Void):
                    return None
                return _admitted(_changed(job), admission, at)
            if at <= job.selected_at:
                return None
            if job.held or (state == "failed" and job.reason_code in ADMISSION_CODES):
                judged = _admitted(job, admission, at)  # judged again, as a new selection
                if (judged.state, judged.held, judged.reason_code) == (state, job.held, job.reason_code):
                    return replace(job, selected_at=at)
                return replace(judged, version=job.version + 1)
            return replace(job, selected_at=at)
        case Settle(admission=admission):
            if not undecided(job):
                return None
            judged = _admitted(job, admission, job.selected_at)
            if (judged.state, judged.held, judged.reason_code, judged.owner) == (
                state,
                job.held,
                job.reason_code,
                job.owner,
            ):
                return None
            return replace(judged, version=job.version + 1)
        case Close(at=at, reason=reason, denial=denial):
            if state == "removed":
                return None
            if denial is not None and job.selected_at > at:
                if state == "failed" and job.reason_code == denial.code and job.owner is None:
                    return None
                return _changed(
                    job, state="failed", held=False, owner=None, next_attempt_at=None, **_reason(job, denial)
                )
            return _changed(
                job, state="removed", removed_at=max(at, job.selected_at), held=False, next_attempt_at=None,
                **_reason(job, reason),
            )  # fmt: skip
        case Remove(at=at):
            if state == "removed" or at < job.selected_at:
                return None
            return _changed(
                job, state="removed", removed_at=at, held=False, reason=None, reason_code=None, next_attempt_at=None
            )
        case Refresh(now=now):
            if state == "not_yet_available":
                if job.next_attempt_at is not None and job.next_attempt_at <= now:
                    return None  # already due
                return _changed(job, next_attempt_at=now)
            if (
                state == "failed"
                and job.reason_code not in ADMISSION_CODES
                and (job.deadline is None or now < job.deadline)
            ):
                return _changed(job, state="queued", reason=None, reason_code=None, next_attempt_at=None)
            return None
        case Start():
            if state not in ("queued", "not_yet_available", "retrieving") or job.held:
                return None
            # Retrieving already: the worker of the previous attempt stopped (its lease expired).
            resumed = RESUMED if state == "retrieving" else None
            return _changed(
                job,
                state="retrieving",
                attempts=job.attempts + 1,
                next_attempt_at=None,
                progress=None,
                **_reason(job, resumed),
            )
        case PeerBack(peer=peer, at=at):
            if waiting_for(job) != peer:
                return None
            due = at if job.next_attempt_at is None else min(job.next_attempt_at, at)
            return _changed(job, next_attempt_at=due, **_reason(job, PEER_BACK.get(peer)))
        case Progressed(done=done, total=total):
            progress = Progress(min(done, total), total)
            if state != "retrieving" or progress == job.progress:
                return None
            return _changed(job, progress=progress)
        case Verified(instances=instances):
            if state != "retrieving":
                return None
            return _changed(
                job,
                state="available",
                progress=Progress(instances, instances),
                reason=None,
                reason_code=None,
                next_attempt_at=None,
            )
        case Retry(now=now, reason=reason):
            if state != "retrieving":
                return None
            if job.deadline is not None and now >= job.deadline:
                final = Reason.of(DEADLINE_PASSED, reason.text)
                return _changed(job, state="failed", next_attempt_at=None, **_reason(job, final))
            next_attempt_at = policy.schedule.next_attempt_at(now, job.attempts, policy.rng)
            if job.deadline is not None:
                next_attempt_at = min(next_attempt_at, job.deadline)
            return _changed(job, state="not_yet_available", next_attempt_at=next_attempt_at, **_reason(job, reason))
        case Refused(reason=reason):
            if state != "retrieving":
                return None
            return _changed(job, state="failed", next_attempt_at=None, **_reason(job, reason))
    raise AssertionError(f"unknown input {event!r}")  # pragma: no cover - exhaustive match


# --- judging an attempt ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MoveReport:
    """How a C-MOVE ended, as far as the decision needs it."""

    completed: int
    failed: int


def expected_instances(mirc_instances: int | None, move: MoveReport) -> int:
    """What the viewer store must hold: MIRC's NumberOfStudyRelatedInstances, or (when MIRC does not give
    it) the number of instances the move says it sent."""
    return mirc_instances if mirc_instances is not None else move.completed


def assess_move(
    move: MoveReport, mirc_instances: int | None, viewer_instances: int | None, now: dt.datetime
) -> Outcome:
    """`Verified` only if the move had no failed sub-operation AND the viewer store reports at least as many
    instances as MIRC has for the study; otherwise a `Retry` saying what is missing."""
    expected = expected_instances(mirc_instances, move)
    if move.failed:
        total = move.completed + move.failed
        return Retry(now, Reason.of("move_incomplete", f"{move.failed} instances sur {total} en échec"))
    if viewer_instances is None:
        return Retry(now, Reason.of("move_incomplete", "le stockage de la visionneuse ne liste pas l'examen"))
    if expected <= 0 or viewer_instances < expected:
        detail = f"le stockage de la visionneuse contient {viewer_instances} instances sur {expected}"
        return Retry(now, Reason.of("move_incomplete", detail))
    return Verified(viewer_instances)


def assess_reuse(
    recorded_instances: int | None, mirc_instances: int | None, viewer_instances: int | None
) -> Outcome | None:
    """A study that an earlier verified move (of another job, `recorded_instances`) put in the viewer store is
    available without moving it again if the store still holds at least what MIRC has; else None (move)."""
    if recorded_instances is None or mirc_instances is None or viewer_instances is None:
        return None
    if viewer_instances < max(mirc_instances, recorded_instances, 1):
        return None
    return Verified(viewer_instances)


# --- deadlines ---------------------------------------------------------------------------


def deadline_for(meeting_date: dt.date, after: dt.timedelta, timezone: dt.tzinfo) -> dt.datetime:
    """The retrieval deadline: the meeting day's midnight (local time of the network) plus `after`;
    with the default `after` of one day, the end of the meeting day."""
    midnight = dt.datetime.combine(meeting_date, dt.time(0), tzinfo=timezone)
    return (midnight + after).astimezone(dt.UTC)


def waiting_for(job: Job) -> str | None:
    """The peer a waiting job waits for (it was unreachable at the last attempt), None for any other job."""
    if job.state != "not_yet_available" or job.reason_code is None:
        return None
    return PEER_OF_REASON.get(job.reason_code)


def recovery_at(now: dt.datetime, spread_seconds: float, rng: random.Random) -> dt.datetime:
    """When a job waiting for a peer that answers again is retried: within `spread_seconds` of `now`, drawn
    by `rng`, so that the jobs of a long outage do not all hit the peer (and the store) at the same instant."""
    return now + dt.timedelta(seconds=rng.uniform(0, spread_seconds))


def due_at(job: Job, now: dt.datetime, lease_until: dt.datetime) -> dt.datetime | None:
    """When a worker may (re)start the job: queued at once, waiting at its next attempt, retrieving when its
    lease expires (take-over); never for the final states, nor while held (waiting for the lifecycle)."""
    if job.held:
        return None
    if job.state == "queued":
        return now
    if job.state == "not_yet_available":
        return job.next_attempt_at or now
    if job.state == "retrieving":
        return lease_until
    return None
