"""Unit tests (no I/O): recipient policy, the facts and the decision, the role-slot state machine, the
message, SMTP error classes."""

from __future__ import annotations

import datetime as dt
import functools
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import aiosmtplib
import pytest
from expert_notifier.domain import (
    Cancelled,
    Desired,
    Enrolled,
    EnrolmentFacts,
    ExpertContact,
    IdentityFact,
    MeetingFacts,
    MeetingPassed,
    NoExpert,
    NotRequested,
    RoleSlot,
    Selection,
    SendFailure,
    Stamp,
    StudyFact,
    View,
    Waiting,
    Wanted,
    desired,
    meeting_end,
)
from expert_notifier.message import MailSettings, MeetingText, PatientFacts, patient_facts, render, salutation
from expert_notifier.smtp import classify
from hypothesis import given, settings
from hypothesis import strategies as st
from proxymage_shared.events import IdentityStatus, PatientEnrolled, RetrievalStatus
from proxymage_shared.mssante import address_allowed
from proxymage_shared.reasons import TEXTS, Reason
from proxymage_shared.retry import BackoffSchedule

PARIS = ZoneInfo("Europe/Paris")
T0 = dt.datetime(2030, 3, 1, 8, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(days=1)  # after every generated event, before the meeting
MEETING_DATE = dt.date(2030, 3, 22)
DEADLINE = meeting_end(MEETING_DATE, PARIS)
SCHEDULE = BackoffSchedule((60,), jitter=0)
DOMAINS = ("*.mssante.fr",)
A = ExpertContact("Dr Ana EXEMPLE", "Ana@chu.mssante.fr")
B = ExpertContact("Dr Ben EXEMPLE", "ben@chu.mssante.fr")
MEETING = MeetingFacts("m-1", "RCP", MEETING_DATE, "3C", {"radiologist": A, "nuclear_physician": None})
PATIENT = PatientFacts("Mme", "Anaïs ESSAI", "Dr Paul FICTIF")
UID1, UID2 = "1.2.3.1", "1.2.3.2"


def wanted(expert: ExpertContact, allowed: bool = True) -> Wanted:
    return Wanted(expert, allowed=allowed, deadline=DEADLINE)


def statuses(slot: RoleSlot) -> dict[str, str]:
    return {n.email: n.status for n in slot.notifications}


def fresh() -> RoleSlot:
    return RoleSlot("enr-1", "radiologist")


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def enrolled(minutes: int, event_id: str = "e1", consent: bool = True) -> Enrolled:
    return Enrolled(Stamp.of(at(minutes), event_id), "m-1", MEETING_DATE, consent, PATIENT)


def identity(status: IdentityStatus, source: Stamp, delay: int = 1, event_id: str | None = None) -> IdentityFact:
    at = source.occurred_at
    return IdentityFact(
        at, at + dt.timedelta(minutes=delay), event_id or f"id-{source.event_id}-{status}", status, source.event_id,
    )  # fmt: skip


def selection(minutes: int, uids: tuple[str, ...] = (UID1,), expertise: bool = True, event_id: str = "s1") -> Selection:
    return Selection(Stamp.of(at(minutes), event_id), expertise, uids)


def ready_facts() -> EnrolmentFacts:
    """Enrolled with consent, matched, a selected study available, expertise requested."""
    first = enrolled(0)
    return (
        EnrolmentFacts("enr-1")
        .with_enrolled(first)
        .with_identity(identity("matched", first.stamp))
        .with_selection(selection(2))
        .with_study(StudyFact(UID1, 3, "available"))
    )


def decide(facts: EnrolmentFacts, *, now: dt.datetime = NOW, role: str = "radiologist") -> Desired:
    return desired(role, facts, MEETING, now=now, zone=PARIS, allowed_domains=DOMAINS)  # type: ignore[arg-type]


# --- recipients -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("a@chu.mssante.fr", True),
        ("a@a.b.MSSANTE.FR", True),
        ("a@chu.mssante.fr.", True),
        ("a@mssante.fr", False),
        ("a@xmssante.fr", False),
        ("a@mssante.fr.evil.example", False),
        ("a@chu.mssante.fr@evil.example", False),
        ("@chu.mssante.fr", False),
        ("not-an-address", False),
    ],
)
def test_wildcard_domains(address: str, allowed: bool) -> None:
    assert address_allowed(address, ("*.mssante.fr",)) is allowed


