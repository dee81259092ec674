"""`python -m proxymage_dev.bench.study_fetcher`: retrieval through the fetcher against dcmtk's `movescu`
(ARCHITECTURE.md "Budgets": selection event -> `available` published within movescu's time + 10 %).

Stores one generated CT study (300 instances of 512x512 16-bit by default) into MIRC, then alternately, a few
times (5: movescu, fetcher, movescu, fetcher...): deletes it from the viewer store and moves it MIRC -> viewer
store with `/usr/bin/movescu`; deletes it again and publishes a selection to an in-process fetcher (own topic
prefix and database), timing until its `available` status is consumed from Kafka. Prints each run, the medians,
throughputs and their ratio, the fetcher's own overhead per study (its time minus the C-MOVE it sent) and the
load averages before and after (other processes share the machine: both tools are measured alternately so that
a load change affects both alike).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from dotenv import dotenv_values
from prometheus_client import REGISTRY
from proxymage_dev.bench.gateway import delete_topics
from proxymage_dev.seed_pacs import store_studies
from proxymage_dev.synthetic import BENCH_PATIENT, large_study
from proxymage_shared import topics
from proxymage_shared.events import IdentityResolved, PacsPatientRef, StudyStatusChanged
from proxymage_shared.kafka import ensure_topics
from proxymage_shared.logging import configure_logging
from proxymage_shared.mongo import create_mongo_client
from proxymage_shared.service import run_service
from proxymage_shared.settings import load_settings
from proxymage_shared.topics import topic_specs
from study_fetcher.app import build
from study_fetcher.settings import Settings

MOVESCU = "/usr/bin/movescu"
BENCH_SEED = 20_261_001


def _env_file() -> Path | None:
    configured = os.environ.get("PROXYMAGE_ENV_FILE")
    if configured:
        return Path(configured)
    for parent in (Path.cwd(), *Path.cwd().parents):
        candidate = parent / "deploy" / "local" / "local.env"
        if candidate.exists():
            os.environ["PROXYMAGE_ENV_FILE"] = str(candidate)
            return candidate
    return None


def _viewer_rest_url(env_file: Path | None) -> str:
    values = dotenv_values(env_file) if env_file else {}
    port = (
        os.environ.get("PROXYMAGE_LOCAL_VIEWER_HTTP_PORT") or values.get("PROXYMAGE_LOCAL_VIEWER_HTTP_PORT") or "8042"
    )
    return f"http://127.0.0.1:{port}"


def _delete_from_viewer(rest: httpx.Client, study_uid: str) -> None:
    found = rest.post("/tools/lookup", content=study_uid.encode())
    found.raise_for_status()
    for item in found.json():
        if item.get("Type") == "Study":
            rest.delete(f"/studies/{item['ID']}").raise_for_status()


def _clean_slate(rest: httpx.Client, study_uid: str) -> None:
    """The study out of the viewer store and the disk's dirty pages written, before each timed move: the
    previous run's 157 MB are otherwise flushed during the next one, whichever tool it measures (the runs
    alternate, but one flush landing in one run's median skews the ratio by several points)."""
    _delete_from_viewer(rest, study_uid)
    os.sync()


def _viewer_count(rest: httpx.Client, study_uid: str) -> int:
    found = rest.post("/tools/lookup", content=study_uid.encode()).json()
    ids = [item["ID"] for item in found if item.get("Type") == "Study"]
    return len(rest.get(f"/studies/{ids[0]}/instances").json()) if ids else 0


def _movescu(settings: Settings, study_uid: str) -> float:
    command = [
        MOVESCU, "-aet", "PM_DEV", "-aec", settings.mirc.ae_title, "-aem", settings.destination(), "-S",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
        settings.mirc.host, str(settings.mirc.port),
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=600)  # noqa: S603 - fixed dcmtk binary
    return time.perf_counter() - started


def _move_seconds_total() -> float:
    value = REGISTRY.get_sample_value("proxymage_dicom_request_seconds_sum", {"peer": "MIRC", "operation": "C-MOVE"})
    return value or 0.0


