"""The expert-notifier end to end, against real Kafka, FerretDB and the local secure-mail server (STARTTLS
required, client certificate checked against the test CA): DCC events in on Kafka, e-mails out to the
server's mailbox (parsed back from the bytes it received), outcomes out on Kafka.

The SMTP server is shared with other test sessions: every test uses recipient addresses of its own
(`...+<unique>@...`), finds its messages by them, and removes its failure-script rules at the end."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import fcntl
import json
import os
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiosmtplib
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from expert_notifier.app import build
from expert_notifier.handlers import Sender
from expert_notifier.message import message_id
from expert_notifier.settings import Settings
from expert_notifier.smtp import SmtpSender
from expert_notifier.store import NotifierStore, notification_key
from proxymage_dev.pytest_plugin import SMTP_DIR, free_port
from proxymage_dev.testing import eventually
from proxymage_shared import topics
from proxymage_shared.events import ExpertiseNotification, NotificationStatus
from proxymage_shared.kafka import ensure_topics
from proxymage_shared.logging import configure_logging
from proxymage_shared.mongo import create_mongo_client
from proxymage_shared.reasons import TEXTS
from proxymage_shared.service import run_service
from proxymage_shared.settings import load_settings
from proxymage_shared.topics import topic_specs

MAILBOX = SMTP_DIR / "mailbox"
SCRIPT = SMTP_DIR / "script.json"
CERTS = SMTP_DIR / "certs"
MEETING_DATE = dt.date(2030, 3, 22)
STUDY_UID = "1.2.826.0.1.3680043.10.1"
REGISTRATION_URL = "https://dcc.fictif.test/inscription?source=proxymage&x=1"

# Every patient name the tests enrol, and phrases of the e-mail body: none may appear in the service's logs.
SENSITIVE = [
    "BARBE-FICTIF",
    "Hélène",
    "Helene",
    "ESSAI-EXEMPLE",
    "Anaïs",
    "Camille",
    "DOSSIER-ESSAI",
    "Le dossier de",
    "concertation pluridisciplinaire",
    "vos soins",
    "Cordialement",
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- the shared SMTP server's mailbox and failure script -------------------------------------------------


@dataclass
class Received:
    envelope: dict[str, Any]
    message: EmailMessage
    raw: bytes


def received_by(address: str) -> list[Received]:
    """Messages the server accepted for `address` (read-only: other sessions' files are left alone)."""
    found: list[Received] = []
    for sidecar in sorted(MAILBOX.glob("*.json")):
        try:
            envelope = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue
        if address.lower() not in [rcpt.lower() for rcpt in envelope.get("rcpt_tos", [])]:
            continue
        raw = (MAILBOX / envelope["eml"]).read_bytes()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        found.append(Received(envelope, parsed, raw))
    return found


@contextlib.contextmanager
def _script_lock() -> Iterator[None]:
    with (SMTP_DIR / ".script.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _edit_script(change: Any) -> None:
    """Read-modify-write of the shared failure script, atomically (tmp + os.replace), under a lock file."""
    with _script_lock():
        try:
            script = json.loads(SCRIPT.read_text())
        except (OSError, ValueError):
            script = {}
        change(script)
        script = {stage: rules for stage, rules in script.items() if rules}
        if not script:
            with contextlib.suppress(FileNotFoundError):
                SCRIPT.unlink()
            return
        tmp = SCRIPT.with_name(f".script.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(script, indent=2))
        os.replace(tmp, SCRIPT)


@contextlib.contextmanager
def scripted_rcpt(rule: dict[str, Any]) -> Iterator[None]:
    _edit_script(lambda script: script.setdefault("rcpt", []).append(rule))
    try:
        yield
    finally:
        _edit_script(lambda script: script.__setitem__("rcpt", [r for r in script.get("rcpt", []) if r != rule]))


# --- the service under test ------------------------------------------------------------------------------


@dataclass
class Harness:
    settings: Settings
    producer: AIOKafkaProducer
    log_file: Any
    unique: str
    outcomes: list[ExpertiseNotification] = field(default_factory=list)
    stop: asyncio.Event | None = None
    running: asyncio.Task[None] | None = None

    def address(self, name: str) -> str:
        return f"{name}+{self.unique}@chu-fictif.mssante.test"

    async def start(self, sender: Sender | None = None, **overrides: Any) -> None:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        configure_logging(settings.service_name, "DEBUG", stream=self.log_file)
        self.stop = asyncio.Event()
        self.running = asyncio.create_task(run_service(build(settings, sender), self.stop))

    async def halt(self) -> None:
        assert self.stop is not None
        assert self.running is not None
        self.stop.set()
        await self.running
        self.stop, self.running = None, None

    async def readiness(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{self.settings.health_port}/readyz", timeout=5)
        result: dict[str, Any] = answer.json()
        return result

    async def _send(self, topic: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        payload = {"event_id": str(uuid.uuid4()), "occurred_at": _now().isoformat(), **payload}
        await self.producer.send_and_wait(self.settings.topic(topic), json.dumps(payload).encode(), key=key.encode())
        return payload

    async def meeting(
        self,
        meeting_id: str,
        *,
        radiologist: tuple[str, str] | None,
        nuclear_physician: tuple[str, str] | None = None,
        title: str = "RCP ORL CHU fictif",
        occurred_at: dt.datetime | None = None,
        date: dt.date = MEETING_DATE,
    ) -> None:
        def expert(value: tuple[str, str] | None) -> dict[str, str] | None:
            return None if value is None else {"name": value[0], "email": value[1]}

        await self._send(
            topics.MEETING_EXPERTS,
            meeting_id,
            {
                "occurred_at": (occurred_at or _now()).isoformat(),
                "meeting_id": meeting_id,
                "rcp_id": "rcp-orl-fictif",
                "title": title,
                "date": date.isoformat(),
                "centre": "3C du CHU fictif",
                "on_call_radiologist": expert(radiologist),
                "on_call_nuclear_physician": expert(nuclear_physician),
            },
        )

    async def enrol(
        self,
        enrolment_id: str,
        meeting_id: str,
        *,
        birth_name: str = "BARBE-FICTIF",
        first_name: str = "Hélène",
        sex: str = "F",
        title: str = "RCP ORL CHU fictif",
        consent: bool = True,
        date: dt.date = MEETING_DATE,
        occurred_at: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """Publishes an enrolled event; returns it (its `event_id` is what identity outcomes answer)."""
        return await self._send(
            topics.PATIENT_ENROLLED,
            enrolment_id,
            {
                "enrolment_id": enrolment_id,
                "meeting_id": meeting_id,
                "rcp_id": "rcp-orl-fictif",
                "occurred_at": (occurred_at or _now()).isoformat(),
                "meeting_title": title,
                "meeting_date": date.isoformat(),
                "centre": "3C du CHU fictif",
                "patient": {
                    "birth_name": birth_name,
                    "used_name": None,
                    "first_name": first_name,
                    "birth_date": "1956-04-12",
                    "sex": sex,
                },
                "consent": consent,
                "requested_by": {"name": "Dr Paul DEMANDEUR-FICTIF"},
            },
        )

    async def identity(self, enrolled: dict[str, Any], status: str = "matched") -> None:
        """The identity-matcher's outcome for `enrolled` (an event returned by `enrol`)."""
        await self._send(
            topics.IDENTITY_RESOLVED,
            enrolled["enrolment_id"],
            {
                "enrolment_id": enrolled["enrolment_id"],
                "source_event_id": enrolled["event_id"],
                "source_occurred_at": enrolled["occurred_at"],
                "meeting_id": enrolled["meeting_id"],
                "meeting_date": enrolled["meeting_date"],
                "status": status,
                "pacs_patients": [{"patient_id": "PID-FICTIF", "issuer": None}] if status == "matched" else [],
            },
        )

    async def study(self, enrolment_id: str, status: str, version: int, uid: str = STUDY_UID) -> dict[str, Any]:
        """The study-fetcher's status of one selected study."""
        return await self._send(
            topics.STUDY_STATUS,
            enrolment_id,
            {"enrolment_id": enrolment_id, "study_instance_uid": uid, "status": status, "version": version,
             "attempts": 0},
        )  # fmt: skip

    async def ready(self, enrolled: dict[str, Any]) -> None:
        """The patient is found and a selected study is available: the e-mail may go."""
        await self.identity(enrolled)
        await self.study(enrolled["enrolment_id"], "available", 3)

    async def withdraw(self, enrolment_id: str, occurred_at: dt.datetime | None = None) -> dict[str, Any]:
        return await self._send(
            topics.ENROLMENT_WITHDRAWN,
            enrolment_id,
            {"enrolment_id": enrolment_id, "occurred_at": (occurred_at or _now()).isoformat(), "reason": "test"},
        )

    async def select(self, enrolment_id: str, *, expertise: bool = True, event: dict[str, Any] | None = None) -> None:
        payload = event or {
            "enrolment_id": enrolment_id,
            "study_instance_uids": [STUDY_UID],
            "expertise_requested": expertise,
        }
        await self._send(topics.STUDIES_SELECTED, enrolment_id, payload)

    def statuses(self, enrolment_id: str, role: str) -> list[str]:
        """The role's successive statuses, repeats collapsed (e.g. `pending` waiting, then `pending` sending:
        the three input topics are not ordered with each other)."""
        collapsed: list[str] = []
        for outcome in self.of(enrolment_id, role):
            if not collapsed or collapsed[-1] != outcome.status:
                collapsed.append(outcome.status)
        return collapsed

    def of(self, enrolment_id: str, role: str | None = None) -> list[ExpertiseNotification]:
        return [o for o in self.outcomes if o.enrolment_id == enrolment_id and (role is None or o.role == role)]

    async def status(
        self, enrolment_id: str, role: str, status: NotificationStatus, code: str | None = None, timeout: float = 30
    ) -> ExpertiseNotification:
        def matches(outcome: ExpertiseNotification) -> bool:
            return outcome.status == status and (code is None or outcome.reason_code == code)

        async def arrived() -> bool:
            return any(matches(o) for o in self.of(enrolment_id, role))

        await eventually(arrived, timeout, f"{role} of {enrolment_id} to be {status} ({code})")
        return next(o for o in self.of(enrolment_id, role) if matches(o))

    def last(self, enrolment_id: str, role: str) -> ExpertiseNotification:
        return self.of(enrolment_id, role)[-1]

    async def mail(self, address: str, count: int = 1, timeout: float = 30) -> list[Received]:
        async def arrived() -> bool:
            return len(received_by(address)) >= count

        await eventually(arrived, timeout, f"{count} message(s) for {address}")
        return received_by(address)


@pytest.fixture
async def notifier(stack_env: dict[str, str], unique: str, tmp_path: Path) -> AsyncIterator[Harness]:
    settings = load_settings(
        Settings,
        topic_prefix=f"it-{unique}.",
        mongo_database=f"it_notifier_{unique}",
        health_port=free_port(),
        mail_from="Proxymage FICTIF <proxymage+noreply@3c-fictif.mssante.test>",
        reply_to="3C fictif <3c@3c-fictif.mssante.test>",
        dcc_registration_url=REGISTRATION_URL,
        retry_delays_seconds=(0.3,),
        send_poll_seconds=0.1,
        maintenance_interval_seconds=0.5,
        republish_after_seconds=1.0,
        handler_retry_base_seconds=0.05,
        handler_retry_max_seconds=0.2,
    )
    # One partition per topic: one key's events, and our sentinels, are consumed in the order produced.
    await ensure_topics(settings.kafka_bootstrap_servers, topic_specs(1, prefix=settings.topic_prefix))
    log_path = tmp_path / "expert-notifier.log"
    with log_path.open("w") as log_file:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
        consumer = AIOKafkaConsumer(
            settings.topic(topics.EXPERTISE_NOTIFICATION),
            bootstrap_servers=settings.kafka_bootstrap_servers,
            auto_offset_reset="earliest",
        )
        harness = Harness(settings, producer, log_file, unique)

        async def collect() -> None:
            async for record in consumer:
                harness.outcomes.append(ExpertiseNotification.model_validate_json(record.value))

        await producer.start()
        await consumer.start()
        collector = asyncio.create_task(collect())
        await harness.start()
        try:
            yield harness
        finally:
            if harness.running is not None:
                await harness.halt()
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            await consumer.stop()
            await producer.stop()
            configure_logging(settings.service_name, "INFO")  # away from the file closed next
            await _drop_test_data(settings)
    logged = log_path.read_text()
    assert '"event": "expertise_notification_published"' in logged
    leaked = [value for value in SENSITIVE if value.upper() in logged.upper()]
    assert leaked == [], f"patient data or e-mail text in the service's logs: {leaked}"
    # Every reason comes as a stable code and its French text (a detail may follow in parentheses).
    for outcome in harness.outcomes:
        if outcome.reason is not None or outcome.reason_code is not None:
            assert outcome.reason_code in TEXTS, outcome
            assert outcome.reason is not None
            assert outcome.reason.startswith(TEXTS[outcome.reason_code]), outcome
    # Versions strictly increase per (enrolment, role), in publication order.
    series: dict[tuple[str, str | None], list[int]] = {}
    for outcome in harness.outcomes:
        series.setdefault((outcome.enrolment_id, outcome.role), []).append(outcome.version)
    for key, versions in series.items():
        distinct = list(dict.fromkeys(versions))  # a re-publication repeats a version, never goes back
        assert distinct == sorted(set(versions)), f"versions of {key} not increasing: {versions}"


async def _drop_test_data(settings: Settings) -> None:
    """Deletes this test's own topics and database: the broker is shared, and each topic costs it memory."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    with contextlib.suppress(Exception):
        await admin.start()
        try:
            await admin.delete_topics([spec.name for spec in topic_specs(1, prefix=settings.topic_prefix)])
        finally:
            await admin.close()
    client = create_mongo_client(settings.mongo_url.get_secret_value())
    try:
        await client.drop_database(settings.database_name())
    finally:
        await client.close()


def _text(received: Received, subtype: str) -> str:
    part = received.message.get_body((subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


# --- the tests ---------------------------------------------------------------------------------------------


async def _sentinel(notifier: Harness, name: str) -> None:
    """An enrolment handled after everything published before it (one partition per topic), whose e-mail
    arrives: had an earlier one been sent, it would be in the mailbox by now."""
    sentinel = notifier.address(f"sentinelle.{name}")
    await notifier.meeting(f"m-{name}", radiologist=("Dr Luc SENTINELLE-EXEMPLE", sentinel))
    enrolled = await notifier.enrol(f"enr-{name}", f"m-{name}")
    await notifier.select(f"enr-{name}")
    await notifier.ready(enrolled)
    await notifier.status(f"enr-{name}", "radiologist", "sent")
    await notifier.mail(sentinel)


async def test_one_message_per_expert_once_matched_with_an_available_study(notifier: Harness) -> None:
    radiologist = notifier.address("radio.exemple")
    nuclear = notifier.address("nucleaire.exemple")
    title = "RCP ORL <script>alert('x')</script> & co"
    await notifier.meeting(
        "m-1",
        radiologist=("Dr Jeanne RADIO-EXEMPLE", radiologist),
        nuclear_physician=("Marc NUCLEAIRE-EXEMPLE", nuclear),
        title=title,
    )
    enrolled = await notifier.enrol("enr-1", "m-1", title=title)
    await notifier.select("enr-1")
    # Requested, but the patient is not identified yet, then no selected study is available yet.
    waiting = await notifier.status("enr-1", "radiologist", "waiting", "waiting_identity")
    assert waiting.reason == TEXTS["waiting_identity"]
    await notifier.identity(enrolled)
    await notifier.status("enr-1", "radiologist", "waiting", "waiting_available_study")
    await notifier.study("enr-1", "retrieving", 2)
    await notifier.study("enr-1", "available", 3)
    sent_radio = await notifier.status("enr-1", "radiologist", "sent")
    await notifier.status("enr-1", "nuclear_physician", "sent")
    assert sent_radio.meeting_id == "m-1"
    assert notifier.statuses("enr-1", "radiologist") == ["waiting", "pending", "sent"]

    [to_radio] = received_by(radiologist)
    [to_nuclear] = received_by(nuclear)
    for received in (to_radio, to_nuclear):
        assert received.envelope["mail_from"] == "proxymage+noreply@3c-fictif.mssante.test"
        assert received.envelope["client_cert"]["subject"] == "O=Proxymage test,CN=proxymage-notifier.test"
        assert received.envelope["tls_version"] in ("TLSv1.2", "TLSv1.3")
        message = received.message
        assert message["Subject"] == f"Demande d'expertise – {title} du 22/03/2030"
        assert "BARBE" not in message["Subject"].upper()
        assert message["Reply-To"] == "3C fictif <3c@3c-fictif.mssante.test>"
        assert message["From"] == "Proxymage FICTIF <proxymage+noreply@3c-fictif.mssante.test>"
        assert message.get_content_type() == "multipart/alternative"
        headers = received.raw.split(b"\r\n\r\n", 1)[0]
        assert b"=?utf-8?" in headers  # the non-ASCII subject is RFC 2047 encoded (no SMTPUTF8 needed)
        assert all(byte < 128 for byte in received.raw)  # 7-bit clean on the wire
    # Message-IDs derive from the notification key (enrolment, role, address).
    assert to_radio.message["Message-ID"] == message_id(
        notification_key("enr-1", "radiologist", radiologist), "3c-fictif.mssante.test"
    )
    assert to_nuclear.message["Message-ID"] == message_id(
        notification_key("enr-1", "nuclear_physician", nuclear), "3c-fictif.mssante.test"
    )
    assert to_radio.message["To"].addresses[0].addr_spec == radiologist

    text = _text(to_radio, "plain")
    assert text.startswith("Dr Jeanne RADIO-EXEMPLE,\n")  # the title is not doubled
    assert (
        "Le dossier de Mme Hélène BARBE-FICTIF, a été inscrit par Dr Paul DEMANDEUR-FICTIF (médecin demandeur) "
        f"en réunion de concertation pluridisciplinaire en cancérologie : {title}, le 22/03/2030." in text
    )
    assert "Des examens sont disponibles dans le DCC (Dossier Communicant de Cancérologie) pour expertise" in text
    assert f"Si vous n'avez pas d'accès au DCC, rendez-vous sur {REGISTRATION_URL}." in text
    assert text.rstrip().endswith("Cordialement,\n3C du CHU fictif")
    assert _text(to_nuclear, "plain").startswith("Dr Marc NUCLEAIRE-EXEMPLE,\n")

    html = _text(to_radio, "html")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in html
    assert "Mme Hélène BARBE-FICTIF" in html
    assert 'href="https://dcc.fictif.test/inscription?source=proxymage&amp;x=1"' in html


async def test_patient_not_found_gets_no_email_whatever_else_arrives(notifier: Harness) -> None:
    radiologist = notifier.address("radio.nontrouve")
    nuclear = notifier.address("nucleaire.nontrouve")
    await notifier.meeting(
        "m-a", radiologist=("Dr Jeanne NONTROUVE-EXEMPLE", radiologist), nuclear_physician=("Dr Marc X", nuclear)
    )
    # The first enrolled event was matched, but the corrected one (newer) finds nobody; a study shows up as
    # available all the same (adversarial: a stale status), and the selection requests expertise.
    start = _now()
    first = await notifier.enrol("enr-a", "m-a", occurred_at=start - dt.timedelta(minutes=5))
    corrected = await notifier.enrol("enr-a", "m-a", first_name="Anaïs", occurred_at=start)
    await notifier.identity(first)
    await notifier.identity(corrected, "unmatched")
    await notifier.study("enr-a", "available", 3)
    await notifier.select("enr-a")
    waiting = await notifier.status("enr-a", "radiologist", "waiting", "patient_not_found")
    await notifier.status("enr-a", "nuclear_physician", "waiting", "patient_not_found")
    assert waiting.reason == TEXTS["patient_not_found"]
    await _sentinel(notifier, "apres-nontrouve")
    assert received_by(radiologist) == []
    assert received_by(nuclear) == []
    assert notifier.statuses("enr-a", "radiologist") == ["waiting"]
    assert notifier.last("enr-a", "radiologist").reason_code == "patient_not_found"


async def test_withdrawal_before_sending_cancels_and_a_consent_withdrawal_too(notifier: Harness) -> None:
    radiologist = notifier.address("radio.annule")
    await notifier.meeting("m-c", radiologist=("Dr Jeanne ANNULE-EXEMPLE", radiologist))
    enrolled = await notifier.enrol("enr-c", "m-c")
    await notifier.select("enr-c")
    await notifier.identity(enrolled)
    await notifier.status("enr-c", "radiologist", "waiting", "waiting_available_study")
    await notifier.withdraw("enr-c")
    cancelled = await notifier.status("enr-c", "radiologist", "cancelled", "enrolment_withdrawn")
    assert cancelled.reason == TEXTS["enrolment_withdrawn"]
    # The study becomes available afterwards, and an older enrolled event arrives late: nothing re-opens.
    await notifier.study("enr-c", "available", 3)
    await notifier.enrol("enr-c", "m-c", occurred_at=_now() - dt.timedelta(hours=1))

    # Consent withdrawn (a newer enrolled event with consent: false) before the e-mail could go.
    other = notifier.address("radio.sansconsentement")
    await notifier.meeting("m-c2", radiologist=("Dr Léa CONSENT-EXEMPLE", other))
    given = await notifier.enrol("enr-c2", "m-c2")
    await notifier.select("enr-c2")
    await notifier.identity(given)
    await notifier.status("enr-c2", "radiologist", "waiting", "waiting_available_study")
    refused = await notifier.enrol("enr-c2", "m-c2", consent=False)
    await notifier.identity(refused, "no_consent")
    await notifier.status("enr-c2", "radiologist", "cancelled", "consent_withdrawn")
    await notifier.study("enr-c2", "available", 3)

    await _sentinel(notifier, "apres-annulation")
    assert received_by(radiologist) == []
    assert received_by(other) == []
    assert notifier.last("enr-c", "radiologist").status == "cancelled"
    assert notifier.last("enr-c2", "radiologist").status == "cancelled"

    # A later enrolled event with consent re-opens the enrolment from scratch: identity again, then sent.
    again = await notifier.enrol("enr-c2", "m-c2")
    await notifier.status("enr-c2", "radiologist", "waiting", "waiting_identity")
    await notifier.identity(again)
    await notifier.status("enr-c2", "radiologist", "sent")
    assert len(await notifier.mail(other)) == 1


@dataclass
class WithdrawingSender:
    """The real SMTP sender, but the DCC withdraws the enrolment while its notification is claimed (the
    withdrawal is recorded by the service before the SMTP transaction starts)."""

    real: Sender
    notifier: Harness
    store: NotifierStore
    target: str
    claimed: list[str] = field(default_factory=list)

    async def send(self, message: EmailMessage, *, sender: str, recipient: str, proceed: Any = None) -> bool:
        if recipient == self.target:
            self.claimed.append(recipient)
            await self.notifier.withdraw("enr-w")

            async def recorded() -> bool:
                facts = await self.store.get_facts("enr-w")
                return facts is not None and facts.withdrawal is not None

            await eventually(recorded, 30, "the withdrawal to be recorded")
        return await self.real.send(message, sender=sender, recipient=recipient, proceed=proceed)


async def test_withdrawal_while_the_email_is_claimed_stops_it(notifier: Harness) -> None:
    radiologist = notifier.address("radio.encours")
    client = create_mongo_client(notifier.settings.mongo_url.get_secret_value())
    try:
        wrapper = WithdrawingSender(
            SmtpSender(notifier.settings.smtp),
            notifier,
            NotifierStore(client[notifier.settings.database_name()]),
            radiologist,
        )
        await notifier.halt()
        await notifier.start(sender=wrapper)
        await notifier.meeting("m-w", radiologist=("Dr Jeanne ENCOURS-EXEMPLE", radiologist))
        enrolled = await notifier.enrol("enr-w", "m-w")
        await notifier.select("enr-w")
        await notifier.ready(enrolled)
        await notifier.status("enr-w", "radiologist", "cancelled", "enrolment_withdrawn")
        await _sentinel(notifier, "apres-encours")
    finally:
        await client.close()
    assert wrapper.claimed == [radiologist]  # it was claimed and handed to the sender...
    assert received_by(radiologist) == []  # ...which did not start the mail transaction
    assert notifier.last("enr-w", "radiologist").status == "cancelled"


async def test_meeting_date_in_the_past_is_not_sent(notifier: Harness) -> None:
    radiologist = notifier.address("radio.passe")
    yesterday = dt.datetime.now(ZoneInfo("Europe/Paris")).date() - dt.timedelta(days=1)
    await notifier.meeting("m-d", radiologist=("Dr Jeanne PASSE-EXEMPLE", radiologist), date=yesterday)
    enrolled = await notifier.enrol("enr-d", "m-d", date=yesterday)
    await notifier.select("enr-d")
    await notifier.ready(enrolled)
    not_sent = await notifier.status("enr-d", "radiologist", "not_sent", "meeting_passed")
    assert not_sent.reason == TEXTS["meeting_passed"]
    await _sentinel(notifier, "apres-passe")
    assert received_by(radiologist) == []
    # Possibly `waiting` first (the selection may be consumed before the enrolment), never `pending`.
    assert notifier.statuses("enr-d", "radiologist")[-1] == "not_sent"
    assert not {"pending", "sent"} & set(notifier.statuses("enr-d", "radiologist"))


async def test_replays_and_a_restart_send_nothing_twice(notifier: Harness) -> None:
    radiologist = notifier.address("radio.replay")
    await notifier.meeting("m-2", radiologist=("Dr Anne REPLAY-EXEMPLE", radiologist))
    enrolled = await notifier.enrol("enr-2", "m-2", birth_name="ESSAI-EXEMPLE", first_name="Anaïs")
    selection = {"event_id": str(uuid.uuid4()), "occurred_at": _now().isoformat(), "enrolment_id": "enr-2",
                 "study_instance_uids": [STUDY_UID], "expertise_requested": True}  # fmt: skip
    await notifier.select("enr-2", event=selection)
    await notifier.ready(enrolled)
    await notifier.status("enr-2", "radiologist", "sent")
    await notifier.halt()
    # Delivered again while the service is down, then once more after restart (the same events, and a new
    # selection requesting expertise again), plus the meeting's experts, the enrolment and its outcomes again.
    await notifier.select("enr-2", event=selection)
    await notifier.start()
    await notifier.select("enr-2", event=selection)
    await notifier.select("enr-2")
    await notifier.meeting("m-2", radiologist=("Dr Anne REPLAY-EXEMPLE", radiologist))
    await notifier._send(topics.PATIENT_ENROLLED, "enr-2", enrolled)
    await notifier.ready(enrolled)
    await _sentinel(notifier, "replay")
    assert len(received_by(radiologist)) == 1
    assert notifier.statuses("enr-2", "radiologist")[-2:] == ["pending", "sent"]
    assert notifier.statuses("enr-2", "radiologist").count("sent") == 1


async def test_selection_before_experts_and_enrolment_waits_then_sends(notifier: Harness) -> None:
    radiologist = notifier.address("radio.late")
    await notifier.select("enr-3")
    waiting = await notifier.status("enr-3", "radiologist", "waiting", "waiting_enrolment")
    assert waiting.reason == TEXTS["waiting_enrolment"]
    enrolled = await notifier.enrol("enr-3", "m-3", birth_name="DOSSIER-ESSAI", first_name="Camille", sex="U")
    await notifier.status("enr-3", "radiologist", "waiting", "waiting_meeting")
    await notifier.ready(enrolled)
    assert received_by(radiologist) == []
    await notifier.meeting("m-3", radiologist=("Dr Léa TARDIVE-EXEMPLE", radiologist), nuclear_physician=None)
    await notifier.status("enr-3", "radiologist", "sent")
    skipped = await notifier.status("enr-3", "nuclear_physician", "skipped", "no_expert")
    assert skipped.reason == TEXTS["no_expert"]
    [message] = await notifier.mail(radiologist)
    # Sex U: no civility at all.
    assert "Le dossier de Camille DOSSIER-ESSAI, a été inscrit" in _text(message, "plain")

    # A new on-call radiologist after the e-mail went out gets one too; the first one gets nothing more.
    replacement = notifier.address("radio.nouveau")
    await notifier.meeting("m-3", radiologist=("Dr Noé NOUVEAU-EXEMPLE", replacement))
    await notifier.mail(replacement)

    async def sent_twice() -> bool:
        return [o.status for o in notifier.of("enr-3", "radiologist")].count("sent") == 2

    await eventually(sent_twice, 30, "the new radiologist's notification to be sent")
    assert len(received_by(radiologist)) == 1


async def test_a_changed_expert_before_sending_gets_it_instead(notifier: Harness) -> None:
    # The first radiologist's relay keeps deferring (451), so the e-mail is still pending when the DCC
    # names another on-call radiologist.
    first = f"defer-{notifier.unique}+premier@chu-fictif.mssante.test"
    second = notifier.address("radio.second")
    at = _now()
    with scripted_rcpt({"match": f"defer-{notifier.unique}", "always": "451 4.3.0 try later"}):
        await notifier.meeting("m-4", radiologist=("Dr Ana PREMIER-EXEMPLE", first), occurred_at=at)
        enrolled = await notifier.enrol("enr-4", "m-4")
        await notifier.select("enr-4")
        await notifier.ready(enrolled)

        async def deferred() -> bool:
            return any(o.reason and "451" in o.reason for o in notifier.of("enr-4", "radiologist"))

        await eventually(deferred, 30, "the first radiologist's e-mail to be deferred")
        assert notifier.last("enr-4", "radiologist").reason_code == "send_retrying"
        await notifier.meeting("m-4", radiologist=("Dr Ben SECOND-EXEMPLE", second), occurred_at=at + dt.timedelta(1))
        # An older event arriving late does not bring the first radiologist back.
        await notifier.meeting("m-4", radiologist=("Dr Ana PREMIER-EXEMPLE", first), occurred_at=at - dt.timedelta(1))
        await notifier.status("enr-4", "radiologist", "sent")
        [message] = await notifier.mail(second)
    assert _text(message, "plain").startswith("Dr Ben SECOND-EXEMPLE,")
    assert received_by(first) == []
    assert notifier.statuses("enr-4", "radiologist")[-2:] == ["pending", "sent"]
    # Stays so: the first radiologist's notification was skipped, not retried in the background.
    await _sentinel(notifier, "apres-changement")
    assert notifier.statuses("enr-4", "radiologist")[-2:] == ["pending", "sent"]
    assert notifier.statuses("enr-4", "radiologist").count("sent") == 1


async def test_client_without_certificate_is_refused_and_the_notifier_never_sends_in_clear(
    notifier: Harness,
) -> None:
    # The server itself: no certificate, or one from another CA -> the TLS handshake is refused.
    probe = notifier.address("probe.nocert")
    for certificate in (None, "rogue-client"):
        context = ssl.create_default_context(cafile=str(CERTS / "ca.pem"))
        if certificate:
            context.load_cert_chain(str(CERTS / f"{certificate}.pem"), str(CERTS / f"{certificate}.key"))
        with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError)) as refused:
            async with aiosmtplib.SMTP(
                hostname=notifier.settings.smtp.host,
                port=notifier.settings.smtp.port,
                start_tls=True,
                tls_context=context,
            ) as client:
                await client.sendmail("probe@3c-fictif.mssante.test", [probe], b"Subject: x\r\n\r\nx\r\n")
        error: BaseException | None = refused.value
        while error is not None and not isinstance(error, ssl.SSLError):
            error = error.__cause__
        assert isinstance(error, ssl.SSLError)

    # The notifier configured without its certificate: reported, not sent, not ready.
    await notifier.halt()
    await notifier.start(smtp=notifier.settings.smtp.model_copy(update={"client_cert_file": None}))
    radiologist = notifier.address("radio.nocert")
    await notifier.meeting("m-5", radiologist=("Dr Eve SANSCERT-EXEMPLE", radiologist))
    enrolled = await notifier.enrol("enr-5", "m-5")
    await notifier.select("enr-5")
    await notifier.ready(enrolled)

    async def reported() -> bool:
        return any(o.reason and "TLS" in o.reason for o in notifier.of("enr-5", "radiologist"))

    await eventually(reported, 30, "a pending outcome naming the TLS failure")
    assert all(o.status in ("waiting", "pending") for o in notifier.of("enr-5", "radiologist"))
    assert notifier.last("enr-5", "radiologist").reason_code == "smtp_configuration"
    readiness = await notifier.readiness()
    assert readiness["checks"]["smtp"] is False
    assert readiness["checks"]["kafka"] is True
    assert received_by(radiologist) == []
    assert received_by(probe) == []

    # Once the certificate is configured again, the same notification goes out, once.
    await notifier.halt()
    await notifier.start()
    await notifier.status("enr-5", "radiologist", "sent")
    await notifier.mail(radiologist)

    async def smtp_ready() -> bool:
        return (await notifier.readiness())["checks"]["smtp"] is True

    await eventually(smtp_ready, 30, "the SMTP readiness probe to pass with the certificate")


async def test_recipient_outside_the_allowed_domains_is_refused(notifier: Harness) -> None:
    outsider = f"radio.externe+{notifier.unique}@hopital-fictif.example.com"
    lookalike = f"radio.piege+{notifier.unique}@mssante.test.example.com"
    await notifier.meeting(
        "m-6", radiologist=("Dr Zoé EXTERNE-EXEMPLE", outsider), nuclear_physician=("Dr Yves PIEGE-EXEMPLE", lookalike)
    )
    enrolled = await notifier.enrol("enr-6", "m-6")
    await notifier.select("enr-6")
    await notifier.ready(enrolled)
    refused = await notifier.status("enr-6", "radiologist", "refused", "recipient_not_allowed")
    await notifier.status("enr-6", "nuclear_physician", "refused")
    assert refused.reason is not None
    assert "hopital-fictif.example.com" in refused.reason
    await _sentinel(notifier, "apres-refus")
    assert received_by(outsider) == []
    assert received_by(lookalike) == []
    assert notifier.statuses("enr-6", "radiologist")[-1] == "refused"


async def test_451_twice_then_accepted_and_550_fails_with_the_reply(notifier: Harness) -> None:
    retried = f"fail451-{notifier.unique}+radio@chu-fictif.mssante.test"
    unknown = f"unknown-{notifier.unique}+nucleaire@chu-fictif.mssante.test"
    rule_451 = {"match": f"fail451-{notifier.unique}", "codes": ["451 4.3.0 try later", "451 4.3.0 try later"]}
    rule_550 = {"match": f"unknown-{notifier.unique}", "always": "550 5.1.1 user unknown"}
    with scripted_rcpt(rule_451), scripted_rcpt(rule_550):
        await notifier.meeting(
            "m-7",
            radiologist=("Dr Rémi RETRY-EXEMPLE", retried),
            nuclear_physician=("Dr Ugo INCONNU-EXEMPLE", unknown),
        )
        enrolled = await notifier.enrol("enr-7", "m-7")
        await notifier.select("enr-7")
        await notifier.ready(enrolled)
        await notifier.status("enr-7", "radiologist", "sent")
        failed = await notifier.status("enr-7", "nuclear_physician", "failed", "send_failed")
    assert failed.reason is not None
    assert "550 5.1.1 user unknown" in failed.reason
    retries = [o for o in notifier.of("enr-7", "radiologist") if o.reason_code == "send_retrying"]
    assert len(retries) >= 2
    assert all("451 4.3.0 try later" in (o.reason or "") for o in retries)
    assert len(received_by(retried)) == 1
    assert received_by(unknown) == []
    assert notifier.statuses("enr-7", "nuclear_physician")[-2:] == ["pending", "failed"]
