"""Harness of the study-fetcher's integration tests: the service in-process (or several instances) against
the real Kafka, FerretDB and both Orthanc, with its own topic prefix and database; events in and out on Kafka.

Studies used by retrieval tests belong to a patient of their own (FETCH_PATIENT) and get fresh UIDs per test
(a random seed), so tests sharing the stack with others never see each other's studies."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from proxymage_dev.pytest_plugin import ROOT, delete_from_orthanc, free_port, orthanc_rest
from proxymage_dev.seed_pacs import store_studies
from proxymage_dev.synthetic import PATIENTS, SyntheticPatient, SyntheticStudy, synthetic_studies
from proxymage_dev.testing import eventually
from proxymage_shared import topics
from proxymage_shared.events import (
    Event,
    IdentityResolved,
    ImagingCatalogued,
    StudyStatusChanged,
)
from proxymage_shared.kafka import ensure_topics
from proxymage_shared.logging import configure_logging
from proxymage_shared.mongo import create_mongo_client
from proxymage_shared.service import run_service
from proxymage_shared.settings import DicomPeer, load_settings
from proxymage_shared.topics import topic_specs
from study_fetcher.app import build
from study_fetcher.settings import Settings

# The fetcher tests' own PACS patient: no other test lists its studies.
FETCH_PATIENT = SyntheticPatient(
    "fetcher", "owner of the study-fetcher tests' studies", "T9990", "CHU-FICTIF-TOURS", "RAPATRIE-ESSAI^Test",
    None, "20010203", "M", "ISO_IR 100", 1,
)  # fmt: skip

FETCH_OWNER = ("T9990", "CHU-FICTIF-TOURS")

SENSITIVE = sorted(
    {part for p in (*PATIENTS, FETCH_PATIENT) for part in re.split(r"[\^ ]", p.patient_name) if len(part) > 3}
    | {p.birth_date for p in (*PATIENTS, FETCH_PATIENT)}
)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fresh_studies(count: int, seed: int | None = None) -> list[SyntheticStudy]:
    """`count` small studies of FETCH_PATIENT with UIDs no other run uses."""
    patient = dataclasses.replace(FETCH_PATIENT, studies=count)
    return list(synthetic_studies(seed if seed is not None else random.randrange(10**12), (patient,)))


async def store(studies: list[SyntheticStudy], peer: DicomPeer) -> None:
    report = await asyncio.to_thread(store_studies, studies, peer, "PM_DEV")
    assert report.failed == 0


def viewer_instances(stack_env: dict[str, str], study_uid: str) -> int | None:
    found = orthanc_rest(stack_env, "VIEWER", "POST", "/tools/lookup", study_uid.encode())
    ids = [item["ID"] for item in found or () if item.get("Type") == "Study"]
    if not ids:
        return None
    return len(orthanc_rest(stack_env, "VIEWER", "GET", f"/studies/{ids[0]}/instances") or ())


def absent_from_viewer(stack_env: dict[str, str], *studies: SyntheticStudy | str) -> None:
    for study in studies:
        uid = study if isinstance(study, str) else study.study_instance_uid
        delete_from_orthanc(stack_env, "VIEWER", uid)


def event_fields() -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": now().isoformat()}


@dataclass
class Harness:
    """Kafka in and out of one fetcher deployment (one topic prefix, one database; one or more instances)."""

    settings: Settings
    stack_env: dict[str, str]
    producer: AIOKafkaProducer
    statuses: list[StudyStatusChanged] = field(default_factory=list)
    catalogues: list[ImagingCatalogued] = field(default_factory=list)
    mongo: Any = None
    identified: set[str] = field(default_factory=set)  # enrolments an identity outcome was sent for

    async def send(self, topic: str, payload: dict[str, Any] | Event, key: str | None = None) -> None:
        value = payload.to_kafka_value() if isinstance(payload, Event) else json.dumps(payload).encode()
        enrolment = key or (payload.get("enrolment_id") if isinstance(payload, dict) else None)
        enrolment = enrolment or getattr(payload, "enrolment_id", "raw")
        await self.producer.send_and_wait(self.settings.topic(topic), value, key=str(enrolment).encode())

    async def identity(
        self,
        enrolment_id: str,
        patients: list[tuple[str, str | None]],
        meeting_date: dt.date | None = None,
        *,
        status: str = "matched",
        source_occurred_at: dt.datetime | None = None,
    ) -> IdentityResolved:
        event = IdentityResolved.model_validate(
            {
                "event_id": str(uuid.uuid4()),
                "occurred_at": now().isoformat(),
                "enrolment_id": enrolment_id,
                "source_event_id": str(uuid.uuid4()),
                "source_occurred_at": (source_occurred_at or now()).isoformat(),
                "meeting_id": "m-fictif",
                "meeting_date": (meeting_date or (dt.date.today() + dt.timedelta(days=7))).isoformat(),
                "status": status,
                "pacs_patients": [{"patient_id": pid, "issuer": issuer} for pid, issuer in patients],
            },
            strict=False,
        )
        self.identified.add(enrolment_id)
        await self.send(topics.IDENTITY_RESOLVED, event)
        return event

    async def matched(
        self, enrolment_id: str, patients: list[tuple[str, str | None]] | None = None, **kwargs: Any
    ) -> IdentityResolved:
        """The enrolment matched (by default to the fetcher tests' own patient), once its catalogue is recorded
        as the current one: selections sent afterwards are judged against it at once."""
        event = await self.identity(enrolment_id, patients or [FETCH_OWNER], **kwargs)
        enrolments = self.mongo[self.settings.database_name()]["enrolments"]

        async def listed() -> bool:
            doc = await enrolments.find_one({"_id": enrolment_id})
            return doc is not None and doc.get("catalogue_identity") == str(event.event_id)

        await eventually(listed, 30, f"the catalogue of {enrolment_id} recorded")
        return event

    async def select(
        self, enrolment_id: str, uids: list[str], payload: dict[str, Any] | None = None, *, identify: bool = True
    ) -> dict[str, Any]:
        """Publishes a selection; first (unless `identify` is False or an identity was sent already) matches
        the enrolment to the tests' patient, as the identity-matcher would before any real selection."""
        if identify and enrolment_id not in self.identified:
            await self.matched(enrolment_id)
        event = payload or {
            **event_fields(),
            "enrolment_id": enrolment_id,
            "study_instance_uids": uids,
            "expertise_requested": False,
        }
        await self.send(topics.STUDIES_SELECTED, event)
        return event

    async def remove(self, enrolment_id: str, uid: str) -> None:
        await self.send(
            topics.STUDY_REMOVED, {**event_fields(), "enrolment_id": enrolment_id, "study_instance_uid": uid}
        )

    async def refresh(self, enrolment_id: str) -> None:
        await self.send(topics.IMAGING_REFRESH, {**event_fields(), "enrolment_id": enrolment_id})

    def of(self, enrolment_id: str, uid: str) -> list[StudyStatusChanged]:
        return [s for s in self.statuses if s.enrolment_id == enrolment_id and s.study_instance_uid == uid]

    def latest(self, enrolment_id: str, uid: str) -> StudyStatusChanged | None:
        seen = self.of(enrolment_id, uid)
        return max(seen, key=lambda s: s.version) if seen else None

    async def wait_status(
        self,
        enrolment_id: str,
        uid: str,
        status: str,
        timeout: float = 30,
        reason: Callable[[str | None], bool] | None = None,
        after_version: int = 0,
    ) -> StudyStatusChanged:
        def match() -> StudyStatusChanged | None:
            for seen in self.of(enrolment_id, uid):
                if seen.version <= after_version:
                    continue
                if seen.status == status and (reason is None or reason(seen.reason)):
                    return seen
            return None

        async def arrived() -> bool:
            return match() is not None

        await eventually(arrived, timeout, f"{status} for {enrolment_id}/{uid[-12:]}")
        found = match()
        assert found is not None
        return found

    async def catalogue(self, enrolment_id: str, count: int = 1, timeout: float = 30) -> ImagingCatalogued:
        def mine() -> list[ImagingCatalogued]:
            return [c for c in self.catalogues if c.enrolment_id == enrolment_id]

        async def arrived() -> bool:
            return len(mine()) >= count

        await eventually(arrived, timeout, f"{count} catalogue(s) for {enrolment_id}")
        return mine()[count - 1]

    async def transfer(self, uid: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await self.mongo[self.settings.database_name()]["transfers"].find_one({"_id": uid})
        return doc

    async def jobs(self, enrolment_id: str) -> list[dict[str, Any]]:
        cursor = self.mongo[self.settings.database_name()]["jobs"].find({"enrolment_id": enrolment_id})
        return [doc async for doc in cursor]


def fetcher_settings(unique: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "topic_prefix": f"it-{unique}.",
        "mongo_database": f"it_fetcher_{unique}",
        # The deployment's own association budgets: other test sessions on the stack do not take its slots.
        "pacs_budget_database": f"it_fetcher_budget_{unique}",
        "health_port": 0,
        "retry_delays_seconds": (0.5, 1.0),
        "retry_jitter": 0.0,
        "poll_seconds": 0.2,
        "lease_seconds": 5.0,
        "lease_renewal_seconds": 1.0,
        "peer_probe_seconds": 0.5,
        "transfer_wait_seconds": 0.5,
        "republish_after_seconds": 2.0,
        "handler_retry_base_seconds": 0.05,
        "handler_retry_max_seconds": 0.2,
    }
    values.update(overrides)
    return load_settings(Settings, **values)


StartInstance = Callable[..., Awaitable[None]]
Deployment = Callable[..., Awaitable[tuple["Harness", StartInstance]]]


async def started_with(
    deployment: Deployment, mirc: DicomPeer, stack_env: dict[str, str], studies: list[SyntheticStudy]
) -> Harness:
    """A deployment with one fetcher instance running, MIRC holding `studies` and VIEWER none of them."""
    await store(studies, mirc)
    absent_from_viewer(stack_env, *studies)
    harness, start = await deployment()
    await start()
    return harness


@pytest.fixture
async def deployment(
    stack_env: dict[str, str], unique: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[tuple[Harness, StartInstance]]]]:
    """`await deployment(**settings)` -> (harness, start): `start()` runs one more in-process fetcher
    instance of the deployment; the harness collects everything the deployment publishes."""
    log_path = tmp_path / "study-fetcher.log"
    log_file = log_path.open("w")
    configure_logging("study-fetcher", "DEBUG", stream=log_file)
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def create(**overrides: Any) -> tuple[Harness, StartInstance]:
        settings = fetcher_settings(unique, **overrides)
        await ensure_topics(settings.kafka_bootstrap_servers, topic_specs(4, prefix=settings.topic_prefix))
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
        consumer = AIOKafkaConsumer(
            settings.topic(topics.STUDY_STATUS),
            settings.topic(topics.IMAGING_CATALOGUED),
            bootstrap_servers=settings.kafka_bootstrap_servers,
            auto_offset_reset="earliest",
        )
        mongo = create_mongo_client(settings.mongo_url.get_secret_value())
        harness = Harness(settings, stack_env, producer, mongo=mongo)

        async def collect() -> None:
            async for record in consumer:
                if record.topic.endswith(topics.STUDY_STATUS):
                    harness.statuses.append(StudyStatusChanged.model_validate_json(record.value))
                else:
                    harness.catalogues.append(ImagingCatalogued.model_validate_json(record.value))

        await producer.start()
        await consumer.start()
        collector = asyncio.create_task(collect())

        async def close() -> None:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            await consumer.stop()
            await producer.stop()
            await mongo.drop_database(settings.database_name())
            await mongo.drop_database(settings.pacs_budget_database)
            await mongo.close()

        cleanups.append(close)

        async def start(**instance_overrides: Any) -> None:
            instance = fetcher_settings(unique, **{**overrides, **instance_overrides, "health_port": free_port()})
            stop = asyncio.Event()
            task = asyncio.create_task(run_service(build(instance), stop))
            stops.append((stop, task))

            async def ready() -> bool:
                import httpx

                try:
                    async with httpx.AsyncClient(trust_env=False) as client:
                        answer = await client.get(f"http://127.0.0.1:{instance.health_port}/readyz", timeout=2)
                except httpx.TransportError:
                    return False
                return answer.status_code == 200

            await eventually(ready, 60, "the study-fetcher to be ready")

        return harness, start

    try:
        yield create
    finally:
        for stop, _ in stops:
            stop.set()
        for _, task in stops:
            await task
        for cleanup in cleanups:
            await cleanup()
        configure_logging("study-fetcher", "INFO")
        log_file.close()
    logged = log_path.read_text()
    leaked = [value for value in SENSITIVE if value.upper() in logged.upper()]
    assert leaked == [], f"patient data in the service's logs: {leaked}"


def spawn_fetcher(env_overrides: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A `python -m study_fetcher` process (a replica of its own), logging to `log_path`."""
    env = {**os.environ, **env_overrides}
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "study_fetcher"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )


async def ready_at(port: int) -> bool:
    """Whether the fetcher process whose health server listens on `port` says it is ready."""
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            answer = await client.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except httpx.TransportError:
        return False
    return answer.status_code == 200
