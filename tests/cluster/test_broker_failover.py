"""A Kafka broker stopped (SIGTERM) or killed (SIGKILL) in the middle of a steady flow, then restarted, costs the
services no effect and doubles none (issue 14 point 6).

The cluster is deploy/local/kafka-cluster.sh's: 3 KRaft nodes, every topic replicated 3 times, writes
acknowledged by all in-sync replicas (acks=all) of which there must be 2 (min.insync.replicas). The service is
the identity-matcher, run in this process against the cluster and the local stack's FerretDB, with its
production settings (handler retries, timeouts). Its effect is the easiest to verify: each enrolled event
without consent is answered by exactly one `identity.resolved` (`no_consent`, no PACS involved) and recorded
in its database with a resolution counter. See effects.py for what "lost" and "duplicated" mean.

The flow: FLOW_EVENTS enrolments at RATE_PER_SECOND; when the STOP_AT_EVENT-th is due, the broker leading the
most partitions of the test's topics is stopped, then started again at once, while the flow goes on. The test
then waits until everything is handled and the restarted broker is back in every ISR, and checks:
- every enrolment sent (acknowledged by the cluster) has exactly one outcome event id on the output topic,
  and its stored enrolment says `no_consent` with `resolutions == 1` and that outcome's id: 0 lost, 0 doubled;
- nothing was dead-lettered;
- the flow never stands still (no outcome arriving) longer than FAILOVER_STALL_BUDGET_SECONDS.
The figures (stop and restart times, the stall, end-to-end latencies send -> outcome received before and during
the failover, redeliveries) are printed: `make cluster-test` shows them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from identity_matcher.app import build
from identity_matcher.settings import Settings
from proxymage_dev.pytest_plugin import free_port
from proxymage_dev.testing import eventually
from proxymage_shared import topics
from proxymage_shared.events import IdentityResolved, Patient, PatientEnrolled, Person
from proxymage_shared.logging import configure_logging
from proxymage_shared.service import run_service
from proxymage_shared.settings import load_settings
from pymongo import AsyncMongoClient

from .conftest import ROOT, KafkaCluster
from .effects import Effects, account, latencies, percentile

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

FLOW_EVENTS: Final = 300
RATE_PER_SECOND: Final = 20.0
STOP_AT_EVENT: Final = 100  # 5 s into the flow
WARM_UP_EVENTS: Final = 6
PARTITIONS: Final = 3
# The longest the flow may stand still (no new outcome at all). A killed broker stays in its partitions' ISR until
# the controller fences it (broker.session.timeout.ms, 6 s in kafka-cluster.sh): acks=all writes to those
# partitions wait that long, then clients refresh their metadata. A stopped broker hands its leaderships over
# first (controlled shutdown): well under a second. Latencies themselves are reported, not bounded: past the
# stall they are the backlog the service drains, i.e. the machine's load (p50 48 ms before the stop on a quiet
# machine, 1.9 s at a load average of 25 on 2 cores).
FAILOVER_STALL_BUDGET_SECONDS: Final = 15.0


@dataclass
class Flow:
    """What the test sent and received, with monotonic times."""

    sent_at: dict[str, float] = field(default_factory=dict)  # input event id -> send time
    received_at: dict[str, float] = field(default_factory=dict)  # input event id -> first outcome's arrival
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (input event id, outcome event id), copies too
    statuses: Counter[str] = field(default_factory=Counter)

    def on_outcome(self, record: ConsumerRecord[bytes, bytes]) -> None:
        assert record.value is not None
        outcome = IdentityResolved.model_validate_json(record.value)
        source = str(outcome.source_event_id)
        self.received_at.setdefault(source, time.monotonic())
        self.outcomes.append((source, str(outcome.event_id)))
        self.statuses[outcome.status] += 1


@dataclass
class Failover:
    """Monotonic times of the broker's stop and restart."""

    node: int
    signal: str
    stop_sent: float = 0.0
    stopped: float = 0.0
    restarted: float = 0.0


