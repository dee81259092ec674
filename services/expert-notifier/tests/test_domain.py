"""Unit tests (no I/O): recipient policy, the role-slot state machine, the message, SMTP error classes."""

from __future__ import annotations

import datetime as dt
import ssl
import uuid

import aiosmtplib
import pytest
from expert_notifier.domain import (
    ExpertContact,
    MeetingFacts,
    NoExpert,
    RoleSlot,
    SendFailure,
    Waiting,
    Wanted,
    Withdrawn,
    deadline_for,
    desired,
)
from expert_notifier.message import MailSettings, MeetingText, PatientFacts, patient_facts, render, salutation
from expert_notifier.recipients import address_allowed
from expert_notifier.smtp import classify
from hypothesis import given
from hypothesis import strategies as st
from proxymage_shared.events import PatientEnrolled
from proxymage_shared.retry import BackoffSchedule

NOW = dt.datetime(2030, 3, 1, 8, 0, tzinfo=dt.UTC)
DEADLINE = deadline_for(dt.date(2030, 3, 22), 1)
SCHEDULE = BackoffSchedule((60,), jitter=0)
A = ExpertContact("Dr Ana EXEMPLE", "Ana@chu.mssante.fr")
B = ExpertContact("Dr Ben EXEMPLE", "ben@chu.mssante.fr")


def wanted(expert: ExpertContact, allowed: bool = True) -> Wanted:
    return Wanted(expert, allowed=allowed, deadline=DEADLINE)


def statuses(slot: RoleSlot) -> dict[str, str]:
    return {n.email: n.status for n in slot.notifications}


def fresh() -> RoleSlot:
    return RoleSlot("enr-1", "radiologist")


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


# --- what is wanted -------------------------------------------------------------------------------------------


def test_desired_waits_for_enrolment_then_experts() -> None:
    meeting = MeetingFacts("m-1", "RCP", dt.date(2030, 3, 22), "3C", {"radiologist": A, "nuclear_physician": None})
    common = {"allowed_domains": ("*.mssante.fr",), "give_up_days_after_meeting": 1}
    assert isinstance(
        desired("radiologist", expertise_requested=False, meeting_id="m-1", meeting=meeting, **common), Withdrawn
    )
    assert isinstance(
        desired("radiologist", expertise_requested=True, meeting_id=None, meeting=None, **common), Waiting
    )
    assert isinstance(
        desired("radiologist", expertise_requested=True, meeting_id="m-1", meeting=None, **common), Waiting
    )
    assert isinstance(
        desired("nuclear_physician", expertise_requested=True, meeting_id="m-1", meeting=meeting, **common), NoExpert
    )
    got = desired("radiologist", expertise_requested=True, meeting_id="m-1", meeting=meeting, **common)
    assert got == Wanted(A, allowed=True, deadline=dt.datetime(2030, 3, 24, tzinfo=dt.UTC))


# --- the state machine ----------------------------------------------------------------------------------------


def test_reconcile_is_idempotent_and_keyed_by_lowercased_address() -> None:
    once = fresh().reconcile(wanted(A), "m-1", NOW, in_flight=False)
    twice = once.reconcile(wanted(ExpertContact(A.name, A.email.upper())), "m-1", NOW, in_flight=False)
    assert once == twice
    assert [(n.email, n.status) for n in once.notifications] == [("ana@chu.mssante.fr", "pending")]
    assert once.view().status == "pending"


def test_changed_expert_before_sending_skips_the_old_one() -> None:
    slot = fresh().reconcile(wanted(A), "m-1", NOW, in_flight=False).reconcile(wanted(B), "m-1", NOW, False)
    assert {n.email: n.status for n in slot.notifications} == {
        "ana@chu.mssante.fr": "skipped",
        "ben@chu.mssante.fr": "pending",
    }
    assert slot.due(NOW) is not None
    assert slot.due(NOW).email == "ben@chu.mssante.fr"  # type: ignore[union-attr]
    # The first expert back before anything was sent: reopened, the second skipped.
    back = slot.reconcile(wanted(A), "m-1", NOW, in_flight=False)
    assert {n.email: n.status for n in back.notifications} == {
        "ana@chu.mssante.fr": "pending",
        "ben@chu.mssante.fr": "skipped",
    }


