"""The chart's Deployments of the four services, rendered by Helm and run with `podman kube play` against the
local stack (Kafka, FerretDB, Orthanc MIRC + VIEWER, the mTLS SMTP server on 127.0.0.1): the topics Job's command
creates the topics, every pod starts and becomes ready (/readyz), and one enrolment posted to the gateway pod is
matched by the identity-matcher pod in MIRC, catalogued by the study-fetcher pod, and one selected study becomes
`available` (moved to VIEWER). Its own topic prefix, databases and ports: the local services are not disturbed.

Needs podman, the images of `make images` (tag PROXYMAGE_IMAGE_TAG, default latest) and the Helm tools of
`make helm-check`; run by `make containers-test`.

What podman 4.3's `kube play` does not do is done here, and only that: it has no `kind: Secret`, so the Secret's
values are put into the env entries that reference them and the SMTP certificates' Secret volume becomes a
hostPath of the same files; it maps a host-network pod's containerPorts as published ports (and then refuses
them), so they are left out; it runs no Job, so the Job's container runs with `podman run`.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from proxymage_dev.pytest_plugin import ROOT, delete_from_orthanc, free_port
from proxymage_dev.synthetic import SyntheticStudy
from proxymage_dev.testing import eventually

CHART = ROOT / "deploy" / "helm" / "proxymage"
HELM = ROOT / "var" / "helm" / "bin" / "helm"
KUBE_VERSION = "1.34.0"
SERVICES = ("identity-matcher", "study-fetcher", "expert-notifier", "gateway")
pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

TAG = os.environ.get("PROXYMAGE_IMAGE_TAG", "latest")
TOKEN = "kube-play-dcc-token"


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return result


def render(release: str, values: list[str]) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(HELM), "template", release, str(CHART), "--kube-version", KUBE_VERSION, *values],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def for_podman_4_3(docs: list[dict[str, Any]], certs: Path) -> list[dict[str, Any]]:
    """The ConfigMap and Deployments, with the Secret's values inlined and the SMTP certificates as a hostPath."""
    secrets = {doc["metadata"]["name"]: doc.get("stringData", {}) for doc in docs if doc["kind"] == "Secret"}
    played = []
    for original in docs:
        if original["kind"] == "ConfigMap":
            played.append(original)
        if original["kind"] != "Deployment":
            continue
        doc = copy.deepcopy(original)
        spec = doc["spec"]["template"]["spec"]
        for container in spec["containers"]:
            container.pop("ports")  # podman 4.3 turns them into port mappings, refused with hostNetwork
            for entry in container["env"]:
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    entry.pop("valueFrom")
                    entry["value"] = secrets[ref["name"]][ref["key"]]
        for volume in spec["volumes"]:
            if "secret" in volume:
                volume.pop("secret")
                volume["hostPath"] = {"path": str(certs), "type": "Directory"}
        played.append(doc)
    return played


@contextlib.contextmanager
def kube_play(manifest: Path) -> Iterator[None]:
    try:
        podman("kube", "play", str(manifest))
        yield
    finally:
        podman("kube", "down", str(manifest), check=False)


def pod_logs(release: str) -> str:
    listing = podman("ps", "-a", "--format", "{{.Names}}", "--filter", f"name={release}", check=False).stdout
    logs = []
    for name in listing.split():
        logs.append(f"--- {name}\n{podman('logs', '--tail', '40', name, check=False).stderr[-6000:]}")
    return "\n".join(logs)


