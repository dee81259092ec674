"""Quiet logs while a dependency is down: the outage tracker (fake clock) and the filter of library records."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiokafka import errors as aiokafka_errors
from proxymage_shared.dependency_log import DependencyNoiseFilter, Outages
from proxymage_shared.kafka import kafka_unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Notice = tuple[int, str, dict[str, Any]]


def tracker(interval: float = 60.0) -> tuple[Outages, Clock, list[Notice]]:
    clock = Clock()
    notices: list[Notice] = []
    outages = Outages(
        lambda level, event, fields: notices.append((level, event, fields)), interval=interval, clock=clock
    )
    return outages, clock, notices


def test_one_warning_when_a_dependency_goes_down_then_silence_within_the_interval() -> None:
    outages, clock, notices = tracker()
    for _ in range(500):
        outages.down("kafka", "Unable connect to node with id 1")
        clock.now += 0.1  # 50 s in all
    assert notices == [
        (logging.WARNING, "dependency_down", {"dependency": "kafka", "error": "Unable connect to node with id 1"})
    ]
    assert outages.down_names() == ["kafka"]


def test_a_reminder_per_interval_counts_the_failures_since_the_last_notice() -> None:
    outages, clock, notices = tracker(interval=60.0)
    outages.down("mongo", "ServerSelectionTimeoutError")
    for _ in range(150):  # one failure a second for 150 s
        clock.now += 1.0
        outages.down("mongo", "ServerSelectionTimeoutError")
    reminders = [fields for _, event, fields in notices if event == "dependency_still_down"]
    assert [(r["down_seconds"], r["failures_since_last_notice"]) for r in reminders] == [(60.0, 60), (120.0, 60)]
    assert all(level == logging.WARNING for level, _, _ in notices)


def test_one_info_when_it_is_back_with_the_outage_duration_and_failures() -> None:
    outages, clock, notices = tracker()
    outages.down("mirc", "TimeoutError")
    clock.now += 30
    outages.down("mirc", "TimeoutError")
    clock.now += 12.5
    outages.up("mirc")
    outages.up("mirc")  # already up: nothing more
    assert notices[-1] == (logging.INFO, "dependency_up", {"dependency": "mirc", "down_seconds": 42.5, "failures": 2})
    assert len(notices) == 2
    assert outages.down_names() == []


def test_up_without_an_outage_logs_nothing_and_dependencies_are_independent() -> None:
    outages, _, notices = tracker()
    outages.up("kafka")
    outages.down("kafka", "x")
    outages.down("smtp", "y")
    outages.report("smtp", ok=True)
    assert [(event, fields["dependency"]) for _, event, fields in notices] == [
        ("dependency_down", "kafka"),
        ("dependency_down", "smtp"),
        ("dependency_up", "smtp"),
    ]


def test_a_long_error_is_cut() -> None:
    outages, _, notices = tracker()
    outages.down("kafka", "x" * 5000)
    assert len(notices[0][2]["error"]) == 300


def _record(name: str, level: int, msg: str, *args: object) -> logging.LogRecord:
    """A record as `logging.getLogger(name).log(level, msg, *args)` makes it (aiokafka formats lazily)."""
    return logging.getLogger(name).makeRecord(name, level, "client.py", 1, msg, args, None)


# The templates and arguments as aiokafka 0.14 and pynetdicom 3 log them (client.py, consumer/fetcher.py,
# consumer/group_coordinator.py, producer/sender.py, transport.py).
NOISE = [
    _record(
        "aiokafka", logging.ERROR, "Unable connect to node with id %s: %s", 1, ConnectionRefusedError(111, "refused")
    ),
    _record("aiokafka", logging.ERROR, "Unable to update metadata from %s", [1]),
    _record("aiokafka", logging.ERROR, 'Unable connect to "%s:%s": %s', "127.0.0.1", 19092, OSError("refused")),
    _record("aiokafka", logging.WARNING, 'Unable to request metadata from "%s:%s": %s', "127.0.0.1", 19092, "x"),
    _record("aiokafka.consumer.fetcher", logging.ERROR, "Failed fetch messages from %s: %s", 1, "NodeNotReadyError"),
    _record(
        "aiokafka.consumer.group_coordinator", logging.ERROR, "Group Coordinator Request failed: %s", "NodeNotReady"
    ),
    _record(
        "aiokafka.consumer.group_coordinator", logging.ERROR, "Heartbeat send request failed: %s. Will retry.", "x"
    ),
    _record(
        "aiokafka.consumer.group_coordinator",
        logging.WARNING,
        "Heartbeat failed for group %s: coordinator (node %s) is either not started or not valid",
        "proxymage.identity-matcher.dcc.patient-enrolled.v1",
        1,
    ),
    _record(
        "aiokafka.consumer.group_coordinator",
        logging.ERROR,
        "Error sending %s to node %s [%s] -- marking coordinator dead",
        "OffsetCommitRequest",
        1,
        "NodeNotReadyError",
    ),
    _record("aiokafka.producer.sender", logging.WARNING, "Cannot send %r to %s: %r", object, 1, "NodeNotReadyError"),
    _record("aiokafka.producer.sender", logging.WARNING, "Got error produce response: %s", "NodeNotReadyError"),
    _record(
        "aiokafka.producer.sender",
        logging.WARNING,
        "Got error produce response on topic-partition %s, retrying. Error: %s",
        "TopicPartition(topic='t', partition=0)",
        "NotLeaderForPartitionError",
    ),
    _record("pynetdicom.transport", logging.ERROR, "Association request failed: unable to connect to remote"),
    _record("pynetdicom.transport", logging.ERROR, "TCP Initialisation Error: [Errno 111] Connection refused"),
]


@pytest.mark.parametrize("record", NOISE, ids=lambda record: f"{record.name}:{str(record.msg)[:30]}")
def test_the_filter_collapses_a_library_connection_error_into_its_dependency_outage(record: logging.LogRecord) -> None:
    outages, _, notices = tracker()
    noise = DependencyNoiseFilter(outages)
    assert noise.filter(record) is False
    assert noise.filter(record) is False
    assert len(notices) == 1
    _, event, fields = notices[0]
    assert event == "dependency_down"
    assert fields["dependency"] == ("pacs" if record.name.startswith("pynetdicom") else "kafka")
    assert fields["error"] == record.getMessage()


@pytest.mark.parametrize(
    "record",
    [
        _record("aiokafka.consumer.group_coordinator", logging.INFO, "(Re-)joining group %s", "g"),
        _record("aiokafka.consumer.fetcher", logging.WARNING, "Not authorized to read from topic %s.", "t"),
        _record("aiokafkaish", logging.ERROR, "Unable connect to node with id %s: %s", 1, "x"),
        _record("faststream.proxymage", logging.ERROR, "Unable connect to node with id %s: %s", 1, "x"),
        _record("some.library", logging.ERROR, "Unable to update metadata from %s", [1]),
    ],
)
def test_the_filter_passes_other_records(record: logging.LogRecord) -> None:
    outages, _, notices = tracker()
    assert DependencyNoiseFilter(outages).filter(record) is True
    assert notices == []


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (aiokafka_errors.KafkaConnectionError("refused"), True),
        (aiokafka_errors.LeaderNotAvailableError(), True),
        (aiokafka_errors.NotLeaderForPartitionError(), True),
        (aiokafka_errors.RequestTimedOutError(), True),
        (aiokafka_errors.NodeNotReadyError(), True),
        (aiokafka_errors.MessageSizeTooLargeError(), False),  # ours to fix, not an outage: logged per event
        (ConnectionRefusedError(111, "refused"), False),  # MongoDB or a PACS: not Kafka's outage
        (ValueError("bad"), False),
    ],
    ids=lambda value: type(value).__name__,
)
def test_a_handler_retry_is_kafkas_outage_only_for_a_retriable_kafka_error(
    error: BaseException, unavailable: bool
) -> None:
    assert kafka_unavailable(error) is unavailable
