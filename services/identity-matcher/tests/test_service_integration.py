"""The identity-matcher end to end, against real Kafka, FerretDB and the MIRC Orthanc seeded with the
synthetic patients (proxymage_dev.synthetic): enrolments and withdrawals in on Kafka, outcomes
out on Kafka. What MIRC received is read from the service's own DICOM request counter (/metrics)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from identity_matcher.app import build
from identity_matcher.settings import Settings
from prometheus_client.parser import text_string_to_metric_families
from proxymage_dev.pytest_plugin import free_port, orthanc
from proxymage_dev.synthetic import PATIENTS, SyntheticStudy
from proxymage_dev.testing import consuming, eventually, stop_in_order
from proxymage_shared import reasons, topics
from proxymage_shared.events import EnrolmentWithdrawn, IdentityResolved, Patient, PatientEnrolled, Person
from proxymage_shared.kafka import DLQ_KIND, DLQ_REASON
from proxymage_shared.logging import configure_logging
from proxymage_shared.service import run_service
from proxymage_shared.settings import load_settings


@dataclass
class Matcher:
    settings: Settings
    port: int
    producer: AIOKafkaProducer
    outcomes: list[IdentityResolved] = field(default_factory=list)

    async def send(self, event: PatientEnrolled | bytes, key: str = "") -> None:
        value = event if isinstance(event, bytes) else event.to_kafka_value()
        key = key or (event.enrolment_id if isinstance(event, PatientEnrolled) else "raw")
        await self.producer.send_and_wait(self.settings.topic(topics.PATIENT_ENROLLED), value, key=key.encode())

    async def refresh(self, enrolment_id: str) -> None:
        value = json.dumps(
            {"event_id": str(uuid.uuid4()), "occurred_at": _now().isoformat(), "enrolment_id": enrolment_id}
        ).encode()
        await self.producer.send_and_wait(self.settings.topic(topics.IMAGING_REFRESH), value, key=enrolment_id.encode())

    async def withdraw(self, enrolment_id: str, occurred_at: dt.datetime | None = None) -> EnrolmentWithdrawn:
        event = EnrolmentWithdrawn(
            event_id=uuid.uuid4(),
            occurred_at=occurred_at or _now(),
            enrolment_id=enrolment_id,
            reason="patient retiré de la réunion (essai)",
        )
        await self.resend(event)
        return event

    async def resend(self, event: EnrolmentWithdrawn) -> None:
        topic = self.settings.topic(topics.ENROLMENT_WITHDRAWN)
        await self.producer.send_and_wait(topic, event.to_kafka_value(), key=event.enrolment_id.encode())

    def of(self, enrolment_id: str) -> list[IdentityResolved]:
        return [outcome for outcome in self.outcomes if outcome.enrolment_id == enrolment_id]

    async def outcome(self, enrolment_id: str, count: int = 1, timeout: float = 30) -> IdentityResolved:
        async def arrived() -> bool:
            return len(self.of(enrolment_id)) >= count

        await eventually(arrived, timeout, f"{count} outcome(s) for {enrolment_id}")
        return self.of(enrolment_id)[count - 1]

    async def mirc_finds(self) -> float:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)).text
        pattern = r'proxymage_dicom_requests_total\{operation="C-FIND",outcome="(\w+)",peer="MIRC"\} ([0-9.e+]+)'
        return sum(float(value) for _, value in re.findall(pattern, text))

    async def handled(self, topic: str) -> float:
        """Messages of `topic` (unprefixed) the service finished handling: a handler's effects are all done."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "proxymage_events_handled"
            for sample in family.samples
            if sample.name == "proxymage_events_handled_total"
            and sample.labels.get("topic") == self.settings.topic(topic)
            and sample.labels.get("outcome") == "ok"
        )

    async def handled_past(self, topic: str, count: float, timeout: float = 30) -> None:
        async def done() -> bool:
            return await self.handled(topic) > count

        await eventually(done, timeout, f"the service to handle a new message of {topic}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def enrolment(
    enrolment_id: str,
    birth_name: str,
    first_name: str,
    birth_date: dt.date,
    sex: str,
    *,
    used_name: str | None = None,
    consent: bool = True,
    occurred_at: dt.datetime | None = None,
) -> PatientEnrolled:
    return PatientEnrolled.model_validate(
        {
            "event_id": uuid.uuid4(),
            "occurred_at": occurred_at or _now(),
            "enrolment_id": enrolment_id,
            "meeting_id": "m-2026-12-02-orl",
            "rcp_id": "rcp-orl-fictif",
            "meeting_title": "RCP ORL fictive",
            "meeting_date": dt.date(2026, 12, 2),
            "centre": "3C fictif",
            "patient": Patient(
                birth_name=birth_name, used_name=used_name, first_name=first_name, birth_date=birth_date, sex=sex
            ),
            "consent": consent,
            "requested_by": Person(name="Dr Paul FICTIF"),
        },
        strict=False,
    )