async def test_helm_deployments_run_with_podman_kube_play(
    stack_env: dict[str, str], seeded_studies: list[SyntheticStudy], unique: str, tmp_path: Path
) -> None:
    assert shutil.which("podman"), "podman is needed (deploy/images/base.sh tools)"
    assert HELM.exists(), "Helm is needed: make helm-check"
    for service in SERVICES:
        image = f"localhost/proxymage-{service}:{TAG}"
        assert podman("image", "exists", image, check=False).returncode == 0, f"{image} missing: make images"

    release = f"kp{unique[:8]}"
    prefix = f"kp-{unique}."
    ports = {service: free_port() for service in SERVICES}
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    certs = tmp_path / "smtp-certs"  # the Secret's files, readable by the images' non-root user
    certs.mkdir(mode=0o755)
    for name in ("ca.pem", "client.pem", "client.key"):
        shutil.copy(ROOT / stack_env["PROXYMAGE_SMTP__CA_FILE"].rsplit("/", 1)[0] / name, certs / name)
        (certs / name).chmod(0o644)
    tokens = [{"name": "kube-play", "role": "dcc", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]
    values = [
        "--set", "hostNetwork=true",
        "--set-string", f"image.tag={TAG}",
        "--set-string", f"config.topicPrefix={prefix}",
        "--set", "config.topicPartitions=2",
        "--set-string", f"mongo.databasePrefix=kp_{unique}_",
        "--set-string", f"kafka.bootstrapServers={stack_env['PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS']}",
        "--set-string", f"mongo.url={stack_env['PROXYMAGE_MONGO_URL']}",
        "--set-string", f"mirc.aeTitle={stack_env['PROXYMAGE_MIRC__AE_TITLE']}",
        "--set-string", f"mirc.host={stack_env['PROXYMAGE_MIRC__HOST']}",
        "--set", f"mirc.port={stack_env['PROXYMAGE_MIRC__PORT']}",
        "--set-string", f"viewer.aeTitle={stack_env['PROXYMAGE_VIEWER__AE_TITLE']}",
        "--set-string", f"viewer.host={stack_env['PROXYMAGE_VIEWER__HOST']}",
        "--set", f"viewer.port={stack_env['PROXYMAGE_VIEWER__PORT']}",
        "--set-string", f"viewer.restUrl={stack_env['PROXYMAGE_VIEWER_REST_URL']}",
        "--set-string", f"viewer.dicomwebUrl={stack_env['PROXYMAGE_VIEWER_DICOMWEB_URL']}",
        "--set-string", f"smtp.host={stack_env['PROXYMAGE_SMTP__HOST']}",
        "--set", f"smtp.port={stack_env['PROXYMAGE_SMTP__PORT']}",
        "--set-string", "smtp.certsSecret=smtp-certs",
        "--set-json", f"smtp.allowedDomains={stack_env['PROXYMAGE_SMTP__ALLOWED_DOMAINS']}",
        "--set-json", f"gateway.apiTokens={json.dumps(tokens)}",
        "--set-string", f"gateway.publicUrl={gateway}",
        "--set", "services.gateway.replicas=1",
        # podman 4.3 does not expand $(POD_NAME) in env values (Kubernetes does): one gateway, one set of groups.
        "--set", "gateway.consumerGroupPerPod=false",
        *(arg for service, port in ports.items() for arg in ("--set", f"services.{service}.port={port}")),
    ]  # fmt: skip
    docs = render(release, values)

    # The topics Job's container, as Kubernetes would run it (podman kube play runs no Job).
    (job,) = (doc for doc in docs if doc["kind"] == "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = [arg for entry in container["env"] for arg in ("--env", f"{entry['name']}={entry['value']}")]
    created = podman(
        "run", "--rm", "--network", "host", "--read-only", "--user", "10001:10001", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", *env, container["image"], *container["args"],
    ).stdout  # fmt: skip
    assert "topic(s) created" in created, created
    assert f"+ {prefix}dcc.patient-enrolled.v1" in created, created

    manifest = tmp_path / "kube.yaml"
    manifest.write_text(yaml.safe_dump_all(for_podman_4_3(docs, certs)))
    with kube_play(manifest):
        try:
            for service, port in ports.items():

                async def ready(port: int = port) -> bool:
                    async with httpx.AsyncClient(timeout=5) as client:
                        with contextlib.suppress(httpx.TransportError):
                            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                    return False

                await eventually(ready, 120, f"{service} pod to be ready")
            states = podman("pod", "ps", "--filter", f"name={release}", "--format", "{{.Name}} {{.Status}}").stdout
            assert sorted(states.split("\n")[:-1]) == sorted(
                f"{release}-proxymage-{service}-pod-0 Running" for service in SERVICES
            ), states
            await enrolment_flow(gateway, unique, seeded_studies, stack_env)
        except BaseException:
            print(pod_logs(release))  # shown by pytest on failure
            raise


async def enrolment_flow(
    gateway: str, unique: str, seeded_studies: list[SyntheticStudy], stack_env: dict[str, str]
) -> None:
    rcp_id, meeting_id, enrolment_id = f"rcp-{unique}", f"m-{unique}", f"enr-{unique}"
    meeting_date = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    studies = [s for s in seeded_studies if s.patient.key in ("beranger_tours", "beranger_blois")]
    async with httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as api:

        async def command(method: str, path: str, body: dict[str, Any]) -> None:
            response = await api.request(method, path, json=body)
            assert response.status_code == 202, response.text

        async def enrolment() -> dict[str, Any]:
            response = await api.get(f"/api/v1/enrolments/{enrolment_id}", params={"all": "true"})
            return response.json() if response.status_code == 200 else {}

        await command(
            "PUT", f"/api/v1/rcps/{rcp_id}/imaging-settings",
            {"title": "RCP kube play", "centre": "3C fictif",
             "imaging": {"modalities": ["CT", "MR", "PT"], "date_filter": {"kind": "none"}}},
        )  # fmt: skip
        await command(
            "POST", "/api/v1/enrolments",
            {"enrolment_id": enrolment_id, "meeting_id": meeting_id, "rcp_id": rcp_id,
             "meeting_title": "RCP kube play", "meeting_date": meeting_date, "centre": "3C fictif",
             "patient": {"birth_name": "Béranger-Fictif", "used_name": None, "first_name": "HÉLÈNE",
                         "birth_date": "1956-04-12", "sex": "F"},
             "consent": True, "requested_by": {"name": "Dr Paul DEMANDEUR-FICTIF"}},
        )  # fmt: skip

        async def catalogued() -> bool:
            document = await enrolment()
            return {s["study_instance_uid"] for s in document.get("studies", [])} == {
                s.study_instance_uid for s in studies
            }

        await eventually(catalogued, 90, "the enrolment matched (identity-matcher) and catalogued (study-fetcher)")
        document = await enrolment()
        assert document["identity"]["status"] == "matched"
        assert document["identity"]["pacs_patients"] == 2

        chosen = sorted(s.study_instance_uid for s in studies if {"CT", "MR", "PT"} & set(s.modalities))[0]
        delete_from_orthanc(stack_env, "VIEWER", chosen)
        selection = {"study_instance_uids": [chosen], "expertise_requested": False}
        await command("PUT", f"/api/v1/enrolments/{enrolment_id}/selection", selection)

        async def available() -> bool:
            rows = {s["study_instance_uid"]: s for s in (await enrolment())["studies"]}
            return rows[chosen]["retrieval"]["status"] == "available"

        await eventually(available, 120, "the selected study moved to VIEWER by the study-fetcher pod")
