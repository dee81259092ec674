"""The lifecycle ordering decision (lifecycle.py; CONTRACT.md "Lifecycle of an enrolment (v1.1)"), without I/O.

A small simulation of the service drives `decide` the way the store and handlers do: a NEW event becomes
current, NEW and RESUME are answered (an outcome published, MIRC queried only for an enrolled event with
consent), the answer is recorded unless the process "crashes" right after publishing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from identity_matcher.lifecycle import ANSWER, Acceptance, Current, LifecycleEvent, LifecycleKind, decide

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def event(kind: LifecycleKind, event_id: str, seconds: int) -> LifecycleEvent:
    return LifecycleEvent(kind, event_id, T0 + dt.timedelta(seconds=seconds))


# --- the decision table ----------------------------------------------------------------------------------


def test_the_first_event_of_an_enrolment_is_new_whatever_its_kind() -> None:
    assert decide(None, event("enrolled", "e1", 0)) is Acceptance.NEW
    assert decide(None, event("withdrawn", "w1", 0)) is Acceptance.NEW


@pytest.mark.parametrize(
    ("current_kind", "incoming_kind"),
    [("enrolled", "withdrawn"), ("withdrawn", "enrolled"), ("enrolled", "enrolled"), ("withdrawn", "withdrawn")],
)
def test_a_newer_event_supersedes_the_current_one(current_kind: LifecycleKind, incoming_kind: LifecycleKind) -> None:
    current = Current(event(current_kind, "a", 0), answered=True)
    assert decide(current, event(incoming_kind, "b", 1)) is Acceptance.NEW


@pytest.mark.parametrize(
    ("current_kind", "incoming_kind"),
    [("withdrawn", "enrolled"), ("enrolled", "withdrawn"), ("enrolled", "enrolled")],
)
@pytest.mark.parametrize("answered", [True, False])
def test_an_older_event_is_stale(current_kind: LifecycleKind, incoming_kind: LifecycleKind, answered: bool) -> None:
    # E.g. an enrolled event older than the recorded withdrawal never re-opens the enrolment.
    current = Current(event(current_kind, "a", 10), answered=answered)
    assert decide(current, event(incoming_kind, "b", 9)) is Acceptance.STALE


def test_on_a_tie_of_times_the_greater_event_id_wins_whatever_the_order_of_arrival() -> None:
    # idempotency.EventStamp: the same order in every service (before issue 12 the first one seen stayed).
    assert decide(Current(event("enrolled", "a", 5), answered=False), event("withdrawn", "b", 5)) is Acceptance.NEW
    assert decide(Current(event("withdrawn", "b", 5), answered=True), event("enrolled", "a", 5)) is Acceptance.STALE


def test_times_are_compared_to_the_millisecond_as_stored() -> None:
    current = Current(event("enrolled", "b", 5), answered=True)
    within_the_millisecond = LifecycleEvent("withdrawn", "a", T0 + dt.timedelta(seconds=5, microseconds=900))
    assert decide(current, within_the_millisecond) is Acceptance.STALE


def test_the_current_event_again_is_resumed_until_answered_then_a_duplicate() -> None:
    incoming = event("withdrawn", "w", 3)
    assert decide(Current(incoming, answered=False), incoming) is Acceptance.RESUME
    assert decide(Current(incoming, answered=True), incoming) is Acceptance.DUPLICATE


# --- any order of arrival gives the outcome of the occurred_at order -------------------------------------


@dataclass(frozen=True, slots=True)
class DccEvent:
    kind: LifecycleKind
    event_id: str
    seconds: int
    consent: bool = True

    @property
    def lifecycle(self) -> LifecycleEvent:
        return event(self.kind, self.event_id, self.seconds)

    @property
    def status(self) -> str:
        if self.kind == "withdrawn":
            return "withdrawn"
        return "resolved" if self.consent else "no_consent"


@dataclass
class Simulation:
    current: Current | None = None
    published: list[DccEvent] = field(default_factory=list)
    queried: list[DccEvent] = field(default_factory=list)
    withdrawals_seen: list[DccEvent] = field(default_factory=list)
    # For each MIRC query, the withdrawals consumed before it.
    queried_after: list[tuple[DccEvent, tuple[DccEvent, ...]]] = field(default_factory=list)

    def consume(self, incoming: DccEvent, *, crash_after_publishing: bool = False) -> Acceptance:
        acceptance = decide(self.current, incoming.lifecycle)
        if acceptance is Acceptance.NEW:
            self.current = Current(incoming.lifecycle, answered=False)
        if incoming.kind == "withdrawn":
            self.withdrawals_seen.append(incoming)
        if acceptance in ANSWER:
            if incoming.kind == "enrolled" and incoming.consent:
                self.queried.append(incoming)
                self.queried_after.append((incoming, tuple(self.withdrawals_seen)))
            self.published.append(incoming)
            if not crash_after_publishing:
                self.current = Current(incoming.lifecycle, answered=True)
        return acceptance


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[DccEvent], list[tuple[DccEvent, bool]]]:
    """An enrolment's events (distinct occurred_at), then an arrival order with replays and crashes."""
    count = draw(st.integers(1, 6))
    times = draw(st.lists(st.integers(0, 3600), min_size=count, max_size=count, unique=True))
    events = [
        DccEvent(draw(st.sampled_from(["enrolled", "withdrawn"])), f"ev-{index}", seconds, draw(st.booleans()))
        for index, seconds in enumerate(times)
    ]
    arrivals = draw(st.permutations(events))
    replays = draw(st.lists(st.sampled_from(events), max_size=4))
    for replay in replays:
        arrivals.insert(draw(st.integers(0, len(arrivals))), replay)
    crashes = draw(st.lists(st.booleans(), min_size=len(arrivals), max_size=len(arrivals)))
    return events, list(zip(arrivals, crashes, strict=True))