# Every name and birth date the synthetic PACS holds or the tests enrol: none may appear in the logs.
SENSITIVE = sorted(
    {part for p in PATIENTS for part in re.split(r"[\^ ]", p.patient_name) if len(part) > 3}
    | {p.birth_date for p in PATIENTS}
    | {f"{p.birth_date[:4]}-{p.birth_date[4:6]}-{p.birth_date[6:]}" for p in PATIENTS}
)


@pytest.fixture
async def matcher(
    stack_env: dict[str, str], seeded_studies: list[SyntheticStudy], unique: str, tmp_path: Path
) -> AsyncIterator[Matcher]:
    settings = load_settings(
        Settings,
        topic_prefix=f"it-{unique}.",
        mongo_database=f"it_identity_{unique}",
        health_port=free_port(),
        pacs_attempts=2,
        pacs_retry_base_seconds=0.1,
        error_retry_delays_seconds=(1.0,),
        error_retry_poll_seconds=0.2,
    )
    log_path = tmp_path / "identity-matcher.log"
    with log_path.open("w") as log_file:
        configure_logging(settings.service_name, "DEBUG", stream=log_file)
        stop = asyncio.Event()
        service = build(settings)
        running = asyncio.create_task(run_service(service, stop))
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
        consumer = AIOKafkaConsumer(
            settings.topic(topics.IDENTITY_RESOLVED),
            bootstrap_servers=settings.kafka_bootstrap_servers,
            auto_offset_reset="earliest",
        )
        harness = Matcher(settings, settings.health_port, producer)

        async def ready() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    answer = await client.get(f"http://127.0.0.1:{harness.port}/readyz", timeout=2)
            except httpx.TransportError:
                return False
            return answer.status_code == 200

        await eventually(ready, 60, "the identity-matcher to be ready")
        await producer.start()
        await consumer.start()
        try:
            async with consuming(
                consumer, lambda record: harness.outcomes.append(IdentityResolved.model_validate_json(record.value))
            ):
                yield harness
        finally:
            await stop_in_order(consumer, producer)
            stop.set()
            await running
            configure_logging(settings.service_name, "INFO")  # away from the file closed next
    logged = log_path.read_text()
    assert '"event": "identity_resolved"' in logged
    leaked = [value for value in SENSITIVE if value.upper() in logged.upper()]
    assert leaked == [], f"patient data in the service's logs: {leaked}"


async def test_matched_with_accent_and_case_variants_links_both_issuers(matcher: Matcher) -> None:
    await matcher.send(enrolment("enr-accents", "beranger-fictif", "HELENE", dt.date(1956, 4, 12), "F"))
    outcome = await matcher.outcome("enr-accents")
    assert outcome.status == "matched"
    assert {(p.patient_id, p.issuer) for p in outcome.pacs_patients} == {
        ("T0001", "CHU-FICTIF-TOURS"),
        ("B0042", "CH-FICTIF-BLOIS"),
    }
    assert outcome.meeting_date == dt.date(2026, 12, 2)
    assert outcome.reason is None
    assert outcome.reason_code is None


