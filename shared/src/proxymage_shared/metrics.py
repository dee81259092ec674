"""Prometheus metrics shared by every service (ARCHITECTURE.md "Configuration, logs, health")."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

EVENTS_HANDLED: Final = Counter(
    "proxymage_events_handled_total",
    "Kafka messages handled, by topic and outcome (ok, dead_lettered).",
    ["topic", "outcome"],
)
HANDLER_RETRIES: Final = Counter(
    "proxymage_handler_retries_total",
    "Transient handler failures retried in place, by topic.",
    ["topic"],
)
DEAD_LETTERS: Final = Counter(
    "proxymage_dead_letters_total",
    "Messages sent to a dead-letter topic, by original topic and reason kind.",
    ["topic", "kind"],
)
HANDLER_SECONDS: Final = Histogram(
    "proxymage_handler_seconds",
    "Time spent handling one Kafka message, by topic.",
    ["topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DICOM_REQUESTS: Final = Counter(
    "proxymage_dicom_requests_total",
    "DICOM requests sent, by peer AE title, operation (C-ECHO, C-FIND, C-MOVE) and outcome.",
    ["peer", "operation", "outcome"],
)
DICOM_SECONDS: Final = Histogram(
    "proxymage_dicom_request_seconds",
    "Duration of one DICOM request (association included), by peer and operation.",
    ["peer", "operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
DICOM_SLOT_WAIT_SECONDS: Final = Histogram(
    "proxymage_dicom_slot_wait_seconds",
    "Time waited for a slot of the peer's association budget (shared by every Proxymage process), by peer.",
    ["peer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