def test_after_sending_a_new_expert_gets_one_and_the_sent_one_is_final() -> None:
    slot = fresh().reconcile(wanted(A), "m-1", NOW, False).begin_send(A.email).record_sent(A.email, NOW)
    assert slot.view().status == "sent"
    slot = slot.reconcile(wanted(B), "m-1", NOW, False)
    assert {n.email: n.status for n in slot.notifications} == {
        "ana@chu.mssante.fr": "sent",
        "ben@chu.mssante.fr": "pending",
    }
    again = slot.reconcile(wanted(A), "m-1", NOW, False)
    assert again.notification(A.email).status == "sent"  # type: ignore[union-attr]
    assert statuses(again) == {"ana@chu.mssante.fr": "sent", "ben@chu.mssante.fr": "skipped"}
    assert again.due(NOW) is None  # Ana's is never sent twice; Ben is no longer on call


def test_in_flight_notification_is_superseded_not_skipped() -> None:
    slot = fresh().reconcile(wanted(A), "m-1", NOW, False).begin_send(A.email)
    slot = slot.reconcile(wanted(B), "m-1", NOW, in_flight=True)
    assert slot.notification(A.email).superseded  # type: ignore[union-attr]
    failed = slot.record_failure(A.email, SendFailure("transient", "451 later"), NOW, SCHEDULE)
    assert failed.notification(A.email).status == "skipped"  # type: ignore[union-attr]


def test_failures_transient_permanent_and_deadline() -> None:
    slot = fresh().reconcile(wanted(A), "m-1", NOW, False)
    retried = slot.record_failure(A.email, SendFailure("transient", "451 4.3.0 try later"), NOW, SCHEDULE)
    item = retried.notification(A.email)
    assert item is not None
    assert (item.status, item.attempts, item.next_attempt_at) == ("pending", 1, NOW + dt.timedelta(minutes=1))
    assert retried.view().reason is not None
    assert "451 4.3.0 try later" in retried.view().reason  # type: ignore[operator]
    assert retried.due(NOW) is None
    failed = slot.record_failure(A.email, SendFailure("permanent", "550 5.1.1 user unknown"), NOW, SCHEDULE)
    assert failed.view() == failed.view().__class__("failed", "550 5.1.1 user unknown")
    late = slot.record_failure(A.email, SendFailure("configuration", "TLS"), DEADLINE, SCHEDULE)
    assert late.view().status == "failed"


def test_refused_domain_and_withdrawal_and_no_expert() -> None:
    refused = fresh().reconcile(wanted(A, allowed=False), "m-1", NOW, False)
    assert refused.view().status == "refused"
    assert refused.due(NOW) is None
    withdrawn = fresh().reconcile(wanted(A), "m-1", NOW, False).reconcile(Withdrawn(), "m-1", NOW, False)
    assert withdrawn.view().status == "skipped"
    assert withdrawn.due(NOW) is None
    none = fresh().reconcile(NoExpert("no on-call radiologist"), "m-1", NOW, False)
    assert none.view().status == "skipped"


@given(
    st.lists(
        st.sampled_from(["A", "B", "withdraw", "wait", "send", "fail451", "fail550"]),
        max_size=25,
    )
)
def test_no_address_is_ever_sent_twice_and_only_wanted_ones_are_sent(steps: list[str]) -> None:
    """Whatever the order of events, each address is sent at most once, and a send only ever happens to
    the currently wanted expert (the claim picks `due`, which excludes skipped and superseded ones)."""
    slot = fresh()
    sent: list[str] = []
    for step in steps:
        if step in ("A", "B"):
            slot = slot.reconcile(wanted(A if step == "A" else B), "m-1", NOW, False)
        elif step == "withdraw":
            slot = slot.reconcile(Withdrawn(), "m-1", NOW, False)
        elif step == "wait":
            slot = slot.reconcile(Waiting("waiting"), "m-1", NOW, False)
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
    assert len(sent) == len(set(sent))
    assert all(n.status in ("pending", "sent", "failed", "refused", "skipped") for n in slot.notifications)


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
        (aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server."), "configuration"),
    ],
)
def test_classify(error: Exception, kind: str) -> None:
    assert classify(error).kind == kind


def test_classify_keeps_the_reply() -> None:
    assert "550 5.1.1 user unknown" in classify(_refused(550, "5.1.1 user unknown")).reason
