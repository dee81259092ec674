"""The retrieval state machine (pure): the state table, and properties over arbitrary input sequences."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from proxymage_shared.reasons import Reason
from proxymage_shared.retry import BackoffSchedule
from study_fetcher import domain
from study_fetcher.domain import (
    Job,
    MoveReport,
    Progressed,
    Refresh,
    Refused,
    Remove,
    Retry,
    Select,
    Start,
    Verified,
    assess_move,
    assess_reuse,
    new_job,
    transition,
)

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
ADMIT = domain.Admit(("T0001", "CHU-FICTIF-TOURS"))  # the lifecycle's verdict when it plays no part
POLICY = domain.RetrievalPolicy(BackoffSchedule((15, 60, 300, 900, 1800), jitter=0.2), random.Random(7))


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def step(job: Job, *events: domain.Input) -> Job:
    for event in events:
        new = transition(job, event, POLICY)
        assert new is not None, f"{event} does not apply to {job.state}"
        job = new
    return job


def test_happy_path_versions_and_progress() -> None:
    job = new_job(at(0), at(86400), ADMIT)
    assert (job.state, job.version) == ("queued", 1)
    job = step(job, Start(at(1)))
    assert (job.state, job.version, job.attempts) == ("retrieving", 2, 1)
    job = step(job, Progressed(10, 40))
    assert job.progress == domain.Progress(10, 40)
    assert transition(job, Progressed(10, 40), POLICY) is None  # same progress: nothing to publish
    job = step(job, Verified(40))
    assert (job.state, job.version, job.progress, job.reason) == ("available", 4, domain.Progress(40, 40), None)


def test_retry_follows_the_backoff_schedule_and_stops_at_the_deadline() -> None:
    job = step(new_job(at(0), at(100), ADMIT), Start(at(1)), Retry(at(2), domain.NOT_IN_MIRC))
    assert job.state == "not_yet_available"
    assert (job.reason_code, job.reason) == ("not_in_mirc", "examen pas encore présent dans le PACS régional (MIRC)")
    assert job.next_attempt_at is not None
    assert at(2 + 15 * 0.8) <= job.next_attempt_at <= at(2 + 15 * 1.2)
    # Further retries are capped by the deadline, so the last try runs at it...
    unreachable = domain.PACS_UNREACHABLE
    job = step(job, Start(at(20)), Retry(at(21), unreachable), Start(at(80)), Retry(at(81), unreachable))
    assert job.next_attempt_at == at(100)
    # ...and a failure at (or after) the deadline is final.
    job = step(job, Start(at(100)), Retry(at(100), unreachable))
    assert job.state == "failed"
    assert job.reason_code == "deadline_passed"
    assert job.reason == "délai dépassé (fin du jour de la réunion) (PACS régional (MIRC) injoignable)"
    assert transition(job, Refresh(at(101)), POLICY) is None  # too late even for a refresh


def test_refused_is_failed_and_a_refresh_before_the_deadline_requeues() -> None:
    refused = Reason.of("move_refused", "destination inconnue")
    job = step(new_job(at(0), at(1000), ADMIT), Start(at(1)), Refused(refused))
    assert (job.state, job.reason_code, job.reason) == ("failed", "move_refused", refused.text)
    job = step(job, Refresh(at(2)))
    assert (job.state, job.reason, job.attempts) == ("queued", None, 1)


def test_refresh_makes_a_waiting_job_due_now() -> None:
    job = step(new_job(at(0), None, ADMIT), Start(at(1)), Retry(at(2), domain.NOT_IN_MIRC))
    job = step(job, Refresh(at(3)))
    assert (job.state, job.next_attempt_at) == ("not_yet_available", at(3))
    assert transition(job, Refresh(at(4)), POLICY) is None  # already due


def test_takeover_of_a_running_job_is_a_new_attempt_that_says_it_resumes() -> None:
    first = step(new_job(at(0), None, ADMIT), Start(at(1)))
    assert (first.reason, first.reason_code) == (None, None)  # a first start has nothing to explain
    job = step(first, Progressed(5, 300), Start(at(70)))
    assert (job.state, job.attempts, job.progress) == ("retrieving", 2, None)
    assert (job.reason_code, job.reason) == ("resumed", "reprise après interruption")
    job = step(job, Progressed(7, 300))
    assert (job.reason_code, job.progress) == ("resumed", domain.Progress(7, 300))  # said until it ends
    assert step(job, Verified(300)).reason_code is None


def waiting(reason: Reason, deadline: dt.datetime | None = None) -> Job:
    """A job whose first attempt (at 1 s) ended with `reason`: retried at about 16 s."""
    return step(new_job(at(0), deadline, ADMIT), Start(at(1)), Retry(at(1), reason))


def test_only_a_job_waiting_for_an_unreachable_peer_waits_for_it() -> None:
    assert domain.waiting_for(waiting(domain.PACS_UNREACHABLE)) == "mirc"
    assert domain.waiting_for(waiting(domain.VIEWER_UNREACHABLE)) == "viewer"
    assert domain.waiting_for(waiting(domain.NOT_IN_MIRC)) is None
    assert domain.waiting_for(new_job(at(0), None, ADMIT)) is None
    running = step(new_job(at(0), None, ADMIT), Start(at(1)))
    assert domain.waiting_for(dataclasses.replace(running, reason_code="pacs_unreachable")) is None


def test_a_peer_back_brings_its_waiting_jobs_forward_and_says_so() -> None:
    job = waiting(domain.PACS_UNREACHABLE)
    assert job.next_attempt_at is not None
    assert job.next_attempt_at > at(5)
    back = step(job, domain.PeerBack("mirc", at(5)))
    assert (back.state, back.next_attempt_at, back.version) == ("not_yet_available", at(5), job.version + 1)
    assert (back.reason_code, back.reason) == ("pacs_back", "PACS régional (MIRC) de nouveau joignable, reprise")
    assert domain.waiting_for(back) is None  # brought forward once: a second probe finds nothing to do
    assert transition(back, domain.PeerBack("mirc", at(6)), POLICY) is None
    viewer = step(waiting(domain.VIEWER_UNREACHABLE), domain.PeerBack("viewer", at(5)))
    assert viewer.reason_code == "viewer_back"


def test_a_peer_back_never_delays_a_job_nor_touches_one_waiting_for_something_else() -> None:
    job = waiting(domain.PACS_UNREACHABLE)
    assert job.next_attempt_at is not None
    later = step(job, domain.PeerBack("mirc", job.next_attempt_at + dt.timedelta(seconds=30)))
    assert later.next_attempt_at == job.next_attempt_at
    assert later.reason_code == "pacs_back"
    assert transition(job, domain.PeerBack("viewer", at(5)), POLICY) is None
    assert transition(waiting(domain.NOT_IN_MIRC), domain.PeerBack("mirc", at(5)), POLICY) is None
    assert transition(new_job(at(0), None, ADMIT), domain.PeerBack("mirc", at(5)), POLICY) is None


def test_recovery_times_are_spread_within_the_given_seconds() -> None:
    rng = random.Random(3)
    times = [domain.recovery_at(at(0), 5.0, rng) for _ in range(200)]
    assert all(at(0) <= moment <= at(5) for moment in times)
    assert max(times) - min(times) > dt.timedelta(seconds=3)  # spread, not all at once
    assert domain.recovery_at(at(0), 0.0, rng) == at(0)


def test_removal_and_reselection_follow_event_times() -> None:
    job = step(new_job(at(0), None, ADMIT), Start(at(1)), Verified(3))
    removed = step(job, Remove(at(10)))
    assert removed.state == "removed"
    # A move finishing late, a replayed (older) selection, a refresh: still removed.
    assert transition(removed, Verified(3), POLICY) is None
    assert transition(removed, Select(at(5), ADMIT), POLICY) is None
    assert transition(removed, Refresh(at(11)), POLICY) is None
    # A newer selection brings it back as a new retrieval.
    again = step(removed, Select(at(20), ADMIT))
    assert (again.state, again.version) == ("queued", removed.version + 1)
    # A removal older than that selection is ignored.
    assert transition(again, Remove(at(15)), POLICY) is None


def test_newer_selection_of_a_live_job_is_bookkeeping_only() -> None:
    job = new_job(at(0), None, ADMIT)
    newer = step(job, Select(at(5), ADMIT))
    assert (newer.state, newer.version, newer.selected_at) == ("queued", 1, at(5))
    assert transition(newer, Select(at(5), ADMIT), POLICY) is None


def test_tombstone_blocks_an_older_selection() -> None:
    tombstone = domain.removed_tombstone(at(10))
    assert transition(tombstone, Select(at(5), ADMIT), POLICY) is None
    job = step(tombstone, Select(at(11), ADMIT))
    assert (job.state, job.version) == ("queued", 1)


def test_assess_move() -> None:
    complete = MoveReport(completed=40, failed=0)
    assert assess_move(complete, 40, 40, at(0)) == Verified(40)
    assert assess_move(complete, 40, 41, at(0)) == Verified(41)
    partial = assess_move(complete, 40, 37, at(0))
    assert isinstance(partial, Retry)
    assert partial.reason == Reason.of("move_incomplete", "le stockage de la visionneuse contient 37 instances sur 40")
    failed = assess_move(MoveReport(completed=37, failed=3), 40, 40, at(0))
    assert isinstance(failed, Retry)
    assert failed.reason == Reason.of("move_incomplete", "3 instances sur 40 en échec")
    absent = assess_move(complete, 40, None, at(0))
    assert isinstance(absent, Retry)
    # MIRC without NumberOfStudyRelatedInstances: the move's own count is the target.
    assert assess_move(complete, None, 40, at(0)) == Verified(40)
    assert isinstance(assess_move(MoveReport(0, 0), None, 0, at(0)), Retry)


def test_assess_reuse() -> None:
    assert assess_reuse(40, 40, 40) == Verified(40)
    assert assess_reuse(None, 40, 40) is None  # no verified move recorded
    assert assess_reuse(40, 41, 40) is None  # MIRC has more now: move again
    assert assess_reuse(40, 40, None) is None  # the viewer store lost it (purged)


def test_deadline_is_the_end_of_the_meeting_day_in_the_network_time_zone() -> None:
    from zoneinfo import ZoneInfo

    deadline = domain.deadline_for(dt.date(2026, 12, 2), dt.timedelta(days=1), ZoneInfo("Europe/Paris"))
    assert deadline == dt.datetime(2026, 12, 2, 23, 0, tzinfo=dt.UTC)


# --- properties ------------------------------------------------------------------------------------------------

seconds = st.integers(min_value=0, max_value=200_000)
inputs = st.one_of(
    st.builds(lambda s: Select(at(s), ADMIT), seconds),
    st.builds(lambda s: Remove(at(s)), seconds),
    st.builds(lambda s: Refresh(at(s)), seconds),
    st.builds(lambda s: Start(at(s)), seconds),
    st.builds(lambda d, t: Progressed(d, t), st.integers(0, 500), st.integers(0, 500)),
    st.builds(lambda n: Verified(n), st.integers(1, 500)),
    st.builds(lambda s, r: Retry(at(s), r), seconds, st.sampled_from([domain.NOT_IN_MIRC, domain.PACS_UNREACHABLE])),
    st.builds(lambda r: Refused(r), st.just(Reason.of("move_refused", "destination inconnue"))),
    st.builds(lambda p, s: domain.PeerBack(p, at(s)), st.sampled_from(["mirc", "viewer"]), seconds),
)
admissions = st.sampled_from(
    [
        domain.Admit(("P1", "ISSUER")),
        domain.Hold(Reason.of("waiting_identity")),
        domain.Hold(Reason.of("waiting_catalogue")),
        domain.Deny(Reason.of("patient_not_found")),
        domain.Deny(Reason.of("not_patient_study")),
        domain.Void(Reason.of("enrolment_withdrawn")),
    ]
)
lifecycle_inputs = st.one_of(
    st.builds(lambda s, a: Select(at(s), a), seconds, admissions),
    st.builds(
        lambda a: domain.Settle(a),
        st.sampled_from([domain.Admit(("P1", "ISSUER")), domain.Deny(Reason.of("not_patient_study"))]),
    ),
    st.builds(
        lambda s, r: domain.Close(at(s), Reason.of(r)),
        seconds,
        st.sampled_from(["consent_withdrawn", "enrolment_withdrawn", "identity_changed"]),
    ),
)
all_inputs = st.one_of(inputs, lifecycle_inputs)
deadlines = st.one_of(st.none(), st.builds(at, seconds))
VISIBLE = ("state", "attempts", "progress", "next_attempt_at", "reason", "reason_code", "held")


def visible(job: Job) -> tuple[object, ...]:
    return tuple(getattr(job, name) for name in VISIBLE)


@settings(max_examples=600, deadline=None)
@given(st.builds(at, seconds), deadlines, admissions, st.lists(all_inputs, max_size=40))
def test_properties_over_arbitrary_sequences(
    selected: dt.datetime, deadline: dt.datetime | None, first: domain.Admission, events: list[domain.Input]
) -> None:
    job = new_job(selected, deadline, first)
    for event in events:
        new = transition(job, event, POLICY)
        if new is None:
            continue
        # Versions: +1 exactly when something a consumer sees changes, else unchanged (never decreasing).
        if visible(new) != visible(job):
            assert new.version == job.version + 1
        else:
            assert new.version == job.version
        # Nothing leaves `removed` but a selection newer than the removal, judged again (never a Void).
        if job.state == "removed":
            assert isinstance(event, Select)
            assert job.removed_at is not None
            assert event.at > job.removed_at
            assert not isinstance(event.admission, domain.Void)
            assert new.state in ("queued", "failed")
        # `available` only from a verified complete move, reported while retrieving.
        if new.state == "available" and job.state != "available":
            assert isinstance(event, Verified)
            assert job.state == "retrieving"
        # A held job (identity or catalogue unknown) is never started: no PACS is touched for it.
        if job.held:
            assert new.state != "retrieving"
        if new.state == "retrieving" and job.state != "retrieving":
            assert not job.held
        # A lifecycle closure removes whatever the job was doing, with its reason.
        if isinstance(event, domain.Close):
            assert (new.state, new.reason_code) == ("removed", event.reason.code)
        # `failed` only for a refusal, once the deadline has passed, or by the lifecycle's denial.
        if new.state == "failed" and job.state != "failed":
            assert (
                isinstance(event, Refused)
                or (isinstance(event, Retry) and job.deadline is not None and event.now >= job.deadline)
                or (isinstance(event, Select | domain.Settle) and isinstance(event.admission, domain.Deny))
            )
        # A denial on admission is never retried by a Refresh.
        if job.state == "failed" and job.reason_code in domain.ADMISSION_CODES and isinstance(event, Refresh):
            raise AssertionError("a Refresh re-queued a study the lifecycle denied")
        # A peer coming back only brings forward a job that waited for it, never later than it was due.
        if isinstance(event, domain.PeerBack):
            assert domain.waiting_for(job) == event.peer
            assert job.next_attempt_at is not None
            assert new.next_attempt_at is not None
            assert new.next_attempt_at <= job.next_attempt_at
            assert new.state == "not_yet_available"
        # A waiting job is always due again no later than its deadline.
        if new.state == "not_yet_available" and new.deadline is not None:
            assert new.next_attempt_at is not None
            assert new.next_attempt_at <= new.deadline
        assert dataclasses.replace(new) == new
        job = new


@given(st.builds(at, seconds), st.lists(all_inputs, max_size=30))
def test_removed_absorbs_everything_but_a_newer_selection(removed_at: dt.datetime, events: list[domain.Input]) -> None:
    job = domain.removed_tombstone(removed_at)
    job = dataclasses.replace(job, version=5)
    for event in events:
        new = transition(job, event, POLICY)
        if isinstance(event, Select) and event.at > removed_at and not isinstance(event.admission, domain.Void):
            assert new is not None
            assert new.state in ("queued", "failed")
        else:
            assert new is None


@given(
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.one_of(st.none(), st.integers(0, 1000)),
    st.one_of(st.none(), st.integers(0, 1000)),
)
def test_assess_move_never_verifies_a_partial_study(
    completed: int, failed: int, mirc: int | None, viewer: int | None
) -> None:
    outcome = assess_move(MoveReport(completed, failed), mirc, viewer, T0)
    if isinstance(outcome, Verified):
        assert failed == 0
        assert viewer is not None
        assert viewer >= (mirc if mirc is not None else completed) > 0
