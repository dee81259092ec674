"""Kafka through FastStream: the broker factory, at-least-once consumers and the dead-letter helper.

Processing semantics (ARCHITECTURE.md):
- the offset is committed only after the handler's effects are durable: subscribers use
  `AckPolicy.NACK_ON_ERROR` (commit after success; on an unexpected exception, seek back so the message is
  delivered again) and never auto-commit;
- a message that is not a valid event, raises `PermanentError`, or keeps failing after bounded retries is
  published, original bytes and key unchanged, to `<topic>.dlq` with headers naming the reason, the
  original topic/partition/offset and the service; then its offset is committed. One poison message never
  blocks a partition.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream import AckPolicy, StreamMessage
from faststream._internal.endpoint.subscriber.utils import MultiLock
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import ValidationError

from proxymage_shared import metrics
from proxymage_shared.errors import PermanentError, describe, validation_details
from proxymage_shared.events import Event
from proxymage_shared.logging import OUTAGES, get_logger
from proxymage_shared.retry import RetryPolicy, retry_in_place
from proxymage_shared.settings import KafkaSecurity, ServiceSettings
from proxymage_shared.topics import TopicSpec, dead_letter_topic

log = get_logger(__name__)

# How long a stopping service waits for the messages in flight (handler and offset commit).
GRACEFUL_SECONDS: Final = 10.0

E = TypeVar("E", bound=Event)

# Dead-letter headers (strings; Kafka stores them as UTF-8 bytes).
DLQ_REASON: Final = "x-dlq-reason"
DLQ_KIND: Final = "x-dlq-kind"
DLQ_TOPIC: Final = "x-dlq-original-topic"
DLQ_PARTITION: Final = "x-dlq-original-partition"
DLQ_OFFSET: Final = "x-dlq-original-offset"
DLQ_SERVICE: Final = "x-dlq-service"
DLQ_AT: Final = "x-dlq-at"
MAX_REASON_LENGTH: Final = 2000


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a consumed message came from."""

    topic: str
    partition: int
    offset: int
    key: str | None


Handler = Callable[[E, Delivery], Awaitable[None]]


def _security(settings: KafkaSecurity) -> BaseSecurity | None:
    if settings.protocol == "PLAINTEXT":
        return None
    use_ssl = settings.protocol in ("SSL", "SASL_SSL")
    context: ssl.SSLContext | None = None
    if use_ssl:
        context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.ssl_certfile:
            context.load_cert_chain(
                str(settings.ssl_certfile), str(settings.ssl_keyfile) if settings.ssl_keyfile else None
            )
    if settings.protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    username = settings.sasl_username or ""
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    mechanism = sasl[settings.sasl_mechanism or "PLAIN"]
    return mechanism(username=username, password=password, ssl_context=context, use_ssl=use_ssl)


def bootstrap_servers(value: str) -> list[str]:
    """`host:port,host:port,...` (PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS) as a list of servers.

    aiokafka's clients split such a string themselves, but FastStream's `KafkaBroker` takes a string for one
    server and wraps it in a list: a cluster's comma-separated list reached aiokafka as one host it could not
    resolve ("Unable to bootstrap"), so a service could not start against more than one broker.
    """
    return [server.strip() for server in value.split(",") if server.strip()]


# aiokafka's idempotent producer can be left failing every send with OutOfOrderSequenceNumber after the broker
# restarts (aiokafka#1017; seen by `make chaos`: the identity-matcher published nothing more until restarted).
# Without it, aiokafka still sends one batch per partition at a time (order kept); a retry after a lost
# acknowledgement may write an event twice, which every consumer ignores (same event_id, conditional writes).
PRODUCER_IDEMPOTENCE: Final = False


def create_broker(settings: ServiceSettings, **overrides: Any) -> KafkaBroker:
    """A broker whose producer waits for all in-sync replicas and never creates topics implicitly."""
    options: dict[str, Any] = {
        "client_id": f"proxymage-{settings.service_name}",
        "acks": "all",
        "enable_idempotence": PRODUCER_IDEMPOTENCE,
        "allow_auto_create_topics": False,
        "security": _security(settings.kafka_security),
        "graceful_timeout": GRACEFUL_SECONDS,
        "request_timeout_ms": 15_000,
        # FastStream logs every message received/processed at INFO with its own handler: route it through
        # our JSON logging instead, at DEBUG.
        "logger": logging.getLogger("faststream.proxymage"),
        "log_level": logging.DEBUG,
    }
    options.update(overrides)
    return KafkaBroker(bootstrap_servers(settings.kafka_bootstrap_servers), **options)


