"""The compose stack (deploy/compose/compose.yaml) from the images of `make images`, with podman-compose: every
container's HEALTHCHECK passes, and a whole enrolment → selection → available → e-mail flow runs through the
gateway's REST API against the compose MIRC (seeded from here with the synthetic patients of seed 42).
Its own project name and host ports (not the local stack's, not `make compose-up`'s); removed with its volumes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from proxymage_dev.seed_pacs import store_studies
from proxymage_dev.synthetic import synthetic_studies
from proxymage_dev.testing import ConditionTimeoutError, eventually
from proxymage_shared.settings import DicomPeer

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose" / "compose.yaml"
# Below 32768: ports in the ephemeral range may be held by any client socket at the moment the stack starts.
PORTS = {
    "PROXYMAGE_COMPOSE_GATEWAY_PORT": "28180",
    "PROXYMAGE_COMPOSE_MIRC_DICOM_PORT": "21212",
    "PROXYMAGE_COMPOSE_MIRC_HTTP_PORT": "28142",
    "PROXYMAGE_COMPOSE_KAFKA_PORT": "29192",
}
SERVICES = (
    "kafka",
    "ferretdb",
    "mirc",
    "viewer",
    "smtp",
    "identity-matcher",
    "study-fetcher",
    "expert-notifier",
    "gateway",
)


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)


class Stack:
    def __init__(self, project: str, env: dict[str, str], secrets: Path) -> None:
        self.project, self.env, self.secrets = project, env, secrets

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run("podman-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args, env=self.env, timeout=timeout)

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def logs(self) -> str:
        return "\n".join(
            f"--- {s}\n{run('podman', 'logs', '--tail', '30', self.container(s)).stdout}" for s in SERVICES
        )

    def mail(self) -> list[dict[str, Any]]:
        script = (
            "import glob, json; "
            "print(json.dumps([json.load(open(f)) for f in glob.glob('/var/lib/proxymage-smtp/mailbox/*.json')]))"
        )
        listing = run("podman", "exec", self.container("smtp"), "/opt/smtp/bin/python", "-c", script)
        assert listing.returncode == 0, listing.stderr
        mails: list[dict[str, Any]] = json.loads(listing.stdout)
        return mails


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    secrets = tmp_path_factory.mktemp("compose-secrets")
    project = f"pmsmoke{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **PORTS, "PROXYMAGE_COMPOSE_SECRETS": str(secrets)}
    made = run("bash", str(ROOT / "deploy" / "compose" / "secrets.sh"), env=env)
    assert made.returncode == 0, made.stderr
    stack = Stack(project, env, secrets)
    try:
        up = stack.compose("up", "-d", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        yield stack
    finally:
        stack.compose("down", "-v", timeout=300)


async def test_healthchecks_and_the_whole_flow(stack: Stack) -> None:
    token = (stack.secrets / "dcc-token").read_text().strip()
    base = f"http://127.0.0.1:{PORTS['PROXYMAGE_COMPOSE_GATEWAY_PORT']}"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as api:

        async def ready() -> bool:
            try:
                return (await api.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        try:
            await eventually(ready, 180, "the compose gateway to be ready")
        except ConditionTimeoutError:
            pytest.fail(f"gateway not ready:\n{stack.logs()}")

        async def all_healthy() -> bool:  # the images' and compose file's HEALTHCHECKs, run by hand (no systemd)
            results = await asyncio.gather(
                *(asyncio.to_thread(run, "podman", "healthcheck", "run", stack.container(s)) for s in SERVICES)
            )
            return all(r.returncode == 0 for r in results)

        await eventually(all_healthy, 120, "every container's healthcheck to pass")
        assert (
            await api.get("/api/v1/enrolments/nothing", headers={"Authorization": "Bearer wrong"})
        ).status_code == 401

        mirc = DicomPeer(ae_title="MIRC", host="127.0.0.1", port=int(PORTS["PROXYMAGE_COMPOSE_MIRC_DICOM_PORT"]))
        studies = list(synthetic_studies(42))
        report = await asyncio.to_thread(store_studies, studies, mirc, "PM_DEV")
        assert report.failed == 0

        unique = uuid.uuid4().hex[:8]
        rcp_id, meeting_id, enrolment_id = f"rcp-{unique}", f"m-{unique}", f"enr-{unique}"
        radiologist = f"radio+{unique}@chu-fictif.mssante.test"
        nuclear = f"nucleo+{unique}@chu-fictif.mssante.test"
        meeting_date = (dt.date.today() + dt.timedelta(days=2)).isoformat()
        patient = [s for s in studies if s.patient.key in ("beranger_tours", "beranger_blois")]
        wanted = {s.study_instance_uid for s in patient if {"CT", "MR", "PT"} & set(s.modalities)}

        async def command(method: str, path: str, body: dict[str, Any]) -> None:
            response = await api.request(method, path, json=body)
            assert response.status_code == 202, response.text

        await command(
            "PUT",
            f"/api/v1/rcps/{rcp_id}/imaging-settings",
            {
                "title": "RCP ORL fictive",
                "centre": "3C fictif",
                "imaging": {"modalities": ["CT", "MR", "PT"], "date_filter": {"kind": "none"}},
            },
        )
        await command(
            "PUT",
            f"/api/v1/meetings/{meeting_id}/experts",
            {
                "rcp_id": rcp_id,
                "title": "RCP ORL fictive",
                "date": meeting_date,
                "centre": "3C fictif",
                "on_call_radiologist": {"name": "Dr Jeanne RADIO-FICTIVE", "email": radiologist},
                "on_call_nuclear_physician": {"name": "Dr Marc NUCLEO-FICTIF", "email": nuclear},
            },
        )
        await command(
            "POST",
            "/api/v1/enrolments",
            {
                "enrolment_id": enrolment_id,
                "meeting_id": meeting_id,
                "rcp_id": rcp_id,
                "meeting_title": "RCP ORL fictive",
                "meeting_date": meeting_date,
                "centre": "3C fictif",
                "patient": {
                    "birth_name": "Béranger-Fictif",
                    "used_name": None,
                    "first_name": "HÉLÈNE",
                    "birth_date": "1956-04-12",
                    "sex": "F",
                },
                "consent": True,
                "requested_by": {"name": "Dr Paul DEMANDEUR-FICTIF"},
            },
        )

        async def enrolment() -> dict[str, Any]:
            response = await api.get(f"/api/v1/enrolments/{enrolment_id}")
            return response.json() if response.status_code == 200 else {}

        async def catalogue() -> bool:
            document = await enrolment()
            return bool(document) and {s["study_instance_uid"] for s in document["studies"]} == wanted

        await eventually(catalogue, 90, "the catalogue found in the compose MIRC by the identity matcher")
        chosen = sorted(wanted)[:2]
        await command(
            "PUT",
            f"/api/v1/enrolments/{enrolment_id}/selection",
            {"study_instance_uids": chosen, "expertise_requested": True},
        )

        async def available() -> bool:
            studies_now = {s["study_instance_uid"]: s for s in (await enrolment())["studies"]}
            return all(studies_now[uid]["retrieval"]["status"] == "available" for uid in chosen)

        try:
            await eventually(available, 120, "the selected studies moved MIRC → VIEWER by the study fetcher")
        except ConditionTimeoutError:
            pytest.fail(f"not available: {await enrolment()}\n{stack.logs()}")

        async def mailed() -> bool:
            recipients = [r for m in stack.mail() for r in m.get("rcpt_tos", [])]
            return recipients.count(radiologist) == 1 and recipients.count(nuclear) == 1

        try:
            await eventually(mailed, 90, "one e-mail to each expert through the mTLS SMTP container")
        except ConditionTimeoutError:
            pytest.fail(f"no mail: {stack.mail()}\n{stack.logs()}")
        envelope = next(m for m in stack.mail() if radiologist in m["rcpt_tos"])
        assert envelope["client_cert"]["subject"].endswith("CN=proxymage-notifier.test")