def _enrolled(enrolment_id: str) -> PatientEnrolled:
    return PatientEnrolled.model_validate(
        {
            "event_id": uuid.uuid4(),
            "occurred_at": dt.datetime.now(dt.UTC),
            "enrolment_id": enrolment_id,
            "meeting_id": "m-2026-12-02-orl",
            "rcp_id": "rcp-orl-fictif",
            "meeting_title": "RCP ORL fictive",
            "meeting_date": dt.date(2026, 12, 2),
            "centre": "3C fictif",
            "patient": Patient(
                birth_name="FAILOVER-FICTIF",
                used_name=None,
                first_name="Essai",
                birth_date=dt.date(1970, 1, 1),
                sex="F",
            ),
            # Answered `no_consent` without any PACS request: the effect is on Kafka and MongoDB only.
            "consent": False,
            "requested_by": Person(name="Dr Paul FICTIF"),
        },
        strict=False,
    )


async def _partitions(admin: AIOKafkaAdminClient, names: list[str]) -> list[dict[str, Any]]:
    described = await admin.describe_topics(names)
    assert all(topic["error_code"] == 0 for topic in described), described
    return [partition for topic in described for partition in topic["partitions"]]


async def _busiest_leader(admin: AIOKafkaAdminClient, names: list[str]) -> tuple[int, int]:
    """The broker leading the most partitions of `names` (the lowest id on a tie), and how many it leads."""
    leaders = Counter(partition["leader"] for partition in await _partitions(admin, names))
    node, count = min(leaders.items(), key=lambda item: (-item[1], item[0]))
    return int(node), count


async def _fully_replicated(admin: AIOKafkaAdminClient, names: list[str], size: int) -> bool:
    return all(len(partition["isr"]) == size for partition in await _partitions(admin, names))


async def _topic_config(admin: AIOKafkaAdminClient, name: str, keys: list[str]) -> dict[str, str]:
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(keys))])
    [resource] = response.to_object()["resources"]
    return {entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]}


async def _create_topics(cluster: KafkaCluster, prefix: str) -> None:
    """Through the operator's command, as the Helm chart's Job does: `proxymage topics --replication-factor 3`."""
    process = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "proxymage"),
        "topics",
        "--replication-factor",
        str(cluster.size),
        "--partitions",
        str(PARTITIONS),
        "--prefix",
        prefix,
        env={
            "PATH": "/usr/bin:/bin",
            "PROXYMAGE_ENV_FILE": str(ROOT / "deploy" / "local" / "local.env"),
            "PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()


@pytest.fixture
async def admin(kafka_cluster: KafkaCluster) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap_servers, request_timeout_ms=15_000)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("verb", ["stop-broker", "kill-broker"], ids=["sigterm", "sigkill"])
async def test_a_broker_stopped_mid_flow_loses_and_duplicates_no_effect(
    kafka_cluster: KafkaCluster, admin: AIOKafkaAdminClient, verb: str, tmp_path: Path
) -> None:
    unique = uuid.uuid4().hex[:10]
    prefix = f"cl-{unique}."
    settings = load_settings(
        Settings,
        kafka_bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=prefix,
        topic_partitions=PARTITIONS,
        topic_replication_factor=kafka_cluster.size,
        mongo_database=f"cl_identity_{unique}",
        health_port=free_port(),
    )
    inbound = settings.topic(topics.PATIENT_ENROLLED)
    outbound = settings.topic(topics.IDENTITY_RESOLVED)
    flow_topics = [inbound, outbound, topics.dead_letter_topic(inbound)]
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url.get_secret_value())
    log_path = tmp_path / "identity-matcher.log"
    try:
        await _create_topics(kafka_cluster, prefix)
        for partition in await _partitions(admin, flow_topics):
            assert len(partition["replicas"]) == kafka_cluster.size, partition
            assert len(partition["isr"]) == kafka_cluster.size, partition
        assert await _topic_config(admin, inbound, ["min.insync.replicas", "unclean.leader.election.enable"]) == {
            "min.insync.replicas": "2",
            "unclean.leader.election.enable": "false",
        }
        with log_path.open("w") as log_file:
            configure_logging(settings.service_name, "INFO", stream=log_file)
            try:
                report = await _run_flow(kafka_cluster, admin, settings, verb, mongo)
            finally:
                configure_logging(settings.service_name, "INFO")  # away from the file closed next
        print("cluster failover:", json.dumps(report, indent=1))  # the figures `make cluster-test` shows
    finally:
        await mongo.drop_database(settings.database_name())
        await mongo.close()
        doomed = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)