async def _bench(runs: int, instances: int) -> None:
    env_file = _env_file()
    configure_logging("study-fetcher-bench", "WARNING")
    run_id = uuid.uuid4().hex[:8]
    settings = load_settings(
        Settings,
        topic_prefix=f"bench-{run_id}.",
        mongo_database=f"bench_fetcher_{run_id}",
        health_port=0,
    )
    study = large_study(BENCH_SEED, instances)
    uid = study.study_instance_uid
    print(f"storing the {instances}-instance study into MIRC (idempotent)...", flush=True)
    report = await asyncio.to_thread(store_studies, [study], settings.mirc, "PM_DEV")
    if report.failed:
        raise SystemExit(f"{report.failed} instance(s) could not be stored into MIRC")
    megabytes = sum(len(ds.PixelData) for ds in study.instances) / 1e6
    load_before = os.getloadavg()

    await ensure_topics(settings.kafka_bootstrap_servers, topic_specs(1, prefix=settings.topic_prefix))
    stop = asyncio.Event()
    service = asyncio.create_task(run_service(build(settings), stop))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        settings.topic(topics.STUDY_STATUS),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="latest",
        fetch_max_wait_ms=50,
    )
    await producer.start()
    await consumer.start()
    rest = httpx.Client(base_url=_viewer_rest_url(env_file), timeout=60, trust_env=False)
    mongo = create_mongo_client(settings.mongo_url.get_secret_value())
    movescu_times: list[float] = []
    fetcher_times: list[float] = []
    move_times: list[float] = []
    try:
        await consumer.seek_to_end()
        # Warm-up: the service is up and its consumer group has its partitions.
        await _matched(settings, producer, mongo, "bench-warmup")
        await _through_fetcher(settings, producer, consumer, rest, uid, "bench-warmup")
        for run in range(1, runs + 1):
            _clean_slate(rest, uid)
            movescu_times.append(await asyncio.to_thread(_movescu, settings, uid))
            assert _viewer_count(rest, uid) == instances, "movescu did not move the whole study"
            _clean_slate(rest, uid)
            # The enrolment is matched and its catalogue listed before the clock starts, as in real use (the
            # DCC selects from the listed studies): the budget is selection -> available.
            await _matched(settings, producer, mongo, f"bench-{run_id}-{run}")
            moved_before = _move_seconds_total()
            elapsed = await _through_fetcher(settings, producer, consumer, rest, uid, f"bench-{run_id}-{run}")
            fetcher_times.append(elapsed)
            move_times.append(_move_seconds_total() - moved_before)
            assert _viewer_count(rest, uid) == instances, "the fetcher did not move the whole study"
            print(
                f"run {run}: movescu {movescu_times[-1]:.3f} s, fetcher {elapsed:.3f} s (its C-MOVE"
                f" {move_times[-1]:.3f} s), ratio {movescu_times[-1] / elapsed:.2f}",
                flush=True,
            )
    finally:
        await asyncio.to_thread(rest.close)
        await consumer.stop()
        await producer.stop()
        stop.set()
        await service
        await mongo.drop_database(settings.database_name())
        await mongo.close()
        await delete_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)

    movescu_s = statistics.median(movescu_times)
    fetcher_s = statistics.median(fetcher_times)
    overhead = statistics.median(f - m for f, m in zip(fetcher_times, move_times, strict=True))
    print()
    print(f"study: {instances} instances, {megabytes:.0f} MB of pixel data, MIRC -> viewer store, {runs} runs each")
    print(f"movescu (dcmtk):   median {movescu_s:.3f} s  {instances / movescu_s:7.1f} instances/s")
    print(
        f"fetcher (select -> available published): median {fetcher_s:.3f} s  {instances / fetcher_s:7.1f} instances/s"
    )
    print(f"throughput ratio fetcher/movescu: {movescu_s / fetcher_s:.2f} (target >= 0.90)")
    print(f"fetcher overhead per study (its time minus its C-MOVE): median {overhead * 1000:.0f} ms")
    print(f"load average (1, 5, 15 min): before {_load(load_before)}, after {_load(os.getloadavg())}")


def _load(averages: tuple[float, float, float]) -> str:
    return " ".join(f"{value:.2f}" for value in averages)


async def publish_matched(settings: Settings, producer: AIOKafkaProducer, enrolment_id: str) -> str:
    """Publishes the identity-matcher's outcome linking the enrolment to the benchmark patient; returns its
    event id, which the fetcher records as the enrolment's `catalogue_identity` once it listed the catalogue."""
    now = dt.datetime.now(dt.UTC)
    outcome = IdentityResolved(
        event_id=uuid.uuid4(),
        occurred_at=now,
        enrolment_id=enrolment_id,
        source_event_id=uuid.uuid4(),
        source_occurred_at=now,
        meeting_id="m-bench",
        meeting_date=now.date() + dt.timedelta(days=1),
        status="matched",
        pacs_patients=(PacsPatientRef(patient_id=BENCH_PATIENT.patient_id, issuer=BENCH_PATIENT.issuer),),
    )
    await producer.send_and_wait(
        settings.topic(topics.IDENTITY_RESOLVED), outcome.to_kafka_value(), key=enrolment_id.encode()
    )
    return str(outcome.event_id)


async def catalogue_listed(enrolments: Any, enrolment_id: str, event_id: str) -> bool:
    """Whether the fetcher listed the catalogue of the identity outcome `event_id` for the enrolment."""
    doc = await enrolments.find_one({"_id": enrolment_id}, {"catalogue_identity": 1})
    return doc is not None and doc.get("catalogue_identity") == event_id


async def _matched(settings: Settings, producer: AIOKafkaProducer, mongo: Any, enrolment_id: str) -> None:
    """Links the enrolment to the benchmark patient and waits until the fetcher recorded its catalogue
    (CONTRACT v1.1: only a listed study of a linked patient is moved)."""
    event_id = await publish_matched(settings, producer, enrolment_id)
    enrolments = mongo[settings.database_name()]["enrolments"]
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        if await catalogue_listed(enrolments, enrolment_id, event_id):
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"the fetcher did not list the catalogue of {enrolment_id} in time")


async def _through_fetcher(
    settings: Settings,
    producer: AIOKafkaProducer,
    consumer: AIOKafkaConsumer,
    rest: httpx.Client,
    uid: str,
    enrolment_id: str,
) -> float:
    event = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "enrolment_id": enrolment_id,
        "study_instance_uids": [uid],
        "expertise_requested": False,
    }
    started = time.perf_counter()
    await producer.send_and_wait(
        settings.topic(topics.STUDIES_SELECTED), json.dumps(event).encode(), key=enrolment_id.encode()
    )
    deadline = started + 300
    while time.perf_counter() < deadline:
        batches = await consumer.getmany(timeout_ms=1000)
        for records in batches.values():
            for record in records:
                status = StudyStatusChanged.model_validate_json(record.value)
                if status.enrolment_id != enrolment_id:
                    continue
                if status.status == "available":
                    return time.perf_counter() - started
                if status.status in ("failed", "not_yet_available"):
                    raise SystemExit(f"the fetcher reported {status.status}: {status.reason}")
    raise SystemExit("the fetcher did not make the study available in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instances", type=int, default=300)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_bench(args.runs, args.instances))


if __name__ == "__main__":
    main()