def test_exact_domain_entry() -> None:
    assert address_allowed("a@mssante.fr", ("mssante.fr",))
    assert not address_allowed("a@chu.mssante.fr", ("mssante.fr",))


# --- the decision ---------------------------------------------------------------------------------------------


def test_meeting_day_ends_at_midnight_in_the_site_zone() -> None:
    assert meeting_end(dt.date(2030, 3, 22), PARIS) == dt.datetime(2030, 3, 22, 23, 0, tzinfo=dt.UTC)  # CET
    assert meeting_end(dt.date(2030, 6, 12), PARIS) == dt.datetime(2030, 6, 12, 22, 0, tzinfo=dt.UTC)  # CEST
    assert meeting_end(dt.date(2030, 6, 12), dt.UTC) == dt.datetime(2030, 6, 13, 0, 0, tzinfo=dt.UTC)


def _code(wish: Desired) -> str | None:
    return None if isinstance(wish, Wanted) else wish.reason.code


def test_sent_only_once_matched_with_an_available_selected_study() -> None:
    first = enrolled(0)
    requested = EnrolmentFacts("enr-1").with_selection(selection(2))
    assert decide(EnrolmentFacts("enr-1")) == NotRequested()
    assert decide(requested) == Waiting(Reason.of("waiting_enrolment"))
    facts = requested.with_enrolled(first)
    assert desired("radiologist", facts, None, now=NOW, zone=PARIS, allowed_domains=DOMAINS) == Waiting(
        Reason.of("waiting_meeting")
    )
    assert decide(facts, role="nuclear_physician") == NoExpert()
    assert _code(decide(facts)) == "waiting_identity"
    assert _code(decide(facts.with_identity(identity("unmatched", first.stamp)))) == "patient_not_found"
    assert _code(decide(facts.with_identity(identity("error", first.stamp)))) == "identity_error"
    matched = facts.with_identity(identity("matched", first.stamp))
    assert _code(decide(matched)) == "waiting_available_study"
    # A study available but not (or no longer) selected does not count; nor does a selected one retrieving.
    assert _code(decide(matched.with_study(StudyFact(UID2, 5, "available")))) == "waiting_available_study"
    assert _code(decide(matched.with_study(StudyFact(UID1, 2, "retrieving")))) == "waiting_available_study"
    assert decide(matched.with_study(StudyFact(UID1, 3, "available"))) == wanted(A)
    # The matched outcome of an older enrolled event does not count for a corrected one.
    corrected = ready_facts().with_enrolled(enrolled(10, "e2"))
    assert _code(decide(corrected)) == "waiting_identity"
    assert decide(corrected.with_identity(identity("matched", corrected.enrolled.stamp))) == wanted(A)  # type: ignore[union-attr]


