"""Kafka unreachable: a service logs a handful of JSON lines, not one per failed attempt.

Nothing is stopped: the service is pointed at a loopback port where nothing listens, which is what an
unreachable Kafka looks like to its clients; MongoDB is the local stack's.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket

import pytest
import structlog
from proxymage_shared.dependency_log import Outages
from proxymage_shared.logging import OUTAGES, configure_logging
from proxymage_shared.service import build_service, run_service
from proxymage_shared.settings import ServiceSettings, load_settings

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_ten_seconds_without_kafka_log_a_few_json_lines() -> None:
    settings = load_settings(
        ServiceSettings,
        service_name="quiet-test",
        kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()}",
        topic_prefix="quiet-test.",
        mongo_database="proxymage_quiet_test",
    )
    stream = io.StringIO()
    configure_logging(settings.service_name, "INFO", json=True, stream=stream)
    stop = asyncio.Event()
    outages: Outages = OUTAGES
    try:
        runner = asyncio.create_task(run_service(build_service(settings), stop, outage_check_seconds=1.0))
        await asyncio.sleep(10)  # the duration measured, not a wait for a condition
        assert not runner.done()
        stop.set()
        await asyncio.wait_for(runner, 30)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
        for name in outages.down_names():
            outages.up(name)
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    events = [record["event"] for record in records]
    kafka_down = [r for r in records if r["event"] == "dependency_down" and r["dependency"] == "kafka"]
    assert len(kafka_down) == 1, events
    assert events.count("dependency_up") == 0, events
    assert len(lines) <= 6, events  # health_listening, dependency_down, stopping, stopped (+ FastStream's own)
