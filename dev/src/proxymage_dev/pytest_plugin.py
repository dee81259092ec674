"""pytest fixtures for tests against the real servers, registered for every package of the workspace through
the `pytest11` entry point of proxymage-dev.

Two ways to provide the servers, chosen by PROXYMAGE_TEST_STACK:
 - `local` (the default): the process stack of deploy/local (deploy/local/local.env). `make test` starts it
   before pytest; `stack_env` makes sure it is up (starting what is missing through the same scripts) so that
   one test file can also be run on its own.
 - `containers`: the same peers from the images of `make images`, started by testcontainers for the session
   and removed at its end (proxymage_dev.container_stack), on the ports and var dir of
   deploy/containers/test-stack.env, which PROXYMAGE_ENV_FILE then names. The engine is DOCKER_HOST's, or
   podman's API socket started here (deploy/containers/podman-socket.sh) when DOCKER_HOST is unset.
Tests that use `stack_env` are marked `integration`. Each test isolates itself: its own topic prefix, database
and consumer groups.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from dotenv import dotenv_values
from proxymage_shared.kafka import ensure_topics
from proxymage_shared.settings import DicomPeer, ServiceSettings, load_settings
from proxymage_shared.topics import topic_specs

from proxymage_dev.seed_pacs import store_studies
from proxymage_dev.synthetic import SyntheticStudy, synthetic_studies

ROOT = Path(__file__).resolve().parents[3]
TEST_STACK = os.environ.get("PROXYMAGE_TEST_STACK") or "local"
CONTAINERS = TEST_STACK == "containers"


def _local_env_file() -> Path:
    """deploy/local/local.env, or the env file PROXYMAGE_LOCAL_ENV names (absolute or relative to the repository), as
    deploy/local/lib.sh reads it: the tests then use that stack (e.g. deploy/chaos/chaos.env's)."""
    configured = os.environ.get("PROXYMAGE_LOCAL_ENV")
    if not configured:
        return ROOT / "deploy" / "local" / "local.env"
    path = Path(configured)
    return path if path.is_absolute() else ROOT / path


LOCAL_ENV_FILE = _local_env_file()
CONTAINERS_ENV_FILE = ROOT / "deploy" / "containers" / "test-stack.env"
ENV_FILE = CONTAINERS_ENV_FILE if CONTAINERS else LOCAL_ENV_FILE
STACK_SETTINGS = {key: value or "" for key, value in dotenv_values(ENV_FILE).items()}
# The SMTP server's directory (certs/, mailbox/, script.json), as deploy/local/smtp/server.py lays it out.
SMTP_DIR = ROOT / STACK_SETTINGS["PROXYMAGE_LOCAL_SMTP_DIR"]
STACK_FIXTURE = "stack_env"
# Browser tests drive Debian's Chromium (Playwright never downloads a browser here); these switches keep it
# from reaching out to the network it does not have.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--lang=fr-FR",  # French date order in date inputs
)


def pytest_configure(config: pytest.Config) -> None:
    if TEST_STACK not in ("local", "containers"):
        raise pytest.UsageError(f"PROXYMAGE_TEST_STACK={TEST_STACK!r}: `local` (the default) or `containers`")
    if CONTAINERS or os.environ.get("PROXYMAGE_LOCAL_ENV"):
        # Before anything reads settings; the stack asked for wins over the Makefile's PROXYMAGE_ENV_FILE
        # (local.env), as in lib.sh.
        os.environ["PROXYMAGE_ENV_FILE"] = str(ENV_FILE)
    else:
        os.environ.setdefault("PROXYMAGE_ENV_FILE", str(ENV_FILE))
    # Every test creates its own topics: few partitions each keeps the single local broker's memory small
    # (services started by tests, in-process or as subprocesses, inherit this).
    os.environ.setdefault("PROXYMAGE_TOPIC_PARTITIONS", "2")
    config.addinivalue_line("markers", "integration: talks to the real servers of deploy/local")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if STACK_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