def test_withdrawal_and_consent_cancel_and_a_newer_enrolment_reopens() -> None:
    ready = ready_facts()
    assert decide(ready.with_withdrawal(Stamp.of(at(5), "w1"))) == Cancelled(Reason.of("enrolment_withdrawn"))
    # A withdrawal at the very time of the enrolled event wins (nothing is sent in doubt).
    assert _code(decide(ready.with_withdrawal(Stamp.of(at(0), "w0")))) == "enrolment_withdrawn"
    # A withdrawal older than the enrolled event is history.
    reopened = ready.with_withdrawal(Stamp.of(at(-1), "w0"))
    assert decide(reopened) == wanted(A)
    # The matcher's `withdrawn` outcome is the same withdrawal (same stamp): learnt twice, one fact.
    withdrawal = Stamp.of(at(5), "w1")
    via_matcher = ready.with_identity(identity("withdrawn", withdrawal))
    assert via_matcher.withdrawal == withdrawal
    assert via_matcher.with_withdrawal(withdrawal) == via_matcher
    # Re-opened by a newer enrolled event: waits for its identity again, then is wanted again.
    again = via_matcher.with_enrolled(enrolled(9, "e2"))
    assert _code(decide(again)) == "waiting_identity"
    assert decide(again.with_identity(identity("matched", again.enrolled.stamp))) == wanted(A)  # type: ignore[union-attr]
    # Consent: withdrawn after being given, or never given.
    assert _code(decide(ready.with_enrolled(enrolled(7, "e2", consent=False)))) == "consent_withdrawn"
    never = EnrolmentFacts("enr-1").with_selection(selection(2)).with_enrolled(enrolled(0, consent=False))
    assert _code(decide(never)) == "no_consent"
    # Withdrawal is checked before the request: cancelled even if expertise is no longer requested.
    unrequested = ready.with_selection(selection(3, expertise=False, event_id="s2"))
    assert decide(unrequested) == NotRequested()
    assert _code(decide(unrequested.with_withdrawal(withdrawal))) == "enrolment_withdrawn"


def test_never_after_the_meeting_day() -> None:
    ready = ready_facts()
    assert decide(ready, now=DEADLINE - dt.timedelta(seconds=1)) == wanted(A)
    assert decide(ready, now=DEADLINE) == MeetingPassed()
    # Known from the enrolled event before the meeting's experts are.
    waiting = EnrolmentFacts("enr-1").with_selection(selection(2)).with_enrolled(enrolled(0))
    late = desired("radiologist", waiting, None, now=DEADLINE, zone=PARIS, allowed_domains=DOMAINS)
    assert late == MeetingPassed()


def test_newer_wins_and_replays_change_nothing() -> None:
    ready = ready_facts()
    assert ready.with_enrolled(enrolled(0)) == ready
    assert ready.with_study(StudyFact(UID1, 2, "retrieving")) == ready  # older version
    assert ready.with_study(StudyFact(UID1, 3, "removed")) == ready  # same version: a replay
    removed = ready.with_study(StudyFact(UID1, 4, "removed"))
    assert _code(decide(removed)) == "waiting_available_study"
    older_selection = ready.with_selection(selection(1, uids=(), event_id="s0"))
    assert older_selection == ready
    # Same millisecond, two events: the event id breaks the tie, whatever the order.
    one, other = selection(5, (UID1,), event_id="s-a"), selection(5, (), event_id="s-b")
    assert ready.with_selection(one).with_selection(other) == ready.with_selection(other).with_selection(one)


# --- the property: order independence and truthful e-mails ----------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One inbound event as the pure rules apply it, with the time that orders it (occurred_at)."""

    at: dt.datetime
    name: str
    apply: Callable[[EnrolmentFacts], EnrolmentFacts]


STUDY_STATUSES: tuple[RetrievalStatus, ...] = (
    "queued", "retrieving", "not_yet_available", "available", "failed", "removed",
)  # fmt: skip


