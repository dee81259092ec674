"""The DCC's side of the chaos run: events built and published on Kafka, the gateway's REST API read, the Orthanc
REST APIs (a study deleted from the viewer store so that it is moved again), the SMTP server's mailbox, the
services' metrics, and the consumers' lag (to know when replays have all been handled)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from proxymage_shared import topics
from proxymage_shared.events import Event, MeetingExperts, PatientEnrolled, StudiesSelected, StudyStatusChanged

from proxymage_dev.synthetic import SyntheticPatient

# The demo DCC token whose hash chaos.env lists (as local.env does).
TOKEN: Final = "demo-dcc-token"  # noqa: S105 - the local stacks' published demo token


def _base() -> dict[str, Any]:
    return {"event_id": uuid.uuid4(), "occurred_at": dt.datetime.now(dt.UTC)}


def person(patient: SyntheticPatient) -> dict[str, Any]:
    """The patient as the DCC knows them (birth name, first name, birth date, sex) from the PACS record."""
    family, _, given = (patient.birth_name or patient.patient_name).partition("^")
    da = patient.birth_date
    return {"birth_name": family, "used_name": None, "first_name": given,
            "birth_date": f"{da[:4]}-{da[4:6]}-{da[6:]}", "sex": patient.sex}  # fmt: skip


def meeting_event(meeting_id: str, radiologist: str, nuclear: str) -> MeetingExperts:
    return MeetingExperts.model_validate(
        {**_base(), "meeting_id": meeting_id, "rcp_id": "rcp-chaos", "title": "RCP chaos",
         "date": dt.date.today() + dt.timedelta(days=3), "centre": "3C fictif",
         "on_call_radiologist": {"name": "Dr Jeanne RADIO-FICTIVE", "email": radiologist},
         "on_call_nuclear_physician": {"name": "Dr Marc NUCLEO-FICTIF", "email": nuclear}},
        strict=False,
    )  # fmt: skip


def enrolment_event(enrolment_id: str, meeting_id: str, patient: SyntheticPatient) -> PatientEnrolled:
    return PatientEnrolled.model_validate(
        {**_base(), "enrolment_id": enrolment_id, "meeting_id": meeting_id, "rcp_id": "rcp-chaos",
         "meeting_title": "RCP chaos", "meeting_date": dt.date.today() + dt.timedelta(days=3), "centre": "3C fictif",
         "patient": person(patient), "consent": True, "requested_by": {"name": "Dr Paul DEMANDEUR-FICTIF"}},
        strict=False,
    )  # fmt: skip


def selection_event(enrolment_id: str, uids: Sequence[str], expertise: bool) -> StudiesSelected:
    return StudiesSelected.model_validate(
        {**_base(), "enrolment_id": enrolment_id, "study_instance_uids": list(uids), "expertise_requested": expertise},
        strict=False,
    )


def parse_counter(metrics: str, name: str, labels: str = "") -> float:
    """The value of one Prometheus sample (`name{labels}`) in a /metrics text; 0 when absent."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{{re.escape(labels)}\}})?\s+(\S+)$", re.MULTILINE)
    match = pattern.search(metrics)
    return float(match.group(1)) if match else 0.0


