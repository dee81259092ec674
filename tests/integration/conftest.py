"""Fixtures for tests against the real local stack (deploy/local): Kafka, FerretDB, Orthanc, SMTP.

`make test` starts the stack before pytest; the session fixture `stack` makes sure it is up (starting
what is missing through the same scripts) so a single test file can also be run on its own.
Each test isolates itself: its own topic prefix, database, consumer groups.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from dotenv import dotenv_values
from proxymage_shared.devtools.seed_pacs import store_studies
from proxymage_shared.devtools.synthetic import SyntheticStudy, synthetic_studies
from proxymage_shared.kafka import ensure_topics
from proxymage_shared.settings import DicomPeer, ServiceSettings, load_settings
from proxymage_shared.topics import topic_specs

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = ROOT / "deploy" / "local" / "local.env"
os.environ.setdefault("PROXYMAGE_ENV_FILE", str(ENV_FILE))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The local stack's settings (deploy/local/local.env), with the stack started if it is not."""
    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / "local" / "stack.sh"), "up"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"the local stack did not start:\n{result.stdout}\n{result.stderr}", pytrace=False)
    return {key: value or "" for key, value in dotenv_values(ENV_FILE).items()}


@pytest.fixture(scope="session")
def mirc(stack_env: dict[str, str]) -> DicomPeer:
    return DicomPeer(
        ae_title=stack_env["PROXYMAGE_MIRC__AE_TITLE"],
        host=stack_env["PROXYMAGE_MIRC__HOST"],
        port=int(stack_env["PROXYMAGE_MIRC__PORT"]),
    )


@pytest.fixture(scope="session")
def viewer(stack_env: dict[str, str]) -> DicomPeer:
    return DicomPeer(
        ae_title=stack_env["PROXYMAGE_VIEWER__AE_TITLE"],
        host=stack_env["PROXYMAGE_VIEWER__HOST"],
        port=int(stack_env["PROXYMAGE_VIEWER__PORT"]),
    )


def orthanc(*args: str) -> None:
    subprocess.run(["bash", str(ROOT / "deploy" / "local" / "orthanc.sh"), *args], cwd=ROOT, check=True, timeout=120)


@pytest.fixture(scope="session")
def seeded_studies(mirc: DicomPeer) -> list[SyntheticStudy]:
    """MIRC holds exactly the synthetic studies of seed 42; VIEWER starts empty."""
    orthanc("reset", "all")
    studies = list(synthetic_studies(42))
    report = store_studies(studies, mirc, "PM_DEV")
    assert report.failed == 0
    return studies


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


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