@st.composite
def histories(draw: st.DrawFn) -> list[Fact]:
    facts: list[Fact] = []
    sources: list[tuple[Stamp, bool]] = []  # (stamp, is a withdrawal)
    for index in range(draw(st.integers(1, 3))):
        event = enrolled(draw(st.integers(0, 40)), f"e{index}", consent=draw(st.sampled_from([True, True, False])))
        sources.append((event.stamp, False))
        facts.append(Fact(event.stamp.occurred_at, f"enrolled e{index} consent={event.consent}",
                          functools.partial(EnrolmentFacts.with_enrolled, fact=event)))  # fmt: skip
    for index in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        stamp = Stamp.of(at(draw(st.integers(0, 40))), f"w{index}")
        sources.append((stamp, True))
        facts.append(
            Fact(
                stamp.occurred_at, f"withdrawn w{index}", functools.partial(EnrolmentFacts.with_withdrawal, stamp=stamp)
            )
        )
    for index in range(draw(st.integers(1, 6))):
        # Mostly about the latest enrolled event (the one that counts), sometimes about an older one.
        source, is_withdrawal = draw(st.sampled_from([*sources, max(sources, key=lambda s: s[0])] * 2))
        status: IdentityStatus = (
            "withdrawn" if is_withdrawal else draw(st.sampled_from(["matched", "matched", "unmatched", "error"]))
        )
        outcome = identity(status, source, delay=draw(st.integers(1, 30)), event_id=f"i{index}")
        facts.append(Fact(outcome.at, f"identity {status} for {source.event_id}",
                          functools.partial(EnrolmentFacts.with_identity, fact=outcome)))  # fmt: skip
    for uid in (UID1, UID2):
        for version in draw(st.sets(st.integers(1, 8), min_size=1, max_size=4)):
            study = StudyFact(uid, version, draw(st.sampled_from((*STUDY_STATUSES, "available", "available"))))
            facts.append(Fact(at(10 + version * 5), f"study {uid} v{version} {study.status}",
                              functools.partial(EnrolmentFacts.with_study, fact=study)))  # fmt: skip
    for index in range(draw(st.integers(1, 3))):
        chosen = selection(
            draw(st.integers(0, 40)),
            tuple(sorted(draw(st.sets(st.sampled_from([UID1, UID2]), min_size=draw(st.integers(0, 1)))))),
            expertise=draw(st.sampled_from([True, True, False])),
            event_id=f"s{index}",
        )
        facts.append(Fact(chosen.stamp.occurred_at, f"selection s{index} expertise={chosen.expertise_requested}",
                          functools.partial(EnrolmentFacts.with_selection, fact=chosen)))  # fmt: skip
    return facts


def fold(facts: list[Fact]) -> EnrolmentFacts:
    return functools.reduce(lambda known, fact: fact.apply(known), facts, EnrolmentFacts("enr-1"))


def truthful(facts: EnrolmentFacts) -> bool:
    """CONTRACT v1.1: an e-mail may go out only for a matched, not withdrawn, consenting enrolment with a
    selected study available."""
    return (
        facts.closure() is None
        and facts.expertise_requested
        and facts.identity_wait() is None
        and bool(facts.available_selected())
    )


@settings(max_examples=500, deadline=None)
@given(history=histories(), data=st.data())
def test_any_order_with_replays_decides_as_the_occurred_at_order(history: list[Fact], data: st.DataObject) -> None:
    chronological = sorted(history, key=lambda fact: fact.at)
    shuffled = data.draw(st.permutations(history), label="order")
    replays = data.draw(st.lists(st.sampled_from(history), max_size=4), label="replays")
    positions = data.draw(st.lists(st.integers(0, len(shuffled)), min_size=len(replays), max_size=len(replays)))
    delivered = list(shuffled)
    for replay, position in zip(replays, positions, strict=True):
        delivered.insert(position, replay)
    sends = data.draw(st.lists(st.booleans(), min_size=len(delivered), max_size=len(delivered)), label="sends")

    expected = fold(chronological)
    # The slot as the service runs it: reconcile after every event, and the sender may run between events.
    known = EnrolmentFacts("enr-1")
    slot = fresh()
    sent_while: list[EnrolmentFacts] = []
    for fact, send in zip(delivered, sends, strict=True):
        known = fact.apply(known)
        slot = slot.reconcile(decide(known), "m-1", NOW, in_flight=False, closes_at=DEADLINE)
        item = slot.due(NOW)
        # Whatever was delivered so far, a due notification means the facts known now allow it.
        assert item is None or (truthful(known) and decide(known) == wanted(A))
        if send and item is not None:
            slot = slot.begin_send(item.email).record_sent(item.email, NOW)
            sent_while.append(known)
    assert known == expected
    assert decide(known) == decide(expected)
    assert decide(known, now=DEADLINE) == decide(expected, now=DEADLINE)
    assert all(truthful(facts) for facts in sent_while)
    assert len(sent_while) <= 1  # at most one e-mail per (enrolment, expert)
    view = slot.view()
    if not truthful(expected):
        assert view.status != "pending"
        assert slot.due(NOW) is None
        assert view.status == "sent" or not sent_while
    if expected.closure() is not None and not sent_while:
        assert view.status == "cancelled"
        assert view.reason is not None
        assert view.reason.code == expected.closure()
    assert view.reason is None or view.reason.code in TEXTS