async def test_twins_and_homonyms_link_only_the_right_patient(matcher: Matcher) -> None:
    await matcher.send(enrolment("enr-twin", "JUMEAU-ESSAI", "Pierre", dt.date(1980, 1, 15), "M"))
    await matcher.send(enrolment("enr-homonym", "HOMONYME-FICTIF", "Jean", dt.date(1972, 11, 20), "M"))
    twin = await matcher.outcome("enr-twin")
    homonym = await matcher.outcome("enr-homonym")
    assert [(p.patient_id, p.issuer) for p in twin.pacs_patients] == [("T0004", "CHU-FICTIF-TOURS")]
    assert [(p.patient_id, p.issuer) for p in homonym.pacs_patients] == [("B0077", "CH-FICTIF-BLOIS")]


async def test_birth_and_used_names(matcher: Matcher) -> None:
    await matcher.send(
        enrolment("enr-married", "D’EXEMPLE", "Marie-Claire", dt.date(1961, 9, 30), "F", used_name="Lefaux-Exemple")
    )
    married = await matcher.outcome("enr-married")
    assert married.status == "matched"
    assert [p.patient_id for p in married.pacs_patients] == ["T0002"]

    # The used name given as the birth name: never linked, reported so the DCC can be corrected.
    await matcher.send(enrolment("enr-swapped", "LEFAUX-EXEMPLE", "Marie-Claire", dt.date(1961, 9, 30), "F"))
    swapped = await matcher.outcome("enr-swapped")
    assert swapped.status == "unmatched"
    assert swapped.pacs_patients == ()
    assert [(n.trait, n.kind) for n in swapped.near_misses] == [("birth_name", "birth_name_is_used_name")]
    assert swapped.reason_code == "patient_not_found"
    assert swapped.reason == reasons.text("patient_not_found")


async def test_unmatched_with_near_misses(matcher: Matcher) -> None:
    await matcher.send(enrolment("enr-separator", "TESTARD-FICTIF", "Jean Pierre", dt.date(1970, 3, 3), "M"))
    await matcher.send(enrolment("enr-spaces", "DELAFICTION", "Amélie", dt.date(1985, 2, 28), "F"))
    await matcher.send(enrolment("enr-swapped-date", "D'ESSAI", "Noël", dt.date(1945, 12, 25), "M"))
    separator = await matcher.outcome("enr-separator")
    spaces = await matcher.outcome("enr-spaces")
    control = await matcher.outcome("enr-swapped-date")
    assert separator.status == "unmatched"
    assert [(n.trait, n.kind) for n in separator.near_misses] == [("first_name", "separator")]
    assert spaces.status == "unmatched"
    assert [(n.trait, n.kind) for n in spaces.near_misses] == [("birth_name", "apostrophe_or_space_removed")]
    assert control.status == "matched"  # D'ESSAI Noël is stored as such: the apostrophe variant matches
    payload = separator.model_dump_json()
    assert "T0006" not in payload
    assert "TESTARD" not in payload.upper()


async def test_day_and_month_swapped_is_a_near_miss(matcher: Matcher) -> None:
    # Stored birth date 1961-09-30 cannot be swapped (30 > 12); the twins' 1980-01-15 neither. Use 1970-03-03?
    # No: equal day and month. The ligature patient is 1990-07-14 -> 1990-14-07 invalid. So enrol Béranger with
    # 1956-12-04 (the PACS has 1956-04-12): a swapped date, found by the vigilance query.
    await matcher.send(enrolment("enr-date", "BÉRANGER-FICTIF", "Hélène", dt.date(1956, 12, 4), "F"))
    outcome = await matcher.outcome("enr-date")
    assert outcome.status == "unmatched"
    assert ("birth_date", "day_month_swapped") in {(n.trait, n.kind) for n in outcome.near_misses}