@dataclass
class Dcc:
    env: dict[str, str]
    mailbox: Path
    producer: AIOKafkaProducer | None = None
    http: httpx.AsyncClient | None = None

    @property
    def bootstrap(self) -> str:
        return self.env["PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS"]

    async def start(self) -> None:
        # A DCC's producer: acknowledged by every in-sync replica; a send that fails is the caller's to retry.
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", request_timeout_ms=5000)
        await self.producer.start()
        self.http = httpx.AsyncClient(timeout=15, trust_env=False)

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        if self.http is not None:
            await self.http.aclose()

    async def publish(self, topic: str, key: str, event: Event) -> None:
        await self.publish_raw(topic, key.encode(), event.to_kafka_value())

    async def publish_raw(self, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
        """(partition, offset) of the record once the broker acknowledged it."""
        assert self.producer is not None
        metadata = await self.producer.send_and_wait(topic, value, key=key)
        return metadata.partition, metadata.offset

    def _gateway(self) -> str:
        return f"http://127.0.0.1:{self.env['PROXYMAGE_LOCAL_GATEWAY_HTTP_PORT']}"

    async def _get(self, url: str, **params: str) -> Any:
        assert self.http is not None
        response = await self.http.get(url, params=params, headers={"Authorization": f"Bearer {TOKEN}"})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    async def enrolment(self, enrolment_id: str) -> dict[str, Any] | None:
        """The gateway's enrolment document, every study (no filter); None while it does not know it."""
        document: dict[str, Any] | None = await self._get(
            f"{self._gateway()}/api/v1/enrolments/{enrolment_id}", all="true"
        )
        return document

    async def meeting_enrolments(self, meeting_id: str) -> list[dict[str, Any]]:
        found = await self._get(f"{self._gateway()}/api/v1/meetings/{meeting_id}/enrolments")
        return list(found["enrolments"]) if found else []

    async def statuses(self, enrolment_id: str) -> dict[str, tuple[str, str | None]]:
        """StudyInstanceUID -> (retrieval status, reason code) as the gateway shows them."""
        document = await self.enrolment(enrolment_id)
        return {
            study["study_instance_uid"]: (study["retrieval"]["status"], study["retrieval"].get("reason_code"))
            for study in (document or {}).get("studies", ())
        }

    async def _orthanc(self, instance: str, method: str, path: str, body: bytes | None = None) -> Any:
        assert self.http is not None
        port = self.env[f"PROXYMAGE_LOCAL_{instance}_HTTP_PORT"]
        response = await self.http.request(method, f"http://127.0.0.1:{port}{path}", content=body)
        response.raise_for_status()
        return response.json() if response.content else None

    async def _orthanc_study(self, instance: str, uid: str) -> str | None:
        found = await self._orthanc(instance, "POST", "/tools/lookup", uid.encode())
        return next((item["ID"] for item in found or () if item.get("Type") == "Study"), None)

    async def delete_from_viewer(self, uid: str) -> None:
        """Deletes the study from the viewer store, so that the next selection of it moves it again."""
        if (orthanc_id := await self._orthanc_study("VIEWER", uid)) is not None:
            await self._orthanc("VIEWER", "DELETE", f"/studies/{orthanc_id}")

    async def viewer_instances(self, uid: str) -> int:
        orthanc_id = await self._orthanc_study("VIEWER", uid)
        if orthanc_id is None:
            return 0
        return len(await self._orthanc("VIEWER", "GET", f"/studies/{orthanc_id}/instances"))

    async def metric(self, port: int, name: str, labels: str = "") -> float:
        assert self.http is not None
        response = await self.http.get(f"http://127.0.0.1:{port}/metrics")
        response.raise_for_status()
        return parse_counter(response.text, name, labels)

    def mails_to(self, address: str) -> int:
        count = 0
        for sidecar in self.mailbox.glob("*.json"):
            with contextlib.suppress(ValueError, OSError):
                count += address in json.loads(sidecar.read_text()).get("rcpt_tos", [])
        return count

    async def consumer_groups(self) -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            return sorted(str(group[0]) for group in await admin.list_consumer_groups())
        finally:
            await admin.close()

    async def lag(self) -> int:
        """Messages not yet handled by the services' consumer groups (committed offsets vs. end offsets)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await admin.start()
        await consumer.start()
        try:
            total = 0
            for group, _ in await admin.list_consumer_groups():
                if not str(group).startswith("proxymage."):
                    continue
                committed = await admin.list_consumer_group_offsets(group)
                ends = await consumer.end_offsets(list(committed))
                total += sum(max(0, ends[tp] - meta.offset) for tp, meta in committed.items() if meta.offset >= 0)
            return total
        finally:
            await consumer.stop()
            await admin.close()

    async def settled(self, timeout: float) -> None:
        """Waits until every consumer group has handled everything published so far."""
        deadline = asyncio.get_running_loop().time() + timeout
        while await self.lag():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the services still had unhandled messages after {timeout:.0f}s")
            await asyncio.sleep(0.5)

    @contextlib.asynccontextmanager
    async def watch_status(self) -> AsyncIterator[asyncio.Queue[tuple[float, StudyStatusChanged]]]:
        """The study-status events published from now on, each with the loop time it was read at."""
        topic = self.env.get("PROXYMAGE_TOPIC_PREFIX", "") + topics.STUDY_STATUS
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        queue: asyncio.Queue[tuple[float, StudyStatusChanged]] = asyncio.Queue()
        try:
            assert self.producer is not None
            # The producer's partitions_for waits for the topic's metadata (the consumer's only reads its cache).
            partitions = [TopicPartition(topic, p) for p in sorted(await self.producer.partitions_for(topic) or ())]
            if not partitions:
                raise RuntimeError(f"no partition of {topic} found")
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for partition in partitions:
                await consumer.position(partition)  # resolves "end" now, before anything is published

            async def read() -> None:
                loop = asyncio.get_running_loop()
                async for record in consumer:
                    if record.value is not None:
                        event = StudyStatusChanged.model_validate_json(record.value)
                        queue.put_nowait((loop.time(), event))

            reader = asyncio.create_task(read())
            try:
                yield queue
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        finally:
            await consumer.stop()
