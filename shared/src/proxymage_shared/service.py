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
from proxymage_shared.dependency_log import Outages
from proxymage_shared.errors import describe
from proxymage_shared.health import CHECK_TIMEOUT_SECONDS, HealthServer, ReadinessCheck, create_health_app
from proxymage_shared.kafka import GRACEFUL_SECONDS, create_broker, drain, ensure_topics
from proxymage_shared.logging import OUTAGES, configure_logging, get_logger
from proxymage_shared.retry import RetryPolicy, retry_in_place
from proxymage_shared.settings import ServiceSettings, load_settings
from proxymage_shared.topics import topic_specs

log = get_logger(__name__)
S = TypeVar("S", bound=ServiceSettings)

Hook = Callable[[], Awaitable[None]]
# Until its dependencies answer, a service keeps trying to start (retry.py, step 2 without a limit).
START_RETRY = RetryPolicy(max_attempts=0)
# How often a dependency that is down is checked again, to log its return.
OUTAGE_CHECK_SECONDS = 5.0


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
    name: str,
    action: Callable[[], Awaitable[object]],
    interval_seconds: float,
    outages: Outages = OUTAGES,
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A `Service.background` loop: runs `action` every `interval_seconds` until stop. Failing rounds (e.g.
    MongoDB down) are an outage named `name` (logged once, then reminded) and the loop goes on."""

    async def loop(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await action()
            except Exception as error:
                # The error's type only: a message may quote stored data (a patient's name, say).
                outages.down(name, describe(error))
            else:
                outages.up(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_seconds)

    return loop


async def _broker_ready(broker: KafkaBroker) -> bool:
    return await broker.ping(timeout=1.5)


async def _start_dependencies(service: Service) -> None:
    settings = service.settings
    if service.create_topics and settings.create_topics_at_start:
        await _reaching(
            "kafka",
            ensure_topics(
                settings.kafka_bootstrap_servers,
                topic_specs(settings.topic_partitions, prefix=settings.topic_prefix),
                replication_factor=settings.topic_replication_factor,
                security=settings.kafka_security,
            ),
        )
    if not await mongo.ping(service.mongo_client):
        raise _StartStepError("mongo", ConnectionError("MongoDB does not answer"))
    for hook in service.on_start:
        await _reaching("mongo", hook())  # the start hooks prepare the service's database (indexes)
    await _reaching("kafka", service.broker.start())


class _StartStepError(Exception):
    """A start-up step failed: which dependency it needed, and the error."""

    def __init__(self, dependency: str, error: BaseException) -> None:
        super().__init__(dependency)
        self.dependency = dependency
        self.error = error


async def _reaching(dependency: str, step: Awaitable[object]) -> None:
    try:
        await step
    except Exception as error:
        raise _StartStepError(dependency, error) from error


def _reporting(name: str, check: ReadinessCheck, outages: Outages, started: asyncio.Event) -> ReadinessCheck:
    """A readiness check whose outcome, once the service has started, starts or ends the outage of `name` (before,
    the broker is not started whatever Kafka's state, and the start-up loop reports what fails)."""

    async def reported() -> bool:
        try:
            ok = await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        except Exception as error:
            if started.is_set():
                outages.down(name, describe(error))
            raise
        if started.is_set():
            outages.report(name, ok, "not ready")
        return ok

    return reported


async def _watch_outages(
    checks: Mapping[str, ReadinessCheck], outages: Outages, stop: asyncio.Event, interval_seconds: float
) -> None:
    """While an outage lasts, runs its readiness check every `interval_seconds`, so that its end is logged even
    when nothing probes `/readyz`. An outage that has no check of its own (one that library records revealed,
    e.g. `pacs`, or a background loop's) ends when the service is ready again, or when its own loop succeeds."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_seconds)
        down = outages.down_names()
        # A check reports its own outcome (`_reporting`); every check runs only when an outage has none.
        names = list(checks) if any(name not in checks for name in down) else down
        results = await asyncio.gather(*(_check(checks[name]) for name in names))
        if names == list(checks) and all(results):
            for name in down:
                outages.up(name)


async def _check(check: ReadinessCheck) -> bool:
    try:
        return await check()
    except Exception:
        return False


async def _start_until_stopped(service: Service, stop: asyncio.Event, outages: Outages) -> float | None:
    """Starts Kafka, MongoDB and the start hooks, retried in place without a limit (`START_RETRY`) until they
    are up (the seconds the successful try took) or `stop` is set (None). A failed try leaves no half-started
    broker."""

    async def start() -> float | None:
        if stop.is_set():
            return None
        began = time.monotonic()
        try:
            await _start_dependencies(service)
        except Exception:
            with contextlib.suppress(Exception):
                await service.broker.stop()
            raise
        return time.monotonic() - began

    def note_retry(attempt: int, error: BaseException, delay: float) -> None:
        if isinstance(error, _StartStepError):
            dependency, cause = error.dependency, error.error
        else:
            dependency, cause = "start", error
        outages.down(dependency, describe(cause))
        log.debug("start_retry", dependency=dependency, error=describe(cause), retry_in=round(delay, 3))

    async def until_stopped(delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    return await retry_in_place(start, START_RETRY, retry_on=(Exception,), on_retry=note_retry, sleep=until_stopped)


async def run_service(
    service: Service,
    stop: asyncio.Event | None = None,
    *,
    outages: Outages = OUTAGES,
    outage_check_seconds: float = OUTAGE_CHECK_SECONDS,
) -> None:
    """Runs until `stop` is set or the process gets SIGTERM/SIGINT."""
    settings = service.settings
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    plain_checks: dict[str, ReadinessCheck] = {
        "kafka": lambda: _broker_ready(service.broker),
        "mongo": lambda: mongo.ping(service.mongo_client),
        **service.readiness_checks,
    }
    running = asyncio.Event()
    checks = {name: _reporting(name, check, outages, running) for name, check in plain_checks.items()}
    app = create_health_app(settings.service_name, checks)
    if service.http_app is not None:
        app = service.http_app(app)
    health = HealthServer(app, settings.health_host, settings.health_port)
    await health.start()
    log.info("health_listening", host=settings.health_host, port=health.port)

    started = False
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(_watch_outages(checks, outages, stop, outage_check_seconds))]
    try:
        seconds = await _start_until_stopped(service, stop, outages)
        if seconds is not None:
            started = True
            running.set()
            for name in ("kafka", "mongo", "start"):
                outages.up(name)
            tasks += [asyncio.create_task(loop_(stop)) for loop_ in service.background]
            log.info("started", seconds=round(seconds, 3))
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
    configure_logging(settings.service_name, settings.log_level, settings.log_json, levels=settings.log_levels)
    asyncio.run(run_service(build(settings)))