def run_script(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the project's own scripts
        ["bash", str(ROOT / "deploy" / "local" / script), *args],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """The stack's settings (deploy/local/local.env, or deploy/containers/test-stack.env in container mode),
    with the stack started if it is not (container mode: started here and removed at the session's end)."""
    if not CONTAINERS:
        result = run_script("stack.sh", "up")
        if result.returncode != 0:
            pytest.fail(f"the local stack did not start:\n{result.stdout}\n{result.stderr}", pytrace=False)
        yield dict(STACK_SETTINGS)
        return
    yield from _container_stack()


@pytest.fixture(scope="session")
def oidc_provider(stack_env: dict[str, str]) -> dict[str, str]:
    """The local OpenID Connect provider (deploy/local/oidc.sh, a process in both modes: it has no image),
    started if it is not; its settings (PROXYMAGE_OIDC_*, from deploy/local/local.env or PROXYMAGE_LOCAL_ENV's)."""
    settings = {key: value or "" for key, value in dotenv_values(LOCAL_ENV_FILE).items()}
    if not settings.get("PROXYMAGE_OIDC_ISSUER"):
        pytest.fail(f"{LOCAL_ENV_FILE} configures no OIDC provider (PROXYMAGE_OIDC_ISSUER)", pytrace=False)
    result = run_script("oidc.sh", "start", timeout=300)
    if result.returncode != 0:
        pytest.fail(f"deploy/local/oidc.sh start failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return settings


_containers: Any = None  # the running ContainerStack (container mode)


def _container_stack() -> Iterator[dict[str, str]]:
    global _containers  # one stack per session, also used by orthanc()
    started_socket = False
    if not os.environ.get("DOCKER_HOST"):
        socket_script = ROOT / "deploy" / "containers" / "podman-socket.sh"
        before = subprocess.run(  # noqa: S603 - the project's own script
            ["bash", str(socket_script), "status"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        result = subprocess.run(  # noqa: S603
            ["bash", str(socket_script), "start"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"no container engine: DOCKER_HOST is unset and {result.stderr}", pytrace=False)
        started_socket = " up " not in before.stdout
        os.environ["DOCKER_HOST"] = result.stdout.strip()
    # testcontainers against podman's socket (ARCHITECTURE.md, measured facts); read when it is imported.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    from proxymage_dev.container_stack import ContainerStack

    ohif = run_script("ohif.sh", "install")  # files the gateway serves (the viewer tests), as stack.sh up does
    if ohif.returncode != 0:
        pytest.fail(f"deploy/local/ohif.sh install failed:\n{ohif.stdout}\n{ohif.stderr}", pytrace=False)
    stack = ContainerStack(ROOT, STACK_SETTINGS)
    try:
        try:
            stack.up()
        except Exception as error:
            stack.down()
            pytest.fail(f"the container stack did not start: {error}", pytrace=False)
        _containers = stack
        yield dict(STACK_SETTINGS)
    finally:
        _containers = None
        stack.down()
        if started_socket:
            subprocess.run(  # noqa: S603
                ["bash", str(ROOT / "deploy" / "containers" / "podman-socket.sh"), "stop"],  # noqa: S607
                capture_output=True,
                check=False,
            )


def _peer(stack_env: dict[str, str], name: str) -> DicomPeer:
    return DicomPeer(
        ae_title=stack_env[f"PROXYMAGE_{name}__AE_TITLE"],
        host=stack_env[f"PROXYMAGE_{name}__HOST"],
        port=int(stack_env[f"PROXYMAGE_{name}__PORT"]),
    )


@pytest.fixture(scope="session")
def mirc(stack_env: dict[str, str]) -> DicomPeer:
    return _peer(stack_env, "MIRC")


@pytest.fixture(scope="session")
def viewer(stack_env: dict[str, str]) -> DicomPeer:
    return _peer(stack_env, "VIEWER")


def orthanc(*args: str) -> None:
    """deploy/local/orthanc.sh with `args` (e.g. "stop", "mirc"); fails the test if the script fails. In
    container mode, "stop"/"start" stop and start the instance's container (its data and address stay)."""
    if CONTAINERS:
        if _containers is None:
            pytest.fail("orthanc(): the container stack is not running (use the stack_env fixture)", pytrace=False)
        verb, instance = args
        _containers.orthanc(verb, instance)
        return
    result = run_script("orthanc.sh", *args, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"orthanc.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def seeded_studies(mirc: DicomPeer) -> list[SyntheticStudy]:
    """MIRC holds the synthetic studies of seed 42 (stored again: idempotent, nothing is deleted, so
    several test sessions may share the stack). Tests that need a study absent from VIEWER delete it
    there first (`delete_from_orthanc`)."""
    studies = list(synthetic_studies(42))
    report = store_studies(studies, mirc, "PM_DEV")
    assert report.failed == 0, f"{report.failed} instance(s) could not be stored into MIRC"
    return studies


def orthanc_rest(stack_env: dict[str, str], instance: str, method: str, path: str, body: bytes | None = None) -> Any:
    """Calls the REST API of the local Orthanc `instance` ("MIRC" or "VIEWER"); returns the parsed JSON."""
    port = stack_env[f"PROXYMAGE_LOCAL_{instance}_HTTP_PORT"]
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        payload = response.read()
    return json.loads(payload) if payload else None


def delete_from_orthanc(stack_env: dict[str, str], instance: str, study_instance_uid: str) -> int:
    """Deletes a study (by StudyInstanceUID) from a local Orthanc; returns how many were deleted."""
    found = orthanc_rest(stack_env, instance, "POST", "/tools/lookup", study_instance_uid.encode())
    studies = [item["ID"] for item in found or () if item.get("Type") == "Study"]
    for orthanc_id in studies:
        orthanc_rest(stack_env, instance, "DELETE", f"/studies/{orthanc_id}")
    return len(studies)


@pytest.fixture
async def unique(stack_env: dict[str, str]) -> AsyncIterator[str]:
    """A short id for the test's topic prefix, databases and business ids. The test's topics (every topic
    whose name contains it) are deleted afterwards, so the local broker does not accumulate partitions."""
    value = uuid.uuid4().hex[:10]
    yield value
    bootstrap = stack_env["PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS"]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if value in name]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def test_settings(stack_env: dict[str, str], unique: str) -> ServiceSettings:
    """Settings of a throwaway service: its own topic prefix (topics created) and database."""
    settings = load_settings(
        ServiceSettings,
        service_name=f"it-{unique}",
        topic_prefix=f"it-{unique}.",
        mongo_database=f"it_{unique}",
        handler_retry_base_seconds=0.05,
        handler_retry_max_seconds=0.2,
    )
    await ensure_topics(settings.kafka_bootstrap_servers, topic_specs(1, prefix=settings.topic_prefix))
    return settings
