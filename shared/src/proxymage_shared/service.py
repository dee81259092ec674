"""The life of a service process: health server first, then Kafka and MongoDB, then wait for SIGTERM.

Dependencies may be down when a service starts (or go down later): the process stays up, `/readyz` says
why it is not ready, and start-up is retried with capped backoff. SIGTERM/SIGINT stop it cleanly: the
broker finishes (or gives back) in-flight messages, then connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient
from starlette.applications import Starlette

from proxymage_shared import mongo
from proxymage_shared.errors import describe
from proxymage_shared.health import HealthServer, ReadinessCheck, create_health_app
from proxymage_shared.kafka import GRACEFUL_SECONDS, create_broker, drain, ensure_topics
from proxymage_shared.logging import configure_logging, get_logger
from proxymage_shared.retry import RetryPolicy
from proxymage_shared.settings import ServiceSettings, load_settings
from proxymage_shared.topics import topic_specs

log = get_logger(__name__)
S = TypeVar("S", bound=ServiceSettings)

Hook = Callable[[], Awaitable[None]]
# Until its dependencies answer, a service keeps trying to start (retry.py, step 2 without a limit).
START_RETRY = RetryPolicy(max_attempts=0, base_seconds=0.5, max_seconds=10.0)


@dataclass
class Service:
    """What a composition root hands to `run_service`."""

    settings: ServiceSettings
    broker: KafkaBroker
    mongo_client: AsyncMongoClient[mongo.Document]
    readiness_checks: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    # Run once Kafka and MongoDB are reachable (e.g. create indexes); retried with the connection.
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    # Long-running loops started once the service is up (e.g. durable retries), cancelled at stop.
    background: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = field(default_factory=list)
    create_topics: bool = True
    # Serve more than health on the HTTP port: given the health app, return the app to serve
    # (the gateway mounts its REST API, SSE and console beside /healthz, /readyz and /metrics).
    http_app: Callable[[Starlette], Starlette] | None = None


def build_service(
    settings: ServiceSettings,
    *,
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    on_start: list[Hook] | None = None,
    on_stop: list[Hook] | None = None,
    background: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] | None = None,
) -> Service:
    """The parts every service has: a Kafka broker and its MongoDB client (not connected yet)."""
    client, _ = mongo.service_database(settings)
    return Service(
        settings=settings,
        broker=create_broker(settings),
        mongo_client=client,
        readiness_checks=dict(readiness_checks or {}),
        on_start=list(on_start or []),
        on_stop=list(on_stop or []),
        background=list(background or []),
    )


def periodic(
    name: str, action: Callable[[], Awaitable[object]], interval_seconds: float
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A `Service.background` loop: runs `action` every `interval_seconds` until stop. A failing round (e.g.
    MongoDB down) is logged as `<name>_failed` and the loop goes on with the next round."""

    async def loop(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await action()
            except Exception as error:
                # The error's type only: a message may quote stored data (a patient's name, say).
                log.warning(f"{name}_failed", error=describe(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)

    return loop


async def _broker_ready(broker: KafkaBroker) -> bool:
    return await broker.ping(timeout=1.5)


async def _start_dependencies(service: Service) -> None:
    settings = service.settings
    if service.create_topics and settings.create_topics_at_start:
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            topic_specs(settings.topic_partitions, prefix=settings.topic_prefix),
            replication_factor=settings.topic_replication_factor,
            security=settings.kafka_security,
        )
    if not await mongo.ping(service.mongo_client):
        raise ConnectionError("MongoDB does not answer")
    for hook in service.on_start:
        await hook()
    await service.broker.start()


async def run_service(service: Service, stop: asyncio.Event | None = None) -> None:
    """Runs until `stop` is set or the process gets SIGTERM/SIGINT."""
    settings = service.settings
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    checks: dict[str, ReadinessCheck] = {
        "kafka": lambda: _broker_ready(service.broker),
        "mongo": lambda: mongo.ping(service.mongo_client),
        **service.readiness_checks,
    }
    app = create_health_app(settings.service_name, checks)
    if service.http_app is not None:
        app = service.http_app(app)
    health = HealthServer(app, settings.health_host, settings.health_port)
    await health.start()
    log.info("health_listening", host=settings.health_host, port=health.port)

    started = False
    tasks: list[asyncio.Task[None]] = []
    try:
        attempt = 1
        while not stop.is_set():
            began = time.monotonic()
            try:
                await _start_dependencies(service)
            except Exception as error:
                delay = START_RETRY.delay(attempt)
                log.warning("start_retry", error=describe(error), retry_in=round(delay, 3))
                with contextlib.suppress(Exception):
                    await service.broker.stop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                attempt += 1
            else:
                started = True
                tasks = [asyncio.create_task(loop_(stop)) for loop_ in service.background]
                log.info("started", seconds=round(time.monotonic() - began, 3))
                break
        await stop.wait()
        log.info("stopping")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if started:
            await drain(service.broker, GRACEFUL_SECONDS)
            await service.broker.stop()
        for hook in service.on_stop:
            with contextlib.suppress(Exception):
                await hook()
        await service.mongo_client.close()
        await health.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        log.info("stopped")


def main(build: Callable[[S], Service], settings_type: type[S]) -> None:
    """A service's process: its settings from the environment, logging, then `run_service` until SIGTERM."""
    settings = load_settings(settings_type)
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    asyncio.run(run_service(build(settings)))