def validation_reason(error: ValidationError) -> str:
    """A dead-lettered event's validation error in words, without the offending values (errors.describe's rule)."""
    return f"invalid event: {validation_details(error)}"


async def dead_letter(
    broker: KafkaBroker,
    *,
    service: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    reason: str,
    kind: str,
    original_headers: dict[str, str] | None = None,
) -> None:
    """Publishes the original bytes to `<topic>.dlq` and waits for the broker's acknowledgement."""
    headers = dict(original_headers or {})
    headers.update(
        {
            DLQ_REASON: reason[:MAX_REASON_LENGTH],
            DLQ_KIND: kind,
            DLQ_TOPIC: topic,
            DLQ_PARTITION: str(partition),
            DLQ_OFFSET: str(offset),
            DLQ_SERVICE: service,
            DLQ_AT: dt.datetime.now(dt.UTC).isoformat(),
        }
    )
    await broker.publish(value, topic=dead_letter_topic(topic), key=key, headers=headers)
    metrics.DEAD_LETTERS.labels(topic, kind).inc()
    log.warning("dead_lettered", topic=topic, partition=partition, offset=offset, kind=kind, reason=reason)


def handler_retry_policy(settings: ServiceSettings) -> RetryPolicy:
    """The in-place retries of a failing handler (retry.py's step 2), from the service's settings."""
    return RetryPolicy(
        settings.handler_max_attempts,
        settings.handler_retry_base_seconds,
        settings.handler_retry_max_seconds,
    )


def kafka_unavailable(error: BaseException) -> bool:
    """A Kafka error that says the brokers (or a partition's leader) cannot be reached now: aiokafka marks those
    retriable (connection lost, leader not available, node not ready, request timed out...)."""
    return isinstance(error, KafkaError) and bool(getattr(error, "retriable", False))