# --- the state machine ----------------------------------------------------------------------------------------


def test_reconcile_is_idempotent_and_keyed_by_lowercased_address() -> None:
    once = fresh().reconcile(wanted(A), "m-1", NOW, in_flight=False)
    twice = once.reconcile(wanted(ExpertContact(A.name, A.email.upper())), "m-1", NOW, in_flight=False)
    assert once == twice
    assert [(n.email, n.status) for n in once.notifications] == [("ana@chu.mssante.fr", "pending")]
    assert once.view().status == "pending"


def test_waiting_until_wanted_with_the_reason() -> None:
    slot = fresh().reconcile(Waiting(Reason.of("patient_not_found")), "m-1", NOW, in_flight=False)
    assert slot.view() == View("waiting", Reason.of("patient_not_found"))
    assert slot.due(NOW) is None
    assert slot.notifications == ()
    # Wanted, then the only available study removed before sending: back to waiting, then wanted again.
    slot = slot.reconcile(wanted(A), "m-1", NOW, False)
    slot = slot.reconcile(Waiting(Reason.of("waiting_available_study")), "m-1", NOW, False)
    assert statuses(slot) == {"ana@chu.mssante.fr": "waiting"}
    assert slot.view() == View("waiting", Reason.of("waiting_available_study"))
    assert slot.due(NOW) is None
    slot = slot.reconcile(wanted(A), "m-1", NOW, False)
    assert slot.due(NOW) is not None


def test_changed_expert_before_sending_skips_the_old_one() -> None:
    slot = fresh().reconcile(wanted(A), "m-1", NOW, in_flight=False).reconcile(wanted(B), "m-1", NOW, False)
    assert statuses(slot) == {"ana@chu.mssante.fr": "skipped", "ben@chu.mssante.fr": "pending"}
    assert slot.notification(A.email).reason == Reason.of("expert_replaced")  # type: ignore[union-attr]
    assert slot.due(NOW) is not None
    assert slot.due(NOW).email == "ben@chu.mssante.fr"  # type: ignore[union-attr]
    # The first expert back before anything was sent: reopened, the second skipped.
    back = slot.reconcile(wanted(A), "m-1", NOW, in_flight=False)
    assert statuses(back) == {"ana@chu.mssante.fr": "pending", "ben@chu.mssante.fr": "skipped"}


def test_after_sending_a_new_expert_gets_one_and_the_sent_one_is_final() -> None:
    slot = fresh().reconcile(wanted(A), "m-1", NOW, False).begin_send(A.email).record_sent(A.email, NOW)
    assert slot.view().status == "sent"
    slot = slot.reconcile(wanted(B), "m-1", NOW, False)
    assert statuses(slot) == {"ana@chu.mssante.fr": "sent", "ben@chu.mssante.fr": "pending"}
    again = slot.reconcile(wanted(A), "m-1", NOW, False)
    assert statuses(again) == {"ana@chu.mssante.fr": "sent", "ben@chu.mssante.fr": "skipped"}
    assert again.due(NOW) is None  # Ana's is never sent twice; Ben is no longer on call


