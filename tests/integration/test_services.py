"""Every service starts for real (`python -m <package>`), reports ready with the stack up, reports *not*
ready while Kafka or MongoDB is unreachable, and stops cleanly on SIGTERM well inside Kubernetes' 30 s grace period
(about a second here; the bound leaves room for a busy machine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from proxymage_dev.pytest_plugin import free_port
from proxymage_dev.testing import ConditionTimeoutError

SERVICES = ["identity_matcher", "study_fetcher", "expert_notifier", "gateway"]


@contextmanager
def running(package: str, log: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    environment = {**os.environ, "PROXYMAGE_HEALTH_PORT": str(port), "PROXYMAGE_LOG_LEVEL": "INFO", **env}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", package], env=environment, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            yield process, port
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)


def readyz(port: int) -> tuple[int, dict[str, Any]] | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except httpx.TransportError:
        return None
    return response.status_code, response.json()


def wait_for(port: int, predicate: Any, timeout: float = 45.0) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = readyz(port)
        if last is not None and predicate(last):
            return last
        time.sleep(0.1)
    raise ConditionTimeoutError(f"/readyz never satisfied the condition; last answer: {last}")


def stop_within(process: subprocess.Popen[bytes], seconds: float) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(seconds)
    return time.monotonic() - started


@pytest.mark.parametrize("package", SERVICES)
def test_service_starts_reports_ready_and_stops_on_sigterm(
    package: str, stack_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "service.log"
    with running(package, log) as (process, port):
        _, body = wait_for(port, lambda answer: answer[0] == 200)
        assert body["ready"] is True
        assert body["checks"]["kafka"] is True
        assert body["checks"]["mongo"] is True
        healthz = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert healthz.status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert "proxymage_events_handled_total" in metrics.text
        elapsed = stop_within(process, 15)
        assert process.returncode == 0, log.read_text()
        assert elapsed < 15
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert {line["event"] for line in lines} >= {"health_listening", "started", "stopping", "stopped"}
    assert all(line["service"] == package.replace("_", "-") for line in lines if "service" in line)


@pytest.mark.parametrize(
    ("dependency", "env"),
    [
        ("kafka", {"PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}),
        ("mongo", {"PROXYMAGE_MONGO_URL": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500"}),
    ],
)
def test_not_ready_while_a_dependency_is_unreachable(
    dependency: str, env: dict[str, str], stack_env: dict[str, str], tmp_path: Path
) -> None:
    with running("gateway", tmp_path / "gateway.log", **env) as (process, port):
        status, body = wait_for(port, lambda answer: True)
        assert status == 503
        assert body["ready"] is False
        assert body["checks"][dependency] is False
        # Still alive, still stoppable.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert stop_within(process, 5) < 5
        assert process.returncode == 0
