"""`python -m proxymage_dev.bench.identity_matcher`: the identity-matcher's figures for `make bench`.

1. Strict comparisons per second of the pure rules, one process, on a generated population
   (target: >= 100 000/s). Measured as the service works: each side normalised once per query
   (`prepare_*`), then one decision per (DCC identity, candidate) pair.
2. Enrolment -> `identity.resolved` latency (p50/p95) through real Kafka, FerretDB and the MIRC Orthanc,
   with enrolments published at 20 per second (the local stack must be up: `make up`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from identity_matcher.app import build
from identity_matcher.rules import DccIdentity, candidate_from_record, decide_prepared, prepare_candidate, prepare_dcc
from identity_matcher.settings import Settings
from proxymage_dev.bench.gateway import delete_topics
from proxymage_dev.seed_pacs import store_studies
from proxymage_dev.synthetic import PATIENTS, synthetic_studies
from proxymage_shared import topics
from proxymage_shared.dicom import PatientRecord
from proxymage_shared.events import IdentityResolved, Patient, PatientEnrolled, Person
from proxymage_shared.kafka import ensure_topics
from proxymage_shared.logging import configure_logging
from proxymage_shared.service import run_service
from proxymage_shared.settings import load_settings
from proxymage_shared.topics import topic_specs

SYLLABLES = ("BA", "BÉ", "CO", "DU", "FI", "GA", "LÉ", "MA", "NO", "RI", "SA", "TI", "VO", "ZE", "'", "-")
FIRST_NAMES = ("Hélène", "Jean-Pierre", "Zoé", "Noël", "Anaïs", "Luc", "Marie Claire", "Amélie", "Paul")


def _name(rng: random.Random) -> str:
    text = "".join(rng.choice(SYLLABLES) for _ in range(rng.randrange(2, 5))).strip("'-")
    return text or "FICTIF"


def comparisons_per_second(population: int = 20_000, identities: int = 20, seed: int = 7) -> float:
    """Candidates are generated so that most share the DCC birth date (what a birth-date query returns)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    birth_date = dt.date(1956, 4, 12)
    records = [
        PatientRecord(
            patient_id=f"P{index:06d}",
            issuer="CHU-FICTIF",
            patient_name=f"{_name(rng)}^{rng.choice(FIRST_NAMES)}",
            birth_name=f"{_name(rng)}^{rng.choice(FIRST_NAMES)}" if rng.random() < 0.2 else None,
            birth_date_raw=birth_date.strftime("%Y%m%d"),
            birth_date=birth_date if rng.random() < 0.9 else birth_date + dt.timedelta(days=rng.randrange(1, 400)),
            sex=rng.choice("MFFO"),
            character_sets=("ISO_IR 100",),
        )
        for index in range(population)
    ]
    dccs = [
        DccIdentity(_name(rng), None, rng.choice(FIRST_NAMES), birth_date, rng.choice("MF")) for _ in range(identities)
    ]
    started = time.perf_counter()
    prepared_candidates = [prepare_candidate(candidate_from_record(record)) for record in records]
    matches = 0
    for dcc in dccs:
        prepared = prepare_dcc(dcc)
        for candidate in prepared_candidates:
            matches += decide_prepared(prepared, candidate).matched
    elapsed = time.perf_counter() - started
    return population * identities / elapsed


async def latency(rate: float, count: int) -> list[float]:
    suffix = uuid.uuid4().hex[:8]
    settings = load_settings(
        Settings, topic_prefix=f"bench-{suffix}.", mongo_database=f"bench_identity_{suffix}", health_port=0
    )
    await ensure_topics(settings.kafka_bootstrap_servers, topic_specs(6, prefix=settings.topic_prefix))
    store_studies(list(synthetic_studies(42)), settings.mirc, "PM_DEV")
    stop = asyncio.Event()
    service = build(settings)
    running = asyncio.create_task(run_service(service, stop))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        settings.topic(topics.IDENTITY_RESOLVED),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
    )
    await producer.start()
    await consumer.start()
    sent: dict[str, float] = {}
    latencies: list[float] = []

    async def collect(expected: int) -> None:
        async for record in consumer:
            outcome = IdentityResolved.model_validate_json(record.value)
            if outcome.enrolment_id in sent:
                latencies.append(time.perf_counter() - sent.pop(outcome.enrolment_id))
            if len(latencies) >= expected:
                return

    matchable = [p for p in PATIENTS if p.sex in ("M", "F") and p.key != "invalid_birth_date"]

    def enrolment(enrolment_id: str, index: int) -> PatientEnrolled:
        patient = matchable[index % len(matchable)]
        family, given = patient.patient_name.split("^")
        return PatientEnrolled(
            event_id=uuid.uuid4(),
            occurred_at=dt.datetime.now(dt.UTC),
            enrolment_id=enrolment_id,
            meeting_id="m-bench",
            rcp_id="rcp-bench",
            meeting_title="RCP BANC D'ESSAI",
            meeting_date=dt.date.today(),
            centre="3C fictif",
            patient=Patient(
                birth_name=(patient.birth_name or patient.patient_name).split("^")[0],
                used_name=family if patient.birth_name else None,
                first_name=given,
                birth_date=dt.datetime.strptime(patient.birth_date, "%Y%m%d").date(),
                sex="M" if patient.sex == "M" else "F",
            ),
            consent=True,
            requested_by=Person(name="Dr BANC D'ESSAI"),
        )

    async def publish(event: PatientEnrolled) -> None:
        sent[event.enrolment_id] = time.perf_counter()
        await producer.send_and_wait(
            settings.topic(topics.PATIENT_ENROLLED), event.to_kafka_value(), key=event.enrolment_id.encode()
        )

    try:
        # Warm-up, not measured: the consumer group forms and every partition gets a first message.
        warm_up = 24
        collector = asyncio.create_task(collect(warm_up))
        for index in range(warm_up):
            await publish(enrolment(f"warm-{index:03d}", index))
        await asyncio.wait_for(collector, 120)
        latencies.clear()
        collector = asyncio.create_task(collect(count))
        started = time.perf_counter()
        for index in range(count):
            await publish(enrolment(f"bench-{index:05d}", index))
            await asyncio.sleep(max(0.0, (index + 1) / rate - (time.perf_counter() - started)))
        await asyncio.wait_for(collector, 120)
    finally:
        await consumer.stop()
        await producer.stop()
        stop.set()
        await running
        await delete_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="enrolments per second")
    parser.add_argument("--count", type=int, default=200, help="enrolments to publish")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    configure_logging("identity-matcher-bench", "WARNING")

    rate = comparisons_per_second()
    print(f"identity: strict comparisons per second (one process): {rate:,.0f}  (target >= 100,000)")
    if args.skip_latency:
        return
    values = asyncio.run(latency(args.rate, args.count))
    steady = values
    print(
        f"identity: enrolment -> identity.resolved at {args.rate:g}/s over {len(values)} enrolments: "
        f"p50 {statistics.median(steady) * 1000:.0f} ms, p95 {percentile(steady, 0.95) * 1000:.0f} ms, "
        f"max {max(steady) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
