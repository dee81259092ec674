"""Runs the gateway in-process against the real local stack, with its own topic prefix and database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from gateway.app import build
from gateway.auth import token_hash
from gateway.settings import ApiToken, Settings
from proxymage_dev.bench.gateway import delete_topics
from proxymage_dev.bench.viewer import available_study_events, shows_available
from proxymage_dev.pytest_plugin import free_port
from proxymage_dev.synthetic import SyntheticStudy
from proxymage_dev.testing import eventually
from proxymage_shared.events import Event, utc_now
from proxymage_shared.mongo import create_mongo_client
from proxymage_shared.service import run_service
from proxymage_shared.settings import load_settings

DCC_TOKEN = "it-dcc-token"
VIEWER_TOKEN = "it-viewer-token"


@dataclass
class RunningGateway:
    settings: Settings
    url: str
    producer: AIOKafkaProducer
    client: httpx.AsyncClient  # authenticated as `dcc`

    async def send(self, topic: str, event: Event | dict[str, Any], key: str) -> None:
        value = event.to_kafka_value() if isinstance(event, Event) else json.dumps(event).encode()
        await self.producer.send_and_wait(self.settings.topic(topic), value, key=key.encode())

    async def wait_for(self, path: str, check: Any, timeout: float = 20, **params: Any) -> dict[str, Any]:
        """GETs `path` until `check(json)` holds; returns the last answer."""
        answer: dict[str, Any] = {}

        async def holds() -> bool:
            nonlocal answer
            response = await self.client.get(path, params=params)
            if response.status_code != 200:
                return False
            answer = response.json()
            return bool(check(answer))

        await eventually(holds, timeout, f"{path} to satisfy the check")
        return answer


def base(**fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": utc_now().isoformat(), **fields}


async def make_available(gw: RunningGateway, study: SyntheticStudy, enrolment_id: str) -> None:
    """Enrols a patient whose one study is matched, catalogued, selected and `available`, and waits until the
    gateway shows every part (the topics are consumed independently)."""
    for topic, event in available_study_events(study, enrolment_id, f"m-{enrolment_id}"):
        await gw.send(topic, event, enrolment_id)
    await gw.wait_for(f"/api/v1/enrolments/{enrolment_id}", lambda answer: shows_available(answer, study))


@contextlib.asynccontextmanager
async def running_gateway(unique: str, **overrides: Any) -> AsyncIterator[RunningGateway]:
    port = free_port()
    overrides.setdefault("public_url", f"http://127.0.0.1:{port}")  # the viewer links point at this gateway
    # Test meetings are dated years back: the retention sweep would delete them (its own tests set it).
    overrides.setdefault("retention_days", 3650)
    settings = load_settings(
        Settings,
        topic_prefix=f"it-gw-{unique}.",
        mongo_database=f"it_gw_{unique}",
        health_port=port,
        api_tokens=(
            ApiToken(name="it-dcc", role="dcc", sha256=token_hash(DCC_TOKEN)),
            ApiToken(name="it-viewer", role="viewer", sha256=token_hash(VIEWER_TOKEN)),
        ),
        handler_retry_base_seconds=0.05,
        handler_retry_max_seconds=0.2,
        consumer_concurrency=1,
        topic_partitions=1,  # the shared local Kafka has a small heap: few partitions per test
        **overrides,
    )
    service = build(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(service, stop))
    url = f"http://127.0.0.1:{settings.health_port}"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {DCC_TOKEN}"}, timeout=30, trust_env=False
    ) as client:

        async def ready() -> bool:
            if task.done():
                await task
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            await eventually(ready, 60, "the gateway to be ready")
            await producer.start()
            yield RunningGateway(settings, url, producer, client)
        finally:
            await producer.stop()
            stop.set()
            await asyncio.wait_for(task, 30)
            await delete_topics(settings.kafka_bootstrap_servers, settings.topic_prefix)
            cleanup = create_mongo_client(settings.mongo_url.get_secret_value())
            await cleanup.drop_database(settings.database_name())
            await cleanup.close()


@contextlib.asynccontextmanager
async def serving_with_log(settings: Settings, log_path: Path) -> AsyncIterator[str]:
    """The gateway of `settings` run in-process, its logs (DEBUG) in `log_path`; yields its URL once ready."""
    from proxymage_shared.logging import configure_logging

    url = f"http://127.0.0.1:{settings.health_port}"
    with log_path.open("w") as log_file:
        configure_logging(settings.service_name, "DEBUG", stream=log_file)
        stop = asyncio.Event()
        running = asyncio.create_task(run_service(build(settings), stop))

        async def ready() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{url}/readyz", timeout=2)).status_code == 200
            except httpx.TransportError:
                return False

        try:
            await eventually(ready, 60, "the gateway to be ready")
            yield url
        finally:
            stop.set()
            await running
            configure_logging(settings.service_name, "INFO")


class GatewayThread:
    """The gateway in a thread with its own event loop, for synchronous clients (schemathesis, requests)."""

    def __init__(self, unique: str, **overrides: Any) -> None:
        import threading

        self._unique = unique
        self._overrides = overrides
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._main, name="gateway", daemon=True)

    def _main(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with running_gateway(self._unique, **self._overrides) as running:
                self.url = running.url
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(serve())
        except BaseException as error:
            self._error = error
            self._ready.set()

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        self._ready.wait(90)
        if self._error is not None or not self.url:
            raise RuntimeError("the gateway did not start") from self._error
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