def test_withdrawal_cancels_what_is_not_sent_and_a_sent_one_stays_sent() -> None:
    withdrawn = Cancelled(Reason.of("enrolment_withdrawn"))
    slot = fresh().reconcile(wanted(A), "m-1", NOW, False).reconcile(withdrawn, "m-1", NOW, False)
    assert statuses(slot) == {"ana@chu.mssante.fr": "cancelled"}
    assert slot.view() == View("cancelled", Reason.of("enrolment_withdrawn"))
    assert slot.due(NOW) is None
    # Re-opened from scratch (a newer enrolled event with consent): the same address may get it.
    reopened = slot.reconcile(wanted(A), "m-1", NOW, False)
    assert reopened.due(NOW) is not None
    sent = reopened.begin_send(A.email).record_sent(A.email, NOW)
    after = sent.reconcile(Cancelled(Reason.of("consent_withdrawn")), "m-1", NOW, False)
    assert statuses(after) == {"ana@chu.mssante.fr": "sent"}
    view = after.view()
    assert view.status == "sent"
    assert view.reason is not None
    assert view.reason.code == "consent_withdrawn"
    # Waiting before any e-mail, then withdrawn: cancelled.
    waiting = fresh().reconcile(Waiting(Reason.of("waiting_identity")), "m-1", NOW, False)
    assert waiting.reconcile(withdrawn, "m-1", NOW, False).view().status == "cancelled"


def test_in_flight_notification_is_superseded_and_the_sender_closes_it() -> None:
    withdrawn = Cancelled(Reason.of("enrolment_withdrawn"))
    slot = fresh().reconcile(wanted(A), "m-1", NOW, False).begin_send(A.email)
    slot = slot.reconcile(withdrawn, "m-1", NOW, in_flight=True)
    item = slot.notification(A.email)
    assert item is not None
    assert (item.status, item.superseded) == ("pending", True)
    assert slot.due(NOW) is None
    assert slot.view().status == "cancelled"
    # The sender's re-check saw the withdrawal before MAIL FROM: nothing sent, closed as desired now.
    withheld = slot.end_send().reconcile(withdrawn, "m-1", NOW, in_flight=False)
    assert statuses(withheld) == {"ana@chu.mssante.fr": "cancelled"}
    assert withheld.sending is None
    # Or the attempt failed meanwhile: cancelled too, not retried.
    failed = slot.record_failure(A.email, SendFailure("transient", "451"), NOW, SCHEDULE)
    assert statuses(failed.reconcile(withdrawn, "m-1", NOW, False)) == {"ana@chu.mssante.fr": "cancelled"}


def test_meeting_passed_not_sent_or_failed_after_attempts() -> None:
    slot = fresh().reconcile(wanted(A), "m-1", NOW, False)
    assert slot.reconcile(MeetingPassed(), "m-1", NOW, False).view() == View("not_sent", Reason.of("meeting_passed"))
    tried = slot.record_failure(A.email, SendFailure("transient", "451 4.3.0 try later"), NOW, SCHEDULE)
    closed = tried.reconcile(MeetingPassed(), "m-1", NOW, False)
    assert closed.view().status == "failed"
    assert closed.view().reason.code == "send_failed"  # type: ignore[union-attr]
    never = fresh().reconcile(Waiting(Reason.of("waiting_available_study")), "m-1", NOW, False)
    assert never.reconcile(MeetingPassed(), "m-1", NOW, False).view().status == "not_sent"