async def test_no_consent_sends_no_dicom_request(matcher: Matcher) -> None:
    before = await matcher.mirc_finds()
    await matcher.send(
        enrolment("enr-no-consent", "BÉRANGER-FICTIF", "Hélène", dt.date(1956, 4, 12), "F", consent=False)
    )
    outcome = await matcher.outcome("enr-no-consent")
    assert outcome.status == "no_consent"
    assert outcome.pacs_patients == ()
    assert (outcome.reason_code, outcome.reason) == ("no_consent", reasons.text("no_consent"))
    assert await matcher.mirc_finds() == before
    await matcher.send(enrolment("enr-after", "SŒUR-EXEMPLE", "Anaïs", dt.date(1990, 7, 14), "F"))
    ligature = await matcher.outcome("enr-after")
    assert ligature.status == "matched"
    assert await matcher.mirc_finds() > before  # the counter does count real queries


async def test_corrected_identity_supersedes_and_stale_events_are_ignored(matcher: Matcher) -> None:
    first_at = _now()
    wrong = enrolment("enr-fix", "DATEFAUSSE-ESSAI", "Lucas", dt.date(1956, 2, 28), "M", occurred_at=first_at)
    await matcher.send(wrong)
    assert (await matcher.outcome("enr-fix")).status == "unmatched"
    fixed = enrolment(
        "enr-fix", "D'ESSAI", "Noël", dt.date(1945, 12, 25), "M", occurred_at=first_at + dt.timedelta(seconds=5)
    )
    await matcher.send(fixed)
    second = await matcher.outcome("enr-fix", count=2)
    assert second.status == "matched"
    assert second.source_event_id == fixed.event_id
    assert second.source_occurred_at == fixed.occurred_at
    # An older event arriving late, then the same event again: neither produces an outcome.
    late = enrolment("enr-fix", "X-FICTIF", "Y", dt.date(1950, 1, 1), "M", occurred_at=first_at - dt.timedelta(1))
    await matcher.send(late)
    await matcher.send(fixed)
    await matcher.send(enrolment("enr-fix-sentinel", "D'ESSAI", "Noël", dt.date(1945, 12, 25), "M"), key="enr-fix")
    await matcher.outcome("enr-fix-sentinel")
    assert len(matcher.of("enr-fix")) == 2


async def test_duplicate_event_gives_one_outcome(matcher: Matcher) -> None:
    event = enrolment("enr-dup", "SŒUR-EXEMPLE", "Anaïs", dt.date(1990, 7, 14), "F")
    for _ in range(3):
        await matcher.send(event)
    await matcher.send(enrolment("enr-dup-sentinel", "SŒUR-EXEMPLE", "Anaïs", dt.date(1990, 7, 14), "F"), "enr-dup")
    await matcher.outcome("enr-dup-sentinel")
    assert [o.status for o in matcher.of("enr-dup")] == ["matched"]


