"""The enrolment's lifecycle and its verdicts on selected studies (pure), including a property over shuffled
arrival orders: the outcome is the one of the events' `occurred_at` order (CONTRACT v1.1)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from proxymage_shared.retry import BackoffSchedule
from study_fetcher import domain
from study_fetcher.domain import Admit, Close, Deny, Hold, Job, Owner, Settle, Void
from study_fetcher.lifecycle import Lifecycle, LifecycleStatus, advance, judge, on_change

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
POLICY = domain.RetrievalPolicy(BackoffSchedule((15, 60), jitter=0.0), random.Random(1))
ALICE: Owner = ("P-ALICE", "CHU-A")
ALICE_OTHER_ID: Owner = ("P-ALICE-2", "CHU-B")
BOB: Owner = ("P-BOB", "CHU-A")
CATALOGUE = {"1.1": ALICE, "1.2": ALICE_OTHER_ID, "2.1": BOB}


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def matched(*owners: Owner, source_at: dt.datetime = T0, before: Lifecycle | None = None) -> Lifecycle:
    life = advance(before or Lifecycle(), "matched", source_at, frozenset(owners))
    return dataclasses.replace(life, catalogue={uid: o for uid, o in CATALOGUE.items() if o in owners})


def test_unknown_or_pending_waits_without_touching_a_pacs() -> None:
    assert judge(Lifecycle(), "1.1", at(1)) == Hold(domain.Reason.of("waiting_identity"))
    listed_later = advance(Lifecycle(), "matched", at(0), frozenset({ALICE}))
    assert judge(listed_later, "1.1", at(1)) == Hold(domain.Reason.of("waiting_catalogue"))


def test_only_the_linked_patients_studies_in_the_catalogue_are_admitted() -> None:
    life = matched(ALICE, ALICE_OTHER_ID)
    assert judge(life, "1.1", at(1)) == Admit(ALICE)
    assert judge(life, "1.2", at(1)) == Admit(ALICE_OTHER_ID)
    assert judge(life, "2.1", at(1)) == Deny(domain.Reason.of("not_patient_study"))  # another patient's study
    assert judge(life, "9.9", at(1)) == Deny(domain.Reason.of("not_patient_study"))  # in no catalogue


def test_unmatched_no_consent_and_withdrawn_deny_with_a_french_reason() -> None:
    unmatched = advance(Lifecycle(), "unmatched", at(0), frozenset())
    denied = judge(unmatched, "1.1", at(1))
    assert denied == Deny(domain.Reason.of("patient_not_found"))
    assert isinstance(denied, Deny)
    assert "patient non trouvé" in denied.reason.text
    no_consent = advance(Lifecycle(), "no_consent", at(0), frozenset())
    assert judge(no_consent, "1.1", at(1)) == Deny(domain.Reason.of("no_consent"))
    withdrawn = advance(matched(ALICE), "withdrawn", at(5), frozenset())
    assert judge(withdrawn, "1.1", at(6)) == Deny(domain.Reason.of("enrolment_withdrawn"))


def test_a_selection_older_than_a_closure_is_void_even_after_a_reopening() -> None:
    withdrawn = advance(matched(ALICE), "withdrawn", at(10), frozenset())
    assert judge(withdrawn, "1.1", at(5)) == Void(domain.Reason.of("enrolment_withdrawn"))
    consent_withdrawn = advance(matched(ALICE), "no_consent", at(10), frozenset())
    assert judge(consent_withdrawn, "1.1", at(5)) == Void(domain.Reason.of("consent_withdrawn"))
    reopened = matched(ALICE, source_at=at(20), before=withdrawn)
    assert judge(reopened, "1.1", at(5)) == Void(domain.Reason.of("enrolment_withdrawn"))
    # made while withdrawn: still denied after the re-opening (from scratch: the DCC selects again)
    assert judge(reopened, "1.1", at(15)) == Deny(domain.Reason.of("enrolment_withdrawn"))
    assert judge(reopened, "1.1", at(25)) == Admit(ALICE)


def admitted_job(owner: Owner, state: domain.State = "available") -> Job:
    job = domain.new_job(at(1), None, Admit(owner))
    return dataclasses.replace(job, state=state, version=4)


def test_closure_removes_everything_with_its_reason() -> None:
    for status, code in (("withdrawn", "enrolment_withdrawn"), ("no_consent", "consent_withdrawn")):
        life = advance(matched(ALICE), status, at(10), frozenset())  # type: ignore[arg-type]
        for state in ("queued", "retrieving", "not_yet_available", "available", "failed"):
            change = on_change(life, admitted_job(ALICE, state), "1.1", at(10))
            assert isinstance(change, Close)
            assert (change.at, change.reason) == (at(10), domain.Reason.of(code))
        held = domain.new_job(at(1), None, Hold(domain.Reason.of("waiting_identity")))
        assert on_change(life, held, "1.1", at(10)) == Close(at(10), domain.Reason.of(code))


def test_corrected_identity_removes_only_the_patients_no_longer_linked() -> None:
    corrected = matched(ALICE_OTHER_ID, source_at=at(10), before=matched(ALICE, ALICE_OTHER_ID))
    assert on_change(corrected, admitted_job(ALICE), "1.1", at(10)) == Close(
        at(10), domain.Reason.of("identity_changed")
    )
    assert on_change(corrected, admitted_job(ALICE_OTHER_ID), "1.2", at(10)) is None
    nobody = advance(matched(ALICE), "unmatched", at(10), frozenset())
    assert on_change(nobody, admitted_job(ALICE), "1.1", at(10)) == Close(at(10), domain.Reason.of("identity_changed"))


def test_held_jobs_are_settled_once_identity_and_catalogue_are_known() -> None:
    held = domain.new_job(at(1), None, Hold(domain.Reason.of("waiting_identity")))
    not_listed = advance(Lifecycle(), "matched", at(0), frozenset({ALICE}))
    assert on_change(not_listed, held, "1.1", at(2)) == Settle(Hold(domain.Reason.of("waiting_catalogue")))
    assert on_change(matched(ALICE), held, "1.1", at(2)) == Settle(Admit(ALICE))
    assert on_change(matched(ALICE), held, "2.1", at(2)) == Settle(Deny(domain.Reason.of("not_patient_study")))
    unmatched = advance(Lifecycle(), "unmatched", at(0), frozenset())
    assert on_change(unmatched, held, "1.1", at(2)) == Settle(Deny(domain.Reason.of("patient_not_found")))


# --- order independence -----------------------------------------------------------------------------------
# The DCC's events of one enrolment: enrolled (consent or not; the matcher answers matched/no_consent) and
# withdrawn, ordered by the identity-matcher into one stream; selections, which the fetcher receives on another
# topic in any order relative to that stream (and among themselves: only the newest is kept).


@dataclasses.dataclass(frozen=True)
class Outcome:
    at: dt.datetime
    status: LifecycleStatus


@dataclasses.dataclass(frozen=True)
class Selection:
    at: dt.datetime
    uids: tuple[str, ...]


def simulate(events: list[Outcome | Selection]) -> dict[str, tuple[domain.State, bool]]:
    """The fetcher's decisions (handlers.py, without I/O): each study's final state and whether it was ever
    started (moved) after the last closure it saw. Outcomes arrive in their own order (the matcher's)."""
    life = Lifecycle()
    jobs: dict[str, Job] = {}
    newest_selection: dt.datetime | None = None
    started_while_wanted: set[str] = set()

    def run_workers() -> None:
        for uid, job in jobs.items():
            started = domain.transition(job, domain.Start(at(0)), POLICY)
            if started is not None:
                jobs[uid] = domain.transition(started, domain.Verified(1), POLICY) or started
                started_while_wanted.add(uid)

    for event in events:
        if isinstance(event, Outcome):
            life = advance(
                life, event.status, event.at, frozenset({ALICE}) if event.status == "matched" else frozenset()
            )
            if life.status == "matched":
                life = dataclasses.replace(life, catalogue={"1.1": ALICE})
            for uid, job in list(jobs.items()):
                change = on_change(life, job, uid, event.at)
                if change is not None:
                    jobs[uid] = domain.transition(job, change, POLICY) or job
        else:
            if newest_selection is not None and event.at <= newest_selection:
                continue  # stale selection: the store keeps the newest
            newest_selection = event.at
            for uid in event.uids:
                admission = judge(life, uid, event.at)
                job = jobs.get(uid)
                jobs[uid] = (
                    domain.new_job(event.at, None, admission)
                    if job is None
                    else domain.transition(job, domain.Select(event.at, admission), POLICY) or job
                )
            for uid, job in list(jobs.items()):
                if uid not in event.uids:
                    jobs[uid] = domain.transition(job, domain.Remove(event.at), POLICY) or job
        run_workers()
    return {uid: (job.state, uid in started_while_wanted) for uid, job in jobs.items()}


LIVE = frozenset({"queued", "retrieving", "not_yet_available", "available"})


def live(result: dict[str, tuple[domain.State, bool]]) -> set[str]:
    return {uid for uid, (state, _) in result.items() if state in LIVE}


outcome_streams = st.lists(
    st.tuples(st.integers(0, 100), st.sampled_from(["matched", "no_consent", "withdrawn"])), min_size=1, max_size=4
)
selection_sets = st.lists(
    st.tuples(st.integers(0, 100), st.lists(st.sampled_from(["1.1", "2.1"]), min_size=1, max_size=2, unique=True)),
    max_size=3,
)


@settings(max_examples=500, deadline=None)
@given(outcome_streams, selection_sets, st.randoms(use_true_random=False))
def test_the_outcome_is_that_of_the_occurred_at_order(
    raw_outcomes: list[tuple[int, str]], raw_selections: list[tuple[int, list[str]]], rng: random.Random
) -> None:
    # Distinct times (the matcher orders its outcomes; equal times are resolved by the event id upstream).
    times = rng.sample(range(1, 1000), len(raw_outcomes) + len(raw_selections))
    outcomes = sorted(
        (Outcome(at(t), status) for t, (_, status) in zip(times, raw_outcomes, strict=False)),  # type: ignore[arg-type]
        key=lambda o: o.at,
    )
    selections = [
        Selection(at(t), tuple(uids)) for t, (_, uids) in zip(times[len(raw_outcomes) :], raw_selections, strict=False)
    ]
    in_time_order = simulate(sorted([*outcomes, *selections], key=lambda e: e.at))
    # Any interleaving of the (ordered) outcome stream with the selections, replays included.
    arrival: list[Outcome | Selection] = list(outcomes)
    for selection in [*selections, *rng.sample(selections, k=min(1, len(selections)))]:
        arrival.insert(rng.randrange(len(arrival) + 1), selection)
    arrived = simulate(arrival)
    assert live(arrived) == live(in_time_order)
    # Never another patient's study, never a study of an enrolment that is closed at the end.
    assert "2.1" not in live(arrived)
    if outcomes[-1].status != "matched":
        assert not live(arrived)
