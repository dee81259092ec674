"""Fixtures of the tests marked `cluster`: the 3-node Kafka cluster of deploy/local/kafka-cluster.sh.

The cluster is started (if it is not) once per session and left running: `make cluster-test` stops it after the
run (KEEP_CLUSTER=1 keeps it). MongoDB is the local stack's FerretDB (PROXYMAGE_MONGO_URL of local.env), which
these tests use with their own database and never start or stop.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local" / "kafka-cluster.sh"
ENV_FILE = ROOT / "deploy" / "local" / "local.env"


@dataclass(frozen=True, slots=True)
class KafkaCluster:
    """The running cluster: its bootstrap servers, and its nodes stopped, killed and started through the script."""

    bootstrap_servers: str

    @property
    def size(self) -> int:
        return len(self.bootstrap_servers.split(","))

    async def run(self, *args: str, timeout: float = 180) -> None:
        """`kafka-cluster.sh ARGS` without blocking the event loop (the flow under test keeps going meanwhile)."""
        process = await asyncio.create_subprocess_exec(
            "bash", str(SCRIPT), *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
        if process.returncode != 0:
            pytest.fail(f"kafka-cluster.sh {' '.join(args)} failed:\n{output.decode()}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_cluster() -> KafkaCluster:
    result = subprocess.run(
        ["bash", str(SCRIPT), "up"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"the Kafka cluster did not start:\n{result.stdout}\n{result.stderr}", pytrace=False)
    bootstrap = dotenv_values(ENV_FILE).get("PROXYMAGE_LOCAL_KAFKA_CLUSTER_BOOTSTRAP_SERVERS")
    assert bootstrap, f"PROXYMAGE_LOCAL_KAFKA_CLUSTER_BOOTSTRAP_SERVERS missing from {ENV_FILE}"
    return KafkaCluster(bootstrap)