async def test_malformed_event_goes_to_the_dlq_and_the_next_is_handled(matcher: Matcher) -> None:
    await matcher.send(b'{"event_id": "nope", "patient": {"birth_name": "SECRET-FICTIF"}}', key="enr-bad")
    await matcher.send(enrolment("enr-after-bad", "D'ESSAI", "Noël", dt.date(1945, 12, 25), "M"), key="enr-bad")
    await matcher.outcome("enr-after-bad")
    consumer = AIOKafkaConsumer(
        matcher.settings.topic(topics.dead_letter_topic(topics.PATIENT_ENROLLED)),
        bootstrap_servers=matcher.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record: Any = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    headers = {name: value.decode() for name, value in record.headers}
    assert headers[DLQ_KIND] == "invalid_event"
    assert "event_id" in headers[DLQ_REASON]
    assert "SECRET" not in headers[DLQ_REASON]


async def test_mirc_down_gives_error_then_matched_without_anyone_acting(matcher: Matcher) -> None:
    orthanc("stop", "mirc")
    try:
        await matcher.send(enrolment("enr-outage", "JUMEAU-ESSAI", "Paul", dt.date(1980, 1, 15), "M"))
        error = await matcher.outcome("enr-outage")
        assert error.status == "error"
        assert error.reason_code == "identity_error"
        assert error.reason is not None
        assert error.reason.startswith(reasons.text("identity_error") + " (prochain essai automatique le ")
    finally:
        orthanc("start", "mirc")
    recovered = await matcher.outcome("enr-outage", count=2, timeout=60)
    assert recovered.status == "matched"
    assert [p.patient_id for p in recovered.pacs_patients] == ["T0003"]


async def test_refresh_resolves_again_at_once(matcher: Matcher) -> None:
    await matcher.send(enrolment("enr-refresh", "HOMONYME-FICTIF", "Jean", dt.date(1950, 5, 5), "M"))
    first = await matcher.outcome("enr-refresh")
    await matcher.refresh("enr-refresh")
    second = await matcher.outcome("enr-refresh", count=2)
    assert first.status == second.status == "matched"
    assert second.event_id != first.event_id


async def test_unusable_dcc_identity_is_invalid_identity_without_any_dicom_request(matcher: Matcher) -> None:
    before = await matcher.mirc_finds()
    await matcher.send(enrolment("enr-sex-unknown", "BÉRANGER-FICTIF", "Hélène", dt.date(1956, 4, 12), "U"))
    outcome = await matcher.outcome("enr-sex-unknown")
    assert outcome.status == "unmatched"
    assert outcome.reason_code == "invalid_identity"
    assert outcome.reason == reasons.text("invalid_identity", "sexe inconnu, M ou F requis")
    assert await matcher.mirc_finds() == before


# --- Lifecycle of an enrolment (CONTRACT v1.1) ---------------------------------------------------------------


async def test_withdrawal_after_a_match_publishes_withdrawn_and_mirc_is_never_queried_again(matcher: Matcher) -> None:
    enrolled_at = _now()
    enrolled = enrolment("enr-wd-match", "SŒUR-EXEMPLE", "Anaïs", dt.date(1990, 7, 14), "F", occurred_at=enrolled_at)
    await matcher.send(enrolled)
    matched = await matcher.outcome("enr-wd-match")
    assert matched.status == "matched"
    assert matched.source_occurred_at == enrolled.occurred_at
    finds = await matcher.mirc_finds()

    withdrawal = await matcher.withdraw("enr-wd-match", occurred_at=enrolled_at + dt.timedelta(seconds=5))
    withdrawn = await matcher.outcome("enr-wd-match", count=2)
    assert withdrawn.status == "withdrawn"
    assert withdrawn.source_event_id == withdrawal.event_id
    assert withdrawn.source_occurred_at == withdrawal.occurred_at
    assert (withdrawn.meeting_id, withdrawn.meeting_date) == (enrolled.meeting_id, enrolled.meeting_date)
    assert withdrawn.pacs_patients == ()
    assert (withdrawn.reason_code, withdrawn.reason) == ("enrolment_withdrawn", reasons.text("enrolment_withdrawn"))
    assert withdrawn.event_id != matched.event_id

    # A refresh of a withdrawn enrolment queries nothing; the withdrawal replayed gives no second outcome.
    refreshes = await matcher.handled(topics.IMAGING_REFRESH)
    await matcher.refresh("enr-wd-match")
    await matcher.handled_past(topics.IMAGING_REFRESH, refreshes)
    withdrawals = await matcher.handled(topics.ENROLMENT_WITHDRAWN)
    await matcher.resend(withdrawal)
    await matcher.handled_past(topics.ENROLMENT_WITHDRAWN, withdrawals)
    assert await matcher.mirc_finds() == finds
    assert [o.status for o in matcher.of("enr-wd-match")] == ["matched", "withdrawn"]


async def test_withdrawal_first_then_an_older_enrolment_gives_only_withdrawn_and_no_dicom_request(
    matcher: Matcher,
) -> None:
    enrolled_at = _now()
    finds = await matcher.mirc_finds()
    withdrawal = await matcher.withdraw("enr-wd-first", occurred_at=enrolled_at + dt.timedelta(seconds=10))
    withdrawn = await matcher.outcome("enr-wd-first")
    assert withdrawn.status == "withdrawn"
    assert withdrawn.source_event_id == withdrawal.event_id
    assert (withdrawn.meeting_id, withdrawn.meeting_date) == (None, None)  # no enrolled event seen yet

    enrolments = await matcher.handled(topics.PATIENT_ENROLLED)
    await matcher.send(
        enrolment("enr-wd-first", "SŒUR-EXEMPLE", "Anaïs", dt.date(1990, 7, 14), "F", occurred_at=enrolled_at)
    )
    await matcher.handled_past(topics.PATIENT_ENROLLED, enrolments)
    assert [o.status for o in matcher.of("enr-wd-first")] == ["withdrawn"]
    assert await matcher.mirc_finds() == finds


async def test_a_newer_enrolment_re_opens_a_withdrawn_one(matcher: Matcher) -> None:
    enrolled_at = _now()
    await matcher.send(
        enrolment("enr-reopen", "JUMEAU-ESSAI", "Pierre", dt.date(1980, 1, 15), "M", occurred_at=enrolled_at)
    )
    assert (await matcher.outcome("enr-reopen")).status == "matched"
    await matcher.withdraw("enr-reopen", occurred_at=enrolled_at + dt.timedelta(seconds=5))
    assert (await matcher.outcome("enr-reopen", count=2)).status == "withdrawn"
    finds = await matcher.mirc_finds()

    reopened = enrolment(
        "enr-reopen",
        "JUMEAU-ESSAI",
        "Pierre",
        dt.date(1980, 1, 15),
        "M",
        occurred_at=enrolled_at + dt.timedelta(seconds=10),
    )
    await matcher.send(reopened)
    matched = await matcher.outcome("enr-reopen", count=3)
    assert matched.status == "matched"
    assert matched.source_event_id == reopened.event_id
    assert matched.source_occurred_at == reopened.occurred_at
    assert [(p.patient_id, p.issuer) for p in matched.pacs_patients] == [("T0004", "CHU-FICTIF-TOURS")]
    assert await matcher.mirc_finds() > finds  # resolved from scratch: MIRC queried again


async def test_consent_withdrawn_by_a_newer_enrolment_gives_no_consent_and_no_dicom_request(matcher: Matcher) -> None:
    enrolled_at = _now()
    await matcher.send(
        enrolment("enr-consent", "HOMONYME-FICTIF", "Jean", dt.date(1950, 5, 5), "M", occurred_at=enrolled_at)
    )
    assert (await matcher.outcome("enr-consent")).status == "matched"
    finds = await matcher.mirc_finds()

    without_consent = enrolment(
        "enr-consent",
        "HOMONYME-FICTIF",
        "Jean",
        dt.date(1950, 5, 5),
        "M",
        consent=False,
        occurred_at=enrolled_at + dt.timedelta(seconds=5),
    )
    await matcher.send(without_consent)
    no_consent = await matcher.outcome("enr-consent", count=2)
    assert no_consent.status == "no_consent"
    assert no_consent.source_event_id == without_consent.event_id
    assert no_consent.pacs_patients == ()
    assert no_consent.reason_code == "no_consent"
    # Nor does a refresh query MIRC for it.
    refreshes = await matcher.handled(topics.IMAGING_REFRESH)
    await matcher.refresh("enr-consent")
    await matcher.handled_past(topics.IMAGING_REFRESH, refreshes)
    assert await matcher.mirc_finds() == finds
    assert len(matcher.of("enr-consent")) == 2
