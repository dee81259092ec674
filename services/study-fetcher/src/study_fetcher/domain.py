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

[1] a newer selection of a live job only records its time (`selected_at`): no state change, no new version.
[2] a worker taking over a job whose previous worker died (its lease expired): a new attempt.
[3] `failed` ("deadline passed: <cause>") once the deadline is reached, else `not_yet_available` with the
    next attempt on the backoff schedule, never later than the deadline (so the last try runs at it).
[4] only before the deadline: a user's Refresh retries a study that MIRC refused (e.g. once an operator has
    fixed the move destination).
[5] only by a selection newer than the removal: nothing else leaves `removed` (a move that ends after the
    removal, a replayed older selection, a refresh...). A removal older than the latest selection is ignored.
[6] due now (unless it already is).

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
from proxymage_shared.retry import BackoffSchedule

State: TypeAlias = RetrievalStatus
STATES: Final[tuple[State, ...]] = ("queued", "retrieving", "not_yet_available", "available", "failed", "removed")
# A live job still uses (or will use) its study in the viewer store.
LIVE_STATES: Final = frozenset({"queued", "retrieving", "not_yet_available", "available"})
# States in which a worker may start an attempt (when due); `retrieving` only when its lease has expired.
WAITING_STATES: Final = frozenset({"queued", "not_yet_available"})

# User-readable reasons (CONTRACT.md: "in words a user understands").
NOT_IN_MIRC: Final = "not yet in MIRC"
PACS_UNREACHABLE: Final = "PACS unreachable"
VIEWER_UNREACHABLE: Final = "viewer store unreachable"
DEADLINE_PASSED: Final = "deadline passed"


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


@dataclass(frozen=True, slots=True)
class RetrievalPolicy:
    """The backoff policy as data (from settings). `rng` draws the jitter; tests pass a seeded one."""

    schedule: BackoffSchedule = field(default_factory=BackoffSchedule)
    rng: random.Random = field(default_factory=random.Random)


# --- inputs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Select:
    """The DCC's selection (event time `at`) includes the study."""

    at: dt.datetime


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
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """MIRC refused the move itself (e.g. the destination is unknown to it): retrying cannot help."""

    reason: str


Input: TypeAlias = Select | Remove | Refresh | Start | Progressed | Verified | Retry | Refused
Outcome: TypeAlias = Verified | Retry | Refused  # how an attempt ends


def new_job(selected_at: dt.datetime, deadline: dt.datetime | None) -> Job:
    """A freshly selected study: `queued`, version 1 (the first version consumers see)."""
    return Job("queued", 1, 0, None, deadline, None, None, selected_at)


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
        case Select(at=at):
            if state == "removed":
                if job.removed_at is not None and at <= job.removed_at:
                    return None
                return _changed(
                    job,
                    state="queued",
                    selected_at=at,
                    removed_at=None,
                    reason=None,
                    progress=None,
                    next_attempt_at=None,
                )
            if at <= job.selected_at:
                return None
            return replace(job, selected_at=at)
        case Remove(at=at):
            if state == "removed" or at < job.selected_at:
                return None
            return _changed(job, state="removed", removed_at=at, reason=None, next_attempt_at=None)
        case Refresh(now=now):
            if state == "not_yet_available":
                if job.next_attempt_at is not None and job.next_attempt_at <= now:
                    return None  # already due
                return _changed(job, next_attempt_at=now)
            if state == "failed" and (job.deadline is None or now < job.deadline):
                return _changed(job, state="queued", reason=None, next_attempt_at=None)
            return None
        case Start():
            if state not in ("queued", "not_yet_available", "retrieving"):
                return None
            return _changed(
                job, state="retrieving", attempts=job.attempts + 1, next_attempt_at=None, progress=None, reason=None
            )
        case Progressed(done=done, total=total):
            progress = Progress(min(done, total), total)
            if state != "retrieving" or progress == job.progress:
                return None
            return _changed(job, progress=progress)
        case Verified(instances=instances):
            if state != "retrieving":
                return None
            return _changed(
                job, state="available", progress=Progress(instances, instances), reason=None, next_attempt_at=None
            )
        case Retry(now=now, reason=reason):
            if state != "retrieving":
                return None
            if job.deadline is not None and now >= job.deadline:
                return _changed(job, state="failed", reason=f"{DEADLINE_PASSED}: {reason}", next_attempt_at=None)
            next_attempt_at = policy.schedule.next_attempt_at(now, job.attempts, policy.rng)
            if job.deadline is not None:
                next_attempt_at = min(next_attempt_at, job.deadline)
            return _changed(job, state="not_yet_available", reason=reason, next_attempt_at=next_attempt_at)
        case Refused(reason=reason):
            if state != "retrieving":
                return None
            return _changed(job, state="failed", reason=reason, next_attempt_at=None)
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
        return Retry(now, f"move incomplete: {move.failed} of {total} instances failed")
    if viewer_instances is None:
        return Retry(now, "move incomplete: the viewer store does not list the study")
    if expected <= 0 or viewer_instances < expected:
        return Retry(now, f"move incomplete: the viewer store holds {viewer_instances} of {expected} instances")
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