def test_failures_transient_permanent_and_deadline() -> None:
    slot = fresh().reconcile(wanted(A), "m-1", NOW, False)
    retried = slot.record_failure(A.email, SendFailure("transient", "451 4.3.0 try later"), NOW, SCHEDULE)
    item = retried.notification(A.email)
    assert item is not None
    assert (item.status, item.attempts, item.next_attempt_at) == ("pending", 1, NOW + dt.timedelta(minutes=1))
    reason = retried.view().reason
    assert reason is not None
    assert reason.code == "send_retrying"
    assert reason.text.startswith(TEXTS["send_retrying"] + " (")
    assert "451 4.3.0 try later" in reason.text
    assert retried.due(NOW) is None
    failed = slot.record_failure(A.email, SendFailure("permanent", "550 5.1.1 user unknown"), NOW, SCHEDULE)
    assert failed.view() == View("failed", Reason.of("send_failed", "550 5.1.1 user unknown"))
    configuration = slot.record_failure(A.email, SendFailure("configuration", "échec TLS"), NOW, SCHEDULE)
    assert configuration.view().reason.code == "smtp_configuration"  # type: ignore[union-attr]
    late = slot.record_failure(A.email, SendFailure("configuration", "TLS"), DEADLINE, SCHEDULE)
    assert late.view().status == "failed"


def test_refused_domain_and_not_requested_and_no_expert() -> None:
    refused = fresh().reconcile(wanted(A, allowed=False), "m-1", NOW, False)
    assert refused.view().status == "refused"
    assert refused.view().reason == Reason.of("recipient_not_allowed", "domaine chu.mssante.fr")
    assert refused.due(NOW) is None
    unrequested = fresh().reconcile(wanted(A), "m-1", NOW, False).reconcile(NotRequested(), "m-1", NOW, False)
    assert unrequested.view() == View("skipped", Reason.of("expertise_not_requested"))
    assert unrequested.due(NOW) is None
    none = fresh().reconcile(NoExpert(), "m-1", NOW, False)
    assert none.view() == View("skipped", Reason.of("no_expert"))


@given(
    st.lists(
        st.sampled_from(["A", "B", "not_requested", "wait", "cancel", "passed", "send", "fail451", "fail550"]),
        max_size=25,
    )
)
def test_no_address_is_ever_sent_twice_and_only_wanted_ones_are_sent(steps: list[str]) -> None:
    """Whatever the order of decisions, each address is sent at most once, and a send only ever happens to
    the currently wanted expert (the claim picks `due`, which excludes closed and superseded ones)."""
    slot = fresh()
    sent: list[str] = []
    others: dict[str, Desired] = {
        "not_requested": NotRequested(),
        "wait": Waiting(Reason.of("waiting_identity")),
        "cancel": Cancelled(Reason.of("consent_withdrawn")),
        "passed": MeetingPassed(),
    }
    for step in steps:
        if step in ("A", "B"):
            slot = slot.reconcile(wanted(A if step == "A" else B), "m-1", NOW, False)
        elif step in others:
            slot = slot.reconcile(others[step], "m-1", NOW, False)
        else:
            item = slot.due(dt.datetime.max.replace(tzinfo=dt.UTC) - dt.timedelta(days=400))
            if item is None:
                continue
            assert item.email == slot.current
            slot = slot.begin_send(item.email)
            if step == "send":
                sent.append(item.email)
                slot = slot.record_sent(item.email, NOW)
            else:
                failure = SendFailure("transient" if step == "fail451" else "permanent", step)
                slot = slot.record_failure(item.email, failure, NOW, SCHEDULE)
        view = slot.view()
        assert view.reason is None or view.reason.code in TEXTS
    assert len(sent) == len(set(sent))


# --- the message -----------------------------------------------------------------------------------------------


def _enrolled(sex: str, used_name: str | None = None) -> PatientEnrolled:
    return PatientEnrolled.model_validate(
        {
            "event_id": uuid.uuid4(),
            "occurred_at": NOW,
            "enrolment_id": "enr-1",
            "meeting_id": "m-1",
            "rcp_id": "rcp-1",
            "meeting_title": "RCP",
            "meeting_date": dt.date(2030, 3, 22),
            "centre": "3C",
            "patient": {
                "birth_name": "Essai",
                "used_name": used_name,
                "first_name": "Anaïs",
                "birth_date": dt.date(1956, 4, 12),
                "sex": sex,
            },
            "consent": True,
            "requested_by": {"name": "Dr Paul\nFICTIF"},
        },
        strict=False,
    )


