"""The whole story through the gateway's REST API only, with the four services running as processes
against the real stack (Kafka, FerretDB, Orthanc MIRC and VIEWER, the STARTTLS + client-certificate SMTP
server): settings, experts, enrolment, catalogue with the RCP filter applied and overridden, selection
with expertise, studies reaching `available` with a viewer link that answers, one e-mail per expert,
removal from the console in Chromium, refresh — and SSE delivering the state changes in order; then (CONTRACT
v1.1) a patient not found and a withdrawn enrolment: no images, no e-mail, viewer-store copies purged."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright, expect
from proxymage_dev.pytest_plugin import CHROMIUM, CHROMIUM_ARGS, ROOT, SMTP_DIR, delete_from_orthanc, free_port
from proxymage_dev.synthetic import SyntheticStudy
from proxymage_dev.testing import eventually
from proxymage_dev.viewer_probe import IMAGE_DRAWN_JS

TOKEN = "system-test-dcc-token"
SCREENSHOTS = ROOT / "var" / "screenshots"
SERVICES = ("identity_matcher", "study_fetcher", "expert_notifier", "gateway")
MAILBOX = SMTP_DIR / "mailbox"
STATUS_RANK = {"not_requested": 0, "queued": 1, "retrieving": 2, "not_yet_available": 2, "available": 3}


@dataclass
class System:
    api: httpx.AsyncClient
    unique: str
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    async def enrolment(self, enrolment_id: str, **params: str) -> dict[str, Any]:
        response = await self.api.get(f"/api/v1/enrolments/{enrolment_id}", params=params)
        if response.status_code == 404:
            return {}
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    async def command(self, method: str, path: str, body: dict[str, Any] | None = None) -> str:
        response = await self.api.request(method, path, json=body)
        assert response.status_code == 202, response.text
        event_id: str = response.json()["event_id"]
        return event_id


@contextlib.contextmanager
def services(unique: str, logs_dir: Path, gateway_port: int) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    token_hash = hashlib.sha256(TOKEN.encode()).hexdigest()
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for package in SERVICES:
            env = {
                **os.environ,
                "PROXYMAGE_TOPIC_PREFIX": f"sys-{unique}.",
                "PROXYMAGE_MONGO_DATABASE": f"sys_{unique}_{package}",
                "PROXYMAGE_HEALTH_PORT": str(gateway_port if package == "gateway" else free_port()),
                "PROXYMAGE_API_TOKENS": json.dumps([{"name": "system-test", "role": "dcc", "sha256": token_hash}]),
                "PROXYMAGE_PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
            }
            with (logs_dir / f"{package}.log").open("wb") as log:  # the child keeps its own descriptor
                started[package] = subprocess.Popen(
                    [sys.executable, "-m", package], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
                )
        yield started
    finally:
        for process in started.values():
            if process.poll() is None:
                process.terminate()
        for process in started.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
async def system(stack_env: dict[str, str], unique: str, tmp_path: Path) -> AsyncIterator[System]:
    port = free_port()
    logs = {package: tmp_path / f"{package}.log" for package in SERVICES}
    with services(unique, tmp_path, port) as processes:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        ) as api:

            async def gateway_ready() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await api.get("/readyz")).status_code == 200
                return False

            await eventually(gateway_ready, 90, "the gateway to be ready")
            yield System(api, unique, logs, processes)
    for package, process in processes.items():
        assert process.returncode == 0, f"{package} exited with {process.returncode}:\n{logs[package].read_text()}"


async def remove_one_through_the_console(system: System, meeting_id: str, enrolment_id: str) -> str:
    """Logs in, opens the patient's Imaging tab, opens one study in the viewer, removes the other; returns
    the StudyInstanceUID the console asked to remove."""
    base = str(system.api.base_url).rstrip("/")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.goto(f"{base}/console/login")
            await page.get_by_label("Jeton d'accès").fill(TOKEN)
            await page.get_by_role("button", name="Se connecter").click()
            await page.goto(f"{base}/console/meetings/{meeting_id}/patients/{enrolment_id}")
            links = page.get_by_role("link", name=re.compile("^Visuel disponible"))
            await expect(links).to_have_count(2)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=SCREENSHOTS / "system-01-visuel-disponible.png", full_page=True)
            async with page.context.expect_page() as opened:
                await links.first.click()
            viewer = await opened.value
            assert "/viewer/viewer?StudyInstanceUIDs=" in viewer.url
            # The study the fetcher moved, drawn by the built-in viewer through the gateway's DICOMweb path.
            await viewer.wait_for_function(IMAGE_DRAWN_JS, timeout=60_000, polling="raf")
            await viewer.screenshot(path=SCREENSHOTS / "system-02-viewer.png")
            await viewer.close()

            before = {s["study_instance_uid"] for s in (await system.enrolment(enrolment_id))["studies"]}
            await page.get_by_role("button", name=re.compile("^Retirer l'examen")).last.click()
            await expect(links).to_have_count(1)
            await page.screenshot(path=SCREENSHOTS / "system-03-apres-retrait.png", full_page=True)
            assert errors == []
        finally:
            await browser.close()

    async def one_removed() -> bool:
        studies = (await system.enrolment(enrolment_id, all="true"))["studies"]
        return any(s["retrieval"]["status"] == "removed" for s in studies)

    await eventually(one_removed, 30, "the removal requested from the console")
    studies = (await system.enrolment(enrolment_id, all="true"))["studies"]
    removed = next(s["study_instance_uid"] for s in studies if s["retrieval"]["status"] == "removed")
    assert removed in before
    return str(removed)


def mail_to(address: str) -> list[dict[str, Any]]:
    found = []
    for sidecar in MAILBOX.glob("*.json"):
        envelope = json.loads(sidecar.read_text())
        if address in envelope.get("rcpt_tos", []):
            found.append(envelope)
    return found


async def test_the_whole_flow_through_rest(
    system: System, seeded_studies: list[SyntheticStudy], stack_env: dict[str, str]
) -> None:
    unique = system.unique
    rcp_id, meeting_id, enrolment_id = f"rcp-{unique}", f"m-{unique}", f"enr-{unique}"
    radiologist = f"radio+{unique}@chu-fictif.mssante.test"
    nuclear = f"nucleo+{unique}@chu-fictif.mssante.test"
    meeting_date = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    patient_studies = [s for s in seeded_studies if s.patient.key in ("beranger_tours", "beranger_blois")]
    all_uids = {s.study_instance_uid for s in patient_studies}
    rcp_modalities = {"CT", "MR", "PT"}
    default_uids = {s.study_instance_uid for s in patient_studies if rcp_modalities & set(s.modalities)}
    assert default_uids != all_uids  # the RCP filter hides something for this patient

    await system.command(
        "PUT",
        f"/api/v1/rcps/{rcp_id}/imaging-settings",
        {"title": "RCP ORL fictive", "centre": "3C fictif",
         "imaging": {"modalities": sorted(rcp_modalities), "date_filter": {"kind": "none"}}},
    )  # fmt: skip
    await system.command(
        "PUT",
        f"/api/v1/meetings/{meeting_id}/experts",
        {"rcp_id": rcp_id, "title": "RCP ORL fictive", "date": meeting_date, "centre": "3C fictif",
         "on_call_radiologist": {"name": "Dr Jeanne RADIO-FICTIVE", "email": radiologist},
         "on_call_nuclear_physician": {"name": "Dr Marc NUCLEO-FICTIF", "email": nuclear}},
    )  # fmt: skip
    await system.command(
        "POST",
        "/api/v1/enrolments",
        {"enrolment_id": enrolment_id, "meeting_id": meeting_id, "rcp_id": rcp_id,
         "meeting_title": "RCP ORL fictive", "meeting_date": meeting_date, "centre": "3C fictif",
         "patient": {"birth_name": "Béranger-Fictif", "used_name": None, "first_name": "HÉLÈNE",
                     "birth_date": "1956-04-12", "sex": "F"},
         "consent": True, "requested_by": {"name": "Dr Paul DEMANDEUR-FICTIF"}},
    )  # fmt: skip

    async def catalogue_visible() -> bool:
        document = await system.enrolment(enrolment_id)
        return bool(document) and {s["study_instance_uid"] for s in document["studies"]} == default_uids

    await eventually(catalogue_visible, 60, "the catalogue with the RCP filter applied")
    document = await system.enrolment(enrolment_id)
    assert document["identity"]["status"] == "matched"
    assert document["identity"]["pacs_patients"] == 2
    assert document["filters"]["modalities"] == sorted(rcp_modalities)
    everything = await system.enrolment(enrolment_id, all="true")
    assert {s["study_instance_uid"] for s in everything["studies"]} == all_uids
    only_mg = await system.enrolment(enrolment_id, modalities="MG")
    assert {s["study_instance_uid"] for s in only_mg["studies"]} == {
        s.study_instance_uid for s in patient_studies if "MG" in s.modalities
    }
    row = next(s for s in everything["studies"] if s["study_instance_uid"] == patient_studies[0].study_instance_uid)
    assert row["images"] == len(patient_studies[0].instances)
    assert row["series"] == patient_studies[0].series_count
    assert row["date"] == patient_studies[0].date.isoformat()
    assert row["retrieval"]["status"] == "not_requested"

    chosen = sorted(default_uids)[:2]
    for uid in chosen:
        delete_from_orthanc(stack_env, "VIEWER", uid)
    sse_events: list[tuple[str, dict[str, Any]]] = []
    listening = asyncio.Event()

    async def listen() -> None:
        async with system.api.stream("GET", f"/api/v1/enrolments/{enrolment_id}/events", timeout=None) as stream:
            assert stream.status_code == 200
            listening.set()
            name = "message"
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    name = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    sse_events.append((name, json.loads(line.removeprefix("data:").strip())))
                    name = "message"

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(listening.wait(), 20)
    await system.command(
        "PUT",
        f"/api/v1/enrolments/{enrolment_id}/selection",
        {"study_instance_uids": chosen, "expertise_requested": True},
    )

    async def both_available() -> bool:
        studies = {s["study_instance_uid"]: s for s in (await system.enrolment(enrolment_id))["studies"]}
        return all(studies[uid]["retrieval"]["status"] == "available" for uid in chosen)

    await eventually(both_available, 90, "both selected studies to be available")
    document = await system.enrolment(enrolment_id)
    for study in (s for s in document["studies"] if s["study_instance_uid"] in chosen):
        assert study["selected"] is True
        url = study["retrieval"]["viewer_url"]
        gateway_url = str(system.api.base_url).rstrip("/")
        assert url == f"{gateway_url}/viewer/viewer?StudyInstanceUIDs={study['study_instance_uid']}"
        async with httpx.AsyncClient(timeout=10, cookies={"proxymage_token": TOKEN}) as browser:
            viewer_page = await browser.get(url)  # the OHIF viewer, behind the console's sign-in
            assert viewer_page.status_code == 200
            assert "/viewer/app-config.js" in viewer_page.text
        # What the viewer reads: the study through the gateway's DICOMweb path, every instance of it.
        found = await system.api.get(
            "/dicom-web/studies",
            params={"StudyInstanceUID": study["study_instance_uid"], "includefield": "00201208"},
        )
        assert found.status_code == 200
        assert found.json()[0]["00201208"]["Value"][0] == study["images"]

    async def mailed() -> bool:
        return len(mail_to(radiologist)) == 1 and len(mail_to(nuclear)) == 1

    await eventually(mailed, 60, "one e-mail to each on-call expert")

    async def notified() -> bool:
        expertise = (await system.enrolment(enrolment_id))["expertise"]
        return expertise["requested"] and sorted((n["role"], n["status"]) for n in expertise["notifications"]) == [
            ("nuclear_physician", "sent"),
            ("radiologist", "sent"),
        ]

    await eventually(notified, 30, "both notifications shown as sent")

    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    for uid in chosen:
        statuses = [
            data["retrieval"]["status"]
            for _, data in sse_events
            if data.get("study_instance_uid") == uid and "retrieval" in data
        ]
        assert statuses, f"no live update for {uid}"
        assert statuses[-1] == "available", (
            uid,
            [
                (d.get("kind"), d["retrieval"]["status"], d.get("selected"))
                for _, d in sse_events
                if d.get("study_instance_uid") == uid
            ],
        )
        ranks = [STATUS_RANK[status] for status in statuses]
        assert ranks == sorted(ranks), f"states out of order for {uid}: {statuses}"

    # The console, in Chromium, as a 3C user sees it during the meeting: both studies "Visuel disponible",
    # one opened in the viewer (the real VIEWER Orthanc page), one removed with the trash button.
    removed = await remove_one_through_the_console(system, meeting_id, enrolment_id)
    assert removed in chosen

    async def removal_shown() -> bool:
        studies = {s["study_instance_uid"]: s for s in (await system.enrolment(enrolment_id, all="true"))["studies"]}
        return studies[removed]["retrieval"]["status"] == "removed"

    await eventually(removal_shown, 30, "the removed study shown as removed")
    await system.command("POST", f"/api/v1/enrolments/{enrolment_id}/refresh")
    after = {s["study_instance_uid"]: s for s in (await system.enrolment(enrolment_id, all="true"))["studies"]}
    kept = next(uid for uid in chosen if uid != removed)
    assert after[kept]["retrieval"]["status"] == "available"
    assert len(mail_to(radiologist)) == 1  # nothing sent twice


async def test_withdrawal_and_a_patient_not_found_through_rest(
    system: System, seeded_studies: list[SyntheticStudy], stack_env: dict[str, str]
) -> None:
    """CONTRACT v1.1 as a DCC sees it: a patient not found never gets images nor an e-mail saying there are
    some; a withdrawn enrolment loses its studies (and the viewer store its copies), its e-mails not yet
    sent are cancelled, and nothing is queried or moved for it any more."""
    unique = system.unique
    meeting_id = f"m-wd-{unique}"
    radiologist = f"radio-wd+{unique}@chu-fictif.mssante.test"
    meeting_date = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    sister = [s for s in seeded_studies if s.patient.key == "soeur_ligature"]
    other = next(s for s in seeded_studies if s.patient.key == "beranger_tours")
    for study in (*sister, other):
        delete_from_orthanc(stack_env, "VIEWER", study.study_instance_uid)
    await system.command(
        "PUT",
        f"/api/v1/meetings/{meeting_id}/experts",
        {"rcp_id": f"rcp-{unique}", "title": "RCP ORL fictive", "date": meeting_date, "centre": "3C fictif",
         "on_call_radiologist": {"name": "Dr Jeanne RADIO-FICTIVE", "email": radiologist},
         "on_call_nuclear_physician": None},
    )  # fmt: skip

    def enrolment(enrolment_id: str, patient: dict[str, Any]) -> dict[str, Any]:
        return {"enrolment_id": enrolment_id, "meeting_id": meeting_id, "rcp_id": f"rcp-{unique}",
                "meeting_title": "RCP ORL fictive", "meeting_date": meeting_date, "centre": "3C fictif",
                "patient": patient, "consent": True, "requested_by": {"name": "Dr Paul DEMANDEUR-FICTIF"}}  # fmt: skip

    # A patient not found (near miss: "Jean Pierre" is not "Jean-Pierre"), selecting another patient's study.
    lost = f"enr-lost-{unique}"
    await system.command("POST", "/api/v1/enrolments", enrolment(lost, {
        "birth_name": "TESTARD-FICTIF", "used_name": None, "first_name": "Jean Pierre", "birth_date": "1970-03-03",
        "sex": "M"}))  # fmt: skip
    # A patient found, whose enrolment is then withdrawn.
    found = f"enr-wd-{unique}"
    await system.command("POST", "/api/v1/enrolments", enrolment(found, {
        "birth_name": "Sœur-Exemple", "used_name": None, "first_name": "Anaïs", "birth_date": "1990-07-14",
        "sex": "F"}))  # fmt: skip

    async def identities() -> bool:
        lost_doc, found_doc = await system.enrolment(lost), await system.enrolment(found)
        return (
            bool(lost_doc and found_doc)
            and lost_doc["identity"]["status"] == "unmatched"
            and found_doc["identity"]["status"] == "matched"
            and len(found_doc["studies"]) == len(sister)
        )

    await eventually(identities, 60, "one patient not found, one matched with her studies listed")
    await system.command(
        "PUT", f"/api/v1/enrolments/{lost}/selection",
        {"study_instance_uids": [other.study_instance_uid], "expertise_requested": True},
    )  # fmt: skip
    uids = [s.study_instance_uid for s in sister]
    await system.command(
        "PUT", f"/api/v1/enrolments/{found}/selection", {"study_instance_uids": uids, "expertise_requested": False}
    )

    async def settled() -> bool:
        lost_doc, found_doc = await system.enrolment(lost), await system.enrolment(found)
        lost_studies = {s["study_instance_uid"]: s for s in lost_doc["studies"]}
        found_states = {s["retrieval"]["status"] for s in found_doc["studies"] if s["selected"]}
        notification = radiologist_notification(lost_doc)
        lost_waiting = (notification["status"], notification["reason_code"]) == ("waiting", "patient_not_found")
        return (
            other.study_instance_uid in lost_studies
            and lost_studies[other.study_instance_uid]["retrieval"]["status"] == "failed"
            and lost_waiting
            and found_states == {"available"}
        )

    await eventually(settled, 90, "the other patient's study refused, the matched patient's studies available")
    lost_doc = await system.enrolment(lost)
    refused = lost_doc["studies"][0]["retrieval"]
    assert refused["reason_code"] == "patient_not_found"
    assert refused["reason"].startswith("patient_not_found: patient non trouvé")
    assert radiologist_notification(lost_doc)["reason_code"] == "patient_not_found"
    assert viewer_holds(stack_env, other.study_instance_uid) == 0
    for study in sister:
        assert viewer_holds(stack_env, study.study_instance_uid) == len(study.instances)

    # The DCC withdraws both enrolments.
    response = await system.api.request(
        "DELETE", f"/api/v1/enrolments/{found}", json={"reason": "retiré de l'ordre du jour"}
    )
    assert response.status_code == 202, response.text
    assert (await system.api.request("DELETE", f"/api/v1/enrolments/{lost}")).status_code == 202

    async def withdrawn() -> bool:
        found_doc, lost_doc = await system.enrolment(found), await system.enrolment(lost)
        return (
            found_doc["identity"]["status"] == "withdrawn"
            and lost_doc["identity"]["status"] == "withdrawn"
            and all(
                s["retrieval"]["status"] == "removed" and s["retrieval"]["reason_code"] == "enrolment_withdrawn"
                for s in found_doc["studies"]
                if s["study_instance_uid"] in uids
            )
            and radiologist_notification(lost_doc)["status"] == "cancelled"
            and all(viewer_holds(stack_env, uid) == 0 for uid in uids)
        )

    await eventually(withdrawn, 60, "both withdrawn, the studies removed and purged, the e-mail cancelled")
    assert mail_to(radiologist) == []  # no e-mail ever said "des examens sont disponibles" for either patient


def radiologist_notification(document: dict[str, Any]) -> dict[str, Any]:
    found = [n for n in document["expertise"]["notifications"] if n["role"] == "radiologist"]
    return found[0] if found else {"status": None, "reason_code": None}


def viewer_holds(stack_env: dict[str, str], study_instance_uid: str) -> int:
    """Instances of the study in the viewer store (Orthanc VIEWER's REST API), 0 when absent."""
    port = stack_env["PROXYMAGE_LOCAL_VIEWER_HTTP_PORT"]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False) as client:
        found = client.post("/tools/lookup", content=study_instance_uid.encode()).json()
        ids = [item["ID"] for item in found if item.get("Type") == "Study"]
        return sum(len(client.get(f"/studies/{orthanc_id}/instances").json()) for orthanc_id in ids)
