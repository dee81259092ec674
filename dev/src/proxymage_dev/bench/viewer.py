"""`python -m proxymage_dev.bench.viewer`: click on "Visuel disponible" -> first image drawn by OHIF, in Chromium.

A generated 300-slice CT (512x512, 16-bit, as a scanner writes it) is stored into the VIEWER Orthanc (skipped when
already there) and made `available` for one enrolment through the events the services publish; an in-process
gateway (own topic prefix and database) serves the console, the OHIF viewer and the DICOMweb path. Each run opens
the enrolment's console page in a fresh browser context (no cache, as a new meeting-room session), then times
from the click on the link to the first animation frame where a viewport canvas holds a non-uniform image
(`proxymage_dev.viewer_probe`). Debian's Chromium headless, no GPU (software rendering, like a meeting-room PC without
drivers would be at worst). Prints each run and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from gateway.app import build
from gateway.auth import COOKIE_NAME, token_hash
from gateway.settings import ApiToken, Settings
from playwright.async_api import Browser, async_playwright
from proxymage_dev.bench.gateway import delete_topics, free_port
from proxymage_dev.seed_pacs import store_studies
from proxymage_dev.synthetic import SyntheticStudy, large_study
from proxymage_dev.viewer_probe import IMAGE_DRAWN_JS
from proxymage_shared import topics
from proxymage_shared.events import utc_now
from proxymage_shared.kafka import ensure_topics
from proxymage_shared.mongo import create_mongo_client
from proxymage_shared.service import run_service
from proxymage_shared.settings import DicomPeer, load_settings
from proxymage_shared.topics import topic_specs

BENCH_TOKEN = "bench-viewer-token"  # noqa: S105 - a throwaway token of this process's own gateway
BENCH_SEED = 20_261_010
ENROLMENT = "enr-bench-viewer"
ROOT = Path(__file__).resolve().parents[4]
# The Chromium flags of the browser tests (proxymage_dev.pytest_plugin.CHROMIUM_ARGS), without pytest.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run")


class _BenchSettings(Settings):
    """The gateway's settings plus the viewer store's DICOM address (the bench stores its CT there)."""

    viewer: DicomPeer


def _event(**fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": utc_now().isoformat(), **fields}


def available_study_events(
    study: SyntheticStudy, enrolment_id: str = ENROLMENT, meeting_id: str = "m-bench-viewer"
) -> list[tuple[str, dict[str, Any]]]:
    """(contract topic, event) for one enrolment whose one study is matched, catalogued, selected and `available`:
    what the DCC and the services would have published (also used by the gateway's tests)."""
    pacs_patient = {"patient_id": study.patient.patient_id, "issuer": study.patient.issuer}
    enrolled = _event(
        enrolment_id=enrolment_id,
        meeting_id=meeting_id,
        rcp_id="rcp-bench-viewer",
        meeting_title="RCP banc d'essai",
        meeting_date=utc_now().date().isoformat(),
        centre="3C",
        patient={
            "birth_name": "BANC",
            "used_name": None,
            "first_name": "Essai",
            "birth_date": "1950-01-01",
            "sex": "M",
        },
        consent=True,
        requested_by={"name": "Dr BANC"},
    )
    catalogued = {
        "study_instance_uid": study.study_instance_uid,
        "description": study.description,
        "pacs": "MIRC",
        "date": study.date.isoformat(),
        "modalities": list(study.modalities),
        "images": len(study.instances),
        "series": study.series_count,
        "pacs_patient": pacs_patient,
    }
    study_instance_uid = study.study_instance_uid
    return [
        (topics.PATIENT_ENROLLED, enrolled),
        (
            topics.IDENTITY_RESOLVED,
            _event(
                enrolment_id=enrolment_id,
                source_event_id=enrolled["event_id"],
                status="matched",
                pacs_patients=[pacs_patient],
            ),
        ),
        (topics.IMAGING_CATALOGUED, _event(enrolment_id=enrolment_id, status="listed", studies=[catalogued])),
        (
            topics.STUDIES_SELECTED,
            _event(enrolment_id=enrolment_id, study_instance_uids=[study_instance_uid], expertise_requested=False),
        ),
        (
            topics.STUDY_STATUS,
            _event(
                enrolment_id=enrolment_id,
                study_instance_uid=study_instance_uid,
                status="available",
                version=3,
                attempts=1,
            ),
        ),
    ]


async def _stored_count(settings: _BenchSettings, study: SyntheticStudy) -> int:
    """Instances of the study already in VIEWER (its DICOMweb QIDO, straight to the store)."""
    assert settings.viewer_dicomweb_url is not None
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        answer = await client.get(
            f"{settings.viewer_dicomweb_url}/studies",
            params={"StudyInstanceUID": study.study_instance_uid, "includefield": "00201208"},
        )
        found = answer.json() if answer.status_code == 200 and answer.content else []
    if not found:
        return 0
    return int(found[0].get("00201208", {}).get("Value", [0])[0])


def shows_available(answer: dict[str, Any], study: SyntheticStudy) -> bool:
    """Whether an enrolment's REST answer shows every part of `available_study_events` projected (the topics are
    consumed independently): matched, catalogued, selected, available (also used by the gateway's tests)."""
    studies = answer["studies"]
    return bool(
        answer["identity"]["status"] == "matched"
        and studies
        and studies[0]["description"] == study.description
        and studies[0]["retrieval"]["status"] == "available"
    )


async def _available(client: httpx.AsyncClient, study: SyntheticStudy) -> bool:
    answer = await client.get(f"/api/v1/enrolments/{ENROLMENT}")
    return answer.status_code == 200 and shows_available(answer.json(), study)


async def _one_run(browser: Browser, url: str) -> float:
    context = await browser.new_context(base_url=url, locale="fr-FR", viewport={"width": 1600, "height": 900})
    try:
        await context.add_cookies([{"name": COOKIE_NAME, "value": BENCH_TOKEN, "url": url}])
        page = await context.new_page()
        await page.goto(f"/console/enrolments/{ENROLMENT}")
        link = page.get_by_role("link", name=re.compile("Visuel disponible"))
        await link.wait_for(timeout=30_000)
        started = time.perf_counter()
        async with context.expect_page() as opened:
            await link.click()
        viewer = await opened.value
        await viewer.wait_for_function(IMAGE_DRAWN_JS, timeout=120_000, polling="raf")
        return time.perf_counter() - started
    finally:
        await context.close()


async def main_async(instances: int, runs: int) -> None:
    run_id = uuid.uuid4().hex[:8]
    port = free_port()
    settings = load_settings(
        _BenchSettings,
        topic_prefix=f"bench-viewer-{run_id}.",
        mongo_database=f"bench_viewer_{run_id}",
        health_port=port,
        public_url=f"http://127.0.0.1:{port}",
        topic_partitions=1,
        api_tokens=(ApiToken(name="bench", role="viewer", sha256=token_hash(BENCH_TOKEN)),),
        viewer_app_dir=ROOT / "var" / "ohif" / "current",
        log_level="WARNING",
    )
    if settings.viewer_dicomweb_url is None:
        raise SystemExit("PROXYMAGE_VIEWER_DICOMWEB_URL is not set (deploy/local/local.env)")
    if not (ROOT / "var" / "ohif" / "current" / "index.html").is_file():
        raise SystemExit("the OHIF viewer is not installed: deploy/local/ohif.sh install")
    study = large_study(BENCH_SEED, instances)
    if await _stored_count(settings, study) < instances:
        print(f"storing the {instances}-slice CT into VIEWER...", flush=True)
        report = await asyncio.to_thread(store_studies, [study], settings.viewer, "PM_DEV")
        if report.failed:
            raise SystemExit(f"{report.failed} instance(s) could not be stored into VIEWER")
    await ensure_topics(settings.kafka_bootstrap_servers, topic_specs(1, prefix=settings.topic_prefix))
    stop = asyncio.Event()
    runner = asyncio.create_task(run_service(build(settings), stop))
    url = f"http://127.0.0.1:{port}"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    seconds: list[float] = []
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {BENCH_TOKEN}"}, trust_env=False, timeout=10
        ) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the gateway did not become ready")
                await asyncio.sleep(0.2)
            await producer.start()
            for topic, value in available_study_events(study):
                await producer.send_and_wait(settings.topic(topic), json.dumps(value).encode(), key=ENROLMENT.encode())
            deadline = time.monotonic() + 60
            while not await _available(client, study):
                if time.monotonic() > deadline:
                    raise SystemExit("the study did not show `available` in the gateway")
                await asyncio.sleep(0.2)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                for index in range(runs):
                    elapsed = await _one_run(browser, url)
                    seconds.append(elapsed)
                    print(f"run {index + 1}: click -> first image drawn {elapsed * 1000:7.0f} ms", flush=True)
            finally:
                await browser.close()
    finally:
        await producer.stop()
        stop.set()
        await runner
        await delete_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
        mongo = create_mongo_client(settings.mongo_url.get_secret_value())
        await mongo.drop_database(settings.database_name())
        await mongo.close()
    print(
        f"viewer: click -> first image drawn, {instances}-slice CT, {runs} cold runs in Chromium (no GPU): "
        f"median {statistics.median(seconds) * 1000:.0f} ms, min {min(seconds) * 1000:.0f} ms, "
        f"max {max(seconds) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main_async(args.instances, args.runs))


if __name__ == "__main__":
    main()