def test_civility_and_display_name() -> None:
    assert patient_facts(_enrolled("F")) == PatientFacts("Mme", "Anaïs ESSAI", "Dr Paul FICTIF")
    assert patient_facts(_enrolled("M")).civility == "M."
    assert patient_facts(_enrolled("U")).civility is None
    assert patient_facts(_enrolled("F", "Fictif")).display_name == "Anaïs FICTIF née ESSAI"
    assert patient_facts(_enrolled("U", "Fictif")).display_name == "Anaïs FICTIF né(e) ESSAI"


def test_salutation_does_not_double_the_title() -> None:
    assert salutation("Dr Jeanne EXEMPLE") == "Dr Jeanne EXEMPLE"
    assert salutation("Pr Jean EXEMPLE") == "Pr Jean EXEMPLE"
    assert salutation("Jeanne EXEMPLE") == "Dr Jeanne EXEMPLE"
    assert salutation("Drouot EXEMPLE") == "Dr Drouot EXEMPLE"


def test_render_escapes_html_only() -> None:
    settings = MailSettings("p@x.mssante.fr", None, "https://dcc.test/?a=1&b=2", "x.mssante.fr")
    meeting = MeetingText("RCP <b>ORL</b>", dt.date(2030, 3, 2), "3C <i>fictif</i>")
    rendered = render("Jeanne EXEMPLE", PatientFacts(None, "Anaïs ESSAI", "Dr Paul FICTIF"), meeting, settings)
    assert rendered.subject == "Demande d'expertise – RCP <b>ORL</b> du 02/03/2030"
    assert "Le dossier de Anaïs ESSAI, a été inscrit" in rendered.text
    assert "RCP <b>ORL</b>, le 02/03/2030." in rendered.text
    assert "RCP &lt;b&gt;ORL&lt;/b&gt;" in rendered.html
    assert "<b>" not in rendered.html
    assert "<i>" not in rendered.html
    assert "https://dcc.test/?a=1&amp;b=2" in rendered.html


# --- SMTP errors -----------------------------------------------------------------------------------------------


def _refused(code: int, message: str) -> Exception:
    return aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(code, message, "a@b")])


def _disconnected_by_tls() -> Exception:
    error = aiosmtplib.SMTPServerDisconnected("Connection lost")
    error.__cause__ = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")
    return error


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(451, "4.3.0 try later", "a@b")]),
            "transient",
        ),
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "5.1.1 user unknown", "a@b")]),
            "permanent",
        ),
        (aiosmtplib.SMTPDataError(552, "too big"), "permanent"),
        (aiosmtplib.SMTPDataError(421, "closing"), "transient"),
        (aiosmtplib.SMTPSenderRefused(530, "Must issue a STARTTLS command first", "a@b"), "configuration"),
        (aiosmtplib.SMTPConnectError("refused"), "transient"),
        (aiosmtplib.SMTPServerDisconnected("Connection lost"), "transient"),
        (aiosmtplib.SMTPTimeoutError("slow"), "transient"),
        (_disconnected_by_tls(), "configuration"),
        (ssl.SSLError(1, "TLSV1_ALERT_UNKNOWN_CA"), "configuration"),
        (aiosmtplib.SMTPNotSupported("extension not supported"), "configuration"),
    ],
)
def test_classify(error: Exception, kind: str) -> None:
    assert classify(error).kind == kind


def test_classify_keeps_the_reply() -> None:
    assert "550 5.1.1 user unknown" in classify(_refused(550, "5.1.1 user unknown")).detail