def _decode_headers(raw: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw or ():
        if isinstance(value, bytes):
            headers[name] = value.decode("utf-8", errors="replace")
    return headers


async def _as_is(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """The subscribers' decoder: the message itself, which `subscribe`'s handler takes as its one argument.

    FastStream's own decoder would JSON-decode every body (the handler validates the bytes itself), and taking the
    message through FastStream's context (`KafkaMessage`) makes its dependency injection resolve the context in a
    worker thread for every message: a thread round trip (a few turns of the event loop) before each handler.
    """
    return message


def subscribe(
    broker: KafkaBroker,
    settings: ServiceSettings,
    topic: str,
    model: type[E],
    handler: Handler[E],
    *,
    retry: RetryPolicy | None = None,
    group_suffix: str = "",
    concurrency: int | None = None,
) -> None:
    """Registers `handler` for every valid `model` event on `topic` (already prefixed by the caller).

    The handler runs with at-least-once delivery: it must be idempotent (ARCHITECTURE.md). Invalid messages
    and permanent failures are dead-lettered at once; transient failures are retried in place up to
    `retry.max_attempts`, then dead-lettered. Only a failure to dead-letter (Kafka itself down) or
    cancellation leaves the offset uncommitted, so the message is delivered again.
    """
    policy = retry or handler_retry_policy(settings)
    group_id = f"{settings.consumer_group()}.{topic.removeprefix(settings.topic_prefix)}{group_suffix}"

    async def consume(message: Any) -> None:  # a StreamMessage (`_as_is`): `Any` so that nothing validates it
        assert isinstance(message, StreamMessage)
        record = message.raw_message
        assert not isinstance(record, tuple)  # batch consumers are not used here
        delivery = Delivery(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", errors="replace") if isinstance(record.key, bytes) else None,
        )
        body: bytes = message.body

        async def park(reason: str, kind: str) -> None:
            await dead_letter(
                broker,
                service=settings.service_name,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key if isinstance(record.key, bytes) else None,
                value=body,
                reason=reason,
                kind=kind,
                original_headers=_decode_headers(record.headers),
            )
            metrics.EVENTS_HANDLED.labels(topic, "dead_lettered").inc()

        try:
            event = model.model_validate_json(body)
        except ValidationError as error:
            await park(validation_reason(error), "invalid_event")
            return

        def note_retry(attempt: int, error: BaseException, delay: float) -> None:
            metrics.HANDLER_RETRIES.labels(topic).inc()
            if kafka_unavailable(error):
                # Every event in flight fails alike while the brokers are away: one outage, not a line each.
                OUTAGES.down("kafka", describe(error))
            else:
                log.warning(
                    "handler_retry", topic=topic, event_id=str(event.event_id), attempt=attempt, error=describe(error)
                )

        started = time.perf_counter()
        try:
            await retry_in_place(
                lambda: handler(event, delivery),
                policy,
                retry_on=(Exception,),
                never_on=(PermanentError,),
                on_retry=note_retry,
            )
        except PermanentError as error:
            await park(describe(error), "permanent_error")
        except Exception as error:
            await park(f"gave up after {policy.max_attempts} attempts: {describe(error)}", "retries_exhausted")
        else:
            metrics.EVENTS_HANDLED.labels(topic, "ok").inc()
            metrics.HANDLER_SECONDS.labels(topic).observe(time.perf_counter() - started)

    consume.__name__ = f"consume_{model.__name__}"
    broker.subscriber(
        topic,
        group_id=group_id,
        max_workers=concurrency or settings.consumer_concurrency,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        decoder=_as_is,
        title=f"{topic}:{settings.service_name}",
        description=(model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else None,
    )(consume)


async def drain(broker: KafkaBroker, timeout: float) -> None:
    """Stops taking new messages and waits (at most `timeout`) for those in flight, handler and offset commit
    included, before the broker closes its consumers.

    FastStream's concurrent manual-commit subscriber (what `subscribe` builds with `max_workers` > 1) closes
    its Kafka consumers first and waits for in-flight messages afterwards, so a message finishing during
    shutdown committed on a closed consumer (which then opened a connection nobody closed) and was delivered
    again at the next start. Doing the subscribers' own graceful wait first restores the intended order.
    """
    waits = []
    for subscriber in broker.subscribers:
        subscriber.running = False  # FastStream's consume loops stop fetching when this is False
        if isinstance(subscriber.lock, MultiLock):  # in-flight messages hold it until acknowledged
            waits.append(subscriber.lock.wait_release(timeout))
    await asyncio.gather(*waits)


async def publish_event(broker: KafkaBroker, topic: str, key: str, event: Event) -> None:
    """Publishes one event as UTF-8 JSON keyed by its business id, and waits for the acknowledgement."""
    await broker.publish(
        event.to_kafka_value(),
        topic=topic,
        key=key.encode(),
        headers={"content-type": "application/json", "x-event-type": type(event).__name__},
    )


def admin_security_options(settings: KafkaSecurity) -> dict[str, Any]:
    """The admin client's security options: aiokafka's client takes them as keyword arguments, not as
    FastStream's `BaseSecurity`; the same settings give both."""
    security = _security(settings)
    if security is None:
        return {}
    options: dict[str, Any] = {"security_protocol": settings.protocol, "ssl_context": security.ssl_context}
    if settings.protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.sasl_username or ""
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    return options


def all_partitions_led(described: list[Any], specs: list[TopicSpec]) -> bool:
    """Whether the metadata (`AIOKafkaAdminClient.describe_topics`) shows every topic of `specs` with at least its
    partitions, each with a leader."""
    by_name = {topic["topic"]: topic for topic in described if topic.get("error_code") == 0}
    for spec in specs:
        partitions = by_name.get(spec.name, {}).get("partitions", [])
        if len(partitions) < spec.partitions:
            return False
        if any(partition["error_code"] != 0 or partition["leader"] < 0 for partition in partitions):
            return False
    return True


async def ensure_topics(
    bootstrap_servers: str,
    specs: list[TopicSpec],
    *,
    replication_factor: int = 1,
    security: KafkaSecurity | None = None,
    timeout_ms: int = 15_000,
) -> list[str]:
    """Creates the topics that do not exist yet and returns their names. Idempotent."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=timeout_ms,
        **admin_security_options(security or KafkaSecurity()),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if not missing:
            return []
        new_topics = [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                topic_configs=spec.config(),
            )
            for spec in missing
        ]
        response = await admin.create_topics(new_topics, timeout_ms=timeout_ms)
        created: list[str] = []
        failures: list[str] = []
        for name, code, *rest in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:  # already there (a concurrent creator): fine
                failures.append(f"{name}: error {code} {rest[0] if rest else ''}".strip())
        if failures:
            raise RuntimeError("could not create topics: " + "; ".join(failures))
        # Creation is acknowledged before the metadata knows every partition's leader: wait until it does, so
        # that producers and consumers started next neither miss the topics nor meet NotLeaderForPartition.
        deadline = time.monotonic() + timeout_ms / 1000
        while not all_partitions_led(await admin.describe_topics([spec.name for spec in specs]), specs):
            if time.monotonic() > deadline:
                raise TimeoutError("topics created but their partitions have no leader yet in the cluster metadata")
            await asyncio.sleep(0.1)
        return created
    finally:
        await admin.close()
