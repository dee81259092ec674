"""MIRC's association budget across processes: three fetcher processes (`python -m study_fetcher`) retrieving 30
selected studies never hold more than `mirc.max_associations` associations to MIRC at once.

What is counted: the fetchers' `mirc` peer is a TCP relay in this test, which forwards to the real MIRC and
counts the connections open through it at each moment. Every association a fetcher opens to MIRC goes through
it: the catalogue's and the retrieval's C-FINDs, the C-MOVEs, the C-ECHO probes. The C-MOVEs' sub-associations
(MIRC -> viewer store, C-STORE) do not: MIRC opens them to the viewer store's own address. The viewer store's
budget (C-FIND checks) is not measured here.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from proxymage_dev.pytest_plugin import free_port
from proxymage_dev.testing import eventually
from proxymage_shared.mongo import create_mongo_client
from proxymage_shared.settings import DicomPeer

from .conftest import SENSITIVE, absent_from_viewer, fresh_studies, ready_at, spawn_fetcher, store, viewer_instances

BUDGET = 3  # below one process's 4 workers (and pool), far below three processes' 12
PROCESSES = 3
STUDIES = 30


class CountingRelay:
    """A TCP relay to (host, port) that counts the client connections open through it, and their peak.

    A connection counts from its acceptance until the client's end closes (EOF or loss), both seen in the relay's
    protocol callbacks, in the order the kernel reported them: a fetcher closes an association's socket before it
    frees its slot, so a successor's connection is never seen before its predecessor's end."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.open = 0
        self.peak = 0
        self.total = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Inbound(self), "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def opened(self) -> None:
        self.open += 1
        self.total += 1
        self.peak = max(self.peak, self.open)

    def closed(self) -> None:
        self.open -= 1


class _Outbound(asyncio.Protocol):
    def __init__(self, inbound: _Inbound) -> None:
        self.inbound = inbound
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.inbound.send(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbound.end()


class _Inbound(asyncio.Protocol):
    def __init__(self, relay: CountingRelay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.outbound: _Outbound | None = None
        self.pending: list[bytes] = []
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counted = True
        self.relay.opened()
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, outbound = await loop.create_connection(lambda: _Outbound(self), *self.relay.target)
        except OSError:
            self.end()
            return
        self.outbound = outbound
        if not self.counted:  # the client left meanwhile
            self._close_outbound()
            return
        assert outbound.transport is not None
        for chunk in self.pending:
            outbound.transport.write(chunk)
        self.pending.clear()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.outbound is not None and self.outbound.transport is not None:
            self.outbound.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        self.end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.end()

    def end(self) -> None:
        if self.counted:
            self.counted = False
            self.relay.closed()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self._close_outbound()

    def _close_outbound(self) -> None:
        if self.outbound is not None and self.outbound.transport is not None:
            self.outbound.transport.close()


@pytest.fixture
async def relay(mirc: DicomPeer) -> AsyncIterator[tuple[CountingRelay, int]]:
    counting = CountingRelay(mirc.host, mirc.port)
    port = await counting.start()
    yield counting, port
    await counting.close()


@pytest.mark.timeout(300)
async def test_three_fetcher_processes_stay_within_mircs_budget(
    deployment,
    mirc: DicomPeer,
    stack_env: dict[str, str],
    relay: tuple[CountingRelay, int],
    unique: str,
    tmp_path: Path,
) -> None:
    counting, relay_port = relay
    studies = fresh_studies(STUDIES)
    await store(studies, mirc)
    absent_from_viewer(stack_env, *studies)
    harness, _ = await deployment()
    budget_database = f"it_budget_{unique}"
    log_path = tmp_path / "processes.log"
    ports = [free_port() for _ in range(PROCESSES)]
    common = {
        "PROXYMAGE_TOPIC_PREFIX": harness.settings.topic_prefix,
        "PROXYMAGE_MONGO_DATABASE": harness.settings.database_name(),
        "PROXYMAGE_MIRC__PORT": str(relay_port),  # every association to MIRC through the counting relay
        "PROXYMAGE_MIRC__MAX_ASSOCIATIONS": str(BUDGET),
        "PROXYMAGE_PACS_BUDGET_DATABASE": budget_database,
        "PROXYMAGE_MIRC_MAX_ASSOCIATIONS": "4",  # four workers per process
        "PROXYMAGE_POLL_SECONDS": "0.2",
        "PROXYMAGE_TRANSFER_WAIT_SECONDS": "0.5",
        "PROXYMAGE_RETRY_DELAYS_SECONDS": "[0.5, 1.0]",
        # Job leases long enough that renewals delayed by a loaded machine (three processes and FerretDB on two
        # shared cores) rarely let another process take a study over mid-move: a takeover moves a study twice,
        # which is test_instances_integration's subject, not this one's.
        "PROXYMAGE_LEASE_SECONDS": "60",
        "PROXYMAGE_LOG_LEVEL": "INFO",
    }
    processes = [spawn_fetcher({**common, "PROXYMAGE_HEALTH_PORT": str(port)}, log_path) for port in ports]
    mongo = create_mongo_client(stack_env["PROXYMAGE_MONGO_URL"])
    try:
        for port in ports:
            await eventually(lambda port=port: ready_at(port), 90, "a fetcher process to be ready")
        uids = [study.study_instance_uid for study in studies]
        selections = {f"enr-budget-{k}": uids[k * 5 : (k + 1) * 5] for k in range(STUDIES // 5)}
        for enrolment, chosen in selections.items():
            await harness.select(enrolment, chosen)
        for enrolment, chosen in selections.items():
            for uid in chosen:
                await harness.wait_status(enrolment, uid, "available", timeout=180)
        print(
            f"{PROCESSES} fetcher processes, {STUDIES} studies: peak {counting.peak} concurrent associations to MIRC "
            f"(budget {BUDGET}), {counting.total} associations in all"
        )
        assert counting.peak <= BUDGET
        assert counting.peak >= 2, "the fetchers never worked concurrently: the bound proved nothing"
        for study in studies:
            transfer = await harness.transfer(study.study_instance_uid)
            assert transfer is not None
            assert transfer["moves"] == 1, f"{study.study_instance_uid} moved {transfer['moves']} times"
            assert viewer_instances(stack_env, study.study_instance_uid) == len(study.instances)
        slots = mongo[budget_database]["association_slots"]
        assert sorted([doc["_id"] async for doc in slots.find({"peer": "MIRC"})]) == [
            f"MIRC#{index}" for index in range(BUDGET)
        ]
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(process.wait, 30)
            if process.poll() is None:
                process.kill()
        await mongo.drop_database(budget_database)
        await mongo.close()
    logged = log_path.read_text()
    assert '"event": "retrieval_attempt"' in logged
    leaked = [value for value in SENSITIVE if value.upper() in logged.upper()]
    assert leaked == [], f"patient data in the service's logs: {leaked}"