async def _run_flow(
    cluster: KafkaCluster,
    admin: AIOKafkaAdminClient,
    settings: Settings,
    verb: str,
    mongo: AsyncMongoClient[dict[str, Any]],
) -> dict[str, Any]:
    inbound = settings.topic(topics.PATIENT_ENROLLED)
    outbound = settings.topic(topics.IDENTITY_RESOLVED)
    dead_letters = topics.dead_letter_topic(inbound)
    flow = Flow()
    stop = asyncio.Event()
    running = asyncio.create_task(run_service(build(settings), stop))
    producer = AIOKafkaProducer(
        bootstrap_servers=cluster.bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=0
    )
    consumer = AIOKafkaConsumer(outbound, bootstrap_servers=cluster.bootstrap_servers, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    reader = asyncio.create_task(_read(consumer, flow))
    try:

        async def send(event: PatientEnrolled) -> asyncio.Future[Any]:
            flow.sent_at[str(event.event_id)] = time.monotonic()
            return await producer.send(inbound, event.to_kafka_value(), key=event.enrolment_id.encode())

        # Warm-up: the service is consuming every partition, and the output topic is read, before the clock starts.
        unique = settings.topic_prefix.strip(".")
        warm_up = [_enrolled(f"enr-{unique}-warm-{i}") for i in range(WARM_UP_EVENTS)]
        await asyncio.gather(*[await send(event) for event in warm_up])

        async def warmed_up() -> bool:
            assert not running.done(), "the identity-matcher stopped"
            assert not reader.done(), "the outcomes' reader stopped"
            return all(str(event.event_id) in flow.received_at for event in warm_up)

        await eventually(warmed_up, 90, "the warm-up enrolments' outcomes")

        node, led = await _busiest_leader(admin, [inbound, outbound])
        failover = Failover(node, "SIGTERM" if verb == "stop-broker" else "SIGKILL")

        async def fail_over() -> None:
            failover.stop_sent = time.monotonic()
            await cluster.run(verb, str(node))
            failover.stopped = time.monotonic()
            await cluster.run("start-broker", str(node))
            failover.restarted = time.monotonic()

        events = [_enrolled(f"enr-{unique}-{i:04d}") for i in range(FLOW_EVENTS)]
        acknowledgements: list[asyncio.Future[Any]] = []
        started = time.monotonic()
        failing_over: asyncio.Task[None] | None = None
        for index, event in enumerate(events):
            await asyncio.sleep(max(0.0, started + index / RATE_PER_SECOND - time.monotonic()))
            if index == STOP_AT_EVENT:
                failing_over = asyncio.create_task(fail_over())
            acknowledgements.append(await send(event))
        flow_sent = time.monotonic()
        # Every enrolment is acknowledged by the cluster (acks=all): what follows is the service's doing.
        await asyncio.gather(*acknowledgements)
        assert failing_over is not None
        await failing_over

        sent_ids = [str(event.event_id) for event in events]

        async def all_answered() -> bool:
            assert not running.done(), "the identity-matcher stopped"
            assert not reader.done(), "the outcomes' reader stopped"
            return all(event_id in flow.received_at for event_id in sent_ids)

        await eventually(all_answered, 180, "an outcome for every enrolment of the flow")
        # Quiet: the service committed every enrolment and the test read every outcome; a late duplicate would
        # have been published before its enrolment's commit, so it is in `flow.outcomes` by now.
        group = f"{settings.consumer_group()}.{topics.PATIENT_ENROLLED}"
        await eventually(lambda: _caught_up(admin, consumer, group, inbound, outbound), 120, "commits and reads")
        await eventually(
            lambda: _fully_replicated(admin, [inbound, outbound, dead_letters], cluster.size),
            120,
            f"broker {node} back in every ISR",
        )
        replicated = time.monotonic()

        all_ids = [str(event.event_id) for event in warm_up] + sent_ids
        effects = account(all_ids, flow.outcomes)
        stored = await _stored(mongo, settings)
        dead_lettered = sum((await consumer.end_offsets(await _partitions_of(admin, dead_letters))).values())
    finally:
        reader.cancel()
        await consumer.stop()
        await producer.stop()
        stop.set()
        await running

    report = _report(flow, failover, led, effects, sent_ids, started, flow_sent, replicated)
    report["dead_lettered"] = dead_lettered
    assert effects.lost == (), f"{len(effects.lost)} enrolment(s) without outcome: {report}"
    assert effects.duplicated == (), f"{len(effects.duplicated)} enrolment(s) resolved twice: {report}"
    assert effects.unexpected == (), report
    assert set(flow.statuses) == {"no_consent"}, flow.statuses
    assert dead_lettered == 0, report
    # The service's own record of each effect: one resolution each, pointing at the outcome that was published.
    published = {source: outcome for source, outcome in flow.outcomes}
    assert len(stored) == len(all_ids), f"{len(stored)} stored enrolments for {len(all_ids)} sent"
    wrong = [
        document["_id"]
        for document in stored
        if document["status"] != "no_consent"
        or document["resolutions"] != 1
        or document["outcome_event_id"] != published.get(document["event_id"])
    ]
    assert wrong == [], f"{len(wrong)} enrolment(s) recorded wrongly, e.g. {wrong[:3]}"
    assert report["longest_stall_s"] < FAILOVER_STALL_BUDGET_SECONDS, report
    return report


async def _read(consumer: AIOKafkaConsumer, flow: Flow) -> None:
    async for record in consumer:
        flow.on_outcome(record)


async def _partitions_of(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    return sorted(TopicPartition(topic, partition["partition"]) for partition in await _partitions(admin, [topic]))


async def _caught_up(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group: str, inbound: str, outbound: str
) -> bool:
    inbound_partitions = await _partitions_of(admin, inbound)
    ends = await consumer.end_offsets(inbound_partitions)
    committed = await admin.list_consumer_group_offsets(group, partitions=inbound_partitions)
    if any(committed.get(tp) is None or committed[tp].offset < end for tp, end in ends.items()):
        return False
    outbound_ends = await consumer.end_offsets(await _partitions_of(admin, outbound))
    positions = {tp: await consumer.position(tp) for tp in outbound_ends}
    return all(positions[tp] >= end for tp, end in outbound_ends.items())


async def _stored(mongo: AsyncMongoClient[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    enrolments = mongo[settings.database_name()]["enrolments"]
    fields = {"status": 1, "resolutions": 1, "outcome_event_id": 1, "event_id": 1}
    return [document async for document in enrolments.find({}, fields)]


def _report(
    flow: Flow,
    failover: Failover,
    led: int,
    effects: Effects,
    sent_ids: list[str],
    started: float,
    flow_sent: float,
    replicated: float,
) -> dict[str, Any]:
    delays = latencies({event_id: flow.sent_at[event_id] for event_id in sent_ids}, flow.received_at)
    before = [delay for event_id, delay in delays.items() if flow.sent_at[event_id] < failover.stop_sent]
    during = [
        delay for event_id, delay in delays.items() if failover.stop_sent <= flow.sent_at[event_id] < failover.restarted
    ]

    def since_start(moment: float) -> float:
        return round(moment - started, 2)

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "count": len(values),
            "p50": round(percentile(values, 0.5), 3),
            "p95": round(percentile(values, 0.95), 3),
            "max": round(max(values, default=float("nan")), 3),
        }

    return {
        "broker": failover.node,
        "signal": failover.signal,
        "partitions_it_led": led,
        "events": len(sent_ids),
        "stop_sent_at_s": since_start(failover.stop_sent),
        "broker_gone_after_s": round(failover.stopped - failover.stop_sent, 2),
        "broker_back_at_s": since_start(failover.restarted),
        "flow_sent_at_s": since_start(flow_sent),
        "last_outcome_at_s": since_start(max(flow.received_at[event_id] for event_id in delays)),
        # The longest time without any new outcome once the flow started: how long the pipeline stood still.
        "longest_stall_s": round(_longest_gap(sorted(flow.received_at[event_id] for event_id in delays), started), 2),
        "all_isr_full_at_s": since_start(replicated),
        "latency_s": stats(list(delays.values())),
        "latency_before_stop_s": stats(before),
        "latency_during_failover_s": stats(during),
        # The worst latency of the events sent in each second of the flow: where the failover hurt, and how long.
        "max_latency_by_send_second": _by_second(delays, flow.sent_at, started),
        "lost": len(effects.lost),
        "duplicated": len(effects.duplicated),
        "redelivered_copies": effects.redelivered,
    }


def _by_second(delays: dict[str, float], sent_at: dict[str, float], started: float) -> list[float]:
    worst: dict[int, float] = {}
    for event_id, delay in delays.items():
        second = int(sent_at[event_id] - started)
        worst[second] = max(worst.get(second, 0.0), delay)
    return [round(worst.get(second, 0.0), 2) for second in range(max(worst, default=-1) + 1)]


def _longest_gap(moments: list[float], start: float) -> float:
    return max((later - earlier for earlier, later in zip([start, *moments], moments, strict=False)), default=0.0)