@settings(max_examples=400, deadline=None)
@given(histories())
def test_the_final_status_is_the_one_of_the_newest_event_whatever_the_order(
    history: tuple[list[DccEvent], list[tuple[DccEvent, bool]]],
) -> None:
    events, arrivals = history
    simulation = Simulation()
    for incoming, crash in arrivals:
        simulation.consume(incoming, crash_after_publishing=crash)
    newest = max(events, key=lambda e: e.seconds)
    assert simulation.current is not None
    assert simulation.current.event.event_id == newest.event_id
    # The newest event was answered, and is the last outcome published: consumers end on its status.
    assert simulation.published[-1] == newest
    assert simulation.published[-1].status == newest.status


@settings(max_examples=400, deadline=None)
@given(histories())
def test_outcomes_only_ever_move_forward_and_nothing_older_than_a_withdrawal_queries_mirc(
    history: tuple[list[DccEvent], list[tuple[DccEvent, bool]]],
) -> None:
    _, arrivals = history
    simulation = Simulation()
    for incoming, crash in arrivals:
        simulation.consume(incoming, crash_after_publishing=crash)
    answered_times = [outcome.seconds for outcome in simulation.published]
    # Non-decreasing: a re-publication after a crash repeats the same event; never an older one after a newer.
    assert answered_times == sorted(answered_times)
    for queried, withdrawals in simulation.queried_after:
        assert all(withdrawal.seconds < queried.seconds for withdrawal in withdrawals)
    assert all(outcome.kind == "enrolled" and outcome.consent for outcome in simulation.queried)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_without_crashes_replays_give_one_outcome_per_event(
    history: tuple[list[DccEvent], list[tuple[DccEvent, bool]]],
) -> None:
    _, arrivals = history
    simulation = Simulation()
    for incoming, _ in arrivals:
        simulation.consume(incoming)
    ids = [outcome.event_id for outcome in simulation.published]
    assert len(ids) == len(set(ids))


def test_withdrawal_first_then_an_older_enrolment_publishes_only_withdrawn_and_queries_nothing() -> None:
    simulation = Simulation()
    simulation.consume(DccEvent("withdrawn", "w", 10))
    assert simulation.consume(DccEvent("enrolled", "e", 5)) is Acceptance.STALE
    assert [outcome.status for outcome in simulation.published] == ["withdrawn"]
    assert simulation.queried == []


def test_a_newer_enrolment_re_opens_a_withdrawn_one() -> None:
    simulation = Simulation()
    for incoming in (DccEvent("enrolled", "e1", 0), DccEvent("withdrawn", "w", 10), DccEvent("enrolled", "e2", 20)):
        simulation.consume(incoming)
    assert [outcome.status for outcome in simulation.published] == ["resolved", "withdrawn", "resolved"]
    assert [queried.event_id for queried in simulation.queried] == ["e1", "e2"]
