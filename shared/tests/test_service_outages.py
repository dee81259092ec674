"""A service ends the outages it logged: its readiness checks report, and a watcher re-runs them while one lasts."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from proxymage_shared.dependency_log import Outages
from proxymage_shared.service import _reporting, _watch_outages


class Flaky:
    """A readiness check that fails until `ok` is set."""

    def __init__(self) -> None:
        self.ok = False
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.ok


def recorder() -> tuple[Outages, list[tuple[str, dict[str, Any]]]]:
    notices: list[tuple[str, dict[str, Any]]] = []
    return Outages(lambda level, event, fields: notices.append((event, fields))), notices


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_check_reports_once_the_service_has_started_only() -> None:
    outages, notices = recorder()
    started = asyncio.Event()
    kafka = Flaky()
    check = _reporting("kafka", kafka, outages, started)
    assert await check() is False
    assert notices == []  # before start the broker is not started, whatever Kafka's state
    started.set()
    assert await check() is False
    assert await check() is False
    kafka.ok = True
    assert await check() is True
    assert [event for event, _ in notices] == ["dependency_down", "dependency_up"]
    assert notices[1][1]["failures"] == 2


async def test_the_watcher_ends_an_outage_revealed_by_library_records_when_its_check_passes() -> None:
    outages, notices = recorder()
    started = asyncio.Event()
    started.set()
    kafka, mongo = Flaky(), Flaky()
    mongo.ok = True
    checks = {
        "kafka": _reporting("kafka", kafka, outages, started),
        "mongo": _reporting("mongo", mongo, outages, started),
    }
    outages.down("kafka", "Unable connect to node with id 1")  # as the noise filter reports it
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_outages(checks, outages, stop, 0.01))
    try:
        await until(lambda: kafka.calls >= 3)
        assert outages.down_names() == ["kafka"]
        assert mongo.calls == 0  # only the checks of what is down run
        kafka.ok = True
        await until(lambda: outages.down_names() == [])
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(watcher, 5)
    assert [(event, fields["dependency"]) for event, fields in notices] == [
        ("dependency_down", "kafka"),
        ("dependency_up", "kafka"),
    ]


async def test_an_outage_without_a_check_of_its_own_ends_when_the_service_is_ready() -> None:
    outages, notices = recorder()
    started = asyncio.Event()
    started.set()
    mirc = Flaky()
    checks = {"mirc": _reporting("mirc", mirc, outages, started)}
    outages.down("pacs", "TCP Initialisation Error: [Errno 111] Connection refused")
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_outages(checks, outages, stop, 0.01))
    try:
        await until(lambda: mirc.calls >= 2)
        assert "pacs" in outages.down_names()
        mirc.ok = True
        await until(lambda: outages.down_names() == [])
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 5)
    events = [(event, fields["dependency"]) for event, fields in notices]
    assert ("dependency_up", "pacs") in events
    assert ("dependency_up", "mirc") in events
