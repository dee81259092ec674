"""Quiet logs while a dependency is down: one warning when it goes, a reminder a minute, one info when it is back.

A client retrying an unreachable Kafka, MongoDB or PACS fails many times a second; logging each failure buried
everything else (12,000+ lines a minute per service with Kafka down). `Outages` turns the failures reported
for a dependency into three events:

    up --down()--> down: `dependency_down` (warning, the error)
    down --down()--> down: nothing, or `dependency_still_down` (warning) once `interval` has passed since the
                           last notice, with the failures counted since it
    down --up()--> up:     `dependency_up` (info, how long it was down and how many failures)
    up --up()--> up:       nothing

Dependencies are named as the readiness checks of `/readyz` (kafka, mongo, mirc, viewer, smtp) so that a check
that passes again can end the outage; a background loop that cannot tell which dependency failed names itself.

`DependencyNoiseFilter` applies it to the records libraries log for each failed attempt (aiokafka's connection
and metadata errors, pynetdicom's refused associations), which it recognises by logger and message template.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

DEFAULT_INTERVAL_SECONDS: Final = 60.0
MAX_ERROR_LENGTH: Final = 300


class Emit(Protocol):
    """Where the tracker's notices go: `(level, event, fields)`, e.g. a structlog logger's method."""

    def __call__(self, level: int, event: str, fields: dict[str, Any]) -> None: ...


@dataclass
class _Outage:
    since: float
    last_notice: float
    failures: int = 1  # all failures since `since`
    unreported: int = 0  # failures since the last notice


class Outages:
    """The up/down state of each named dependency and the notices its transitions deserve.

    Thread-safe: library records arrive from driver threads (pynetdicom runs in a thread pool)."""

    def __init__(
        self,
        emit: Emit,
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._interval = interval
        self._clock = clock
        self._down: dict[str, _Outage] = {}
        self._lock = threading.Lock()

    def down(self, name: str, error: str) -> None:
        """Reports a failed attempt to reach `name`; `error` is `errors.describe(...)` or a library's message."""
        error = error[:MAX_ERROR_LENGTH]
        now = self._clock()
        with self._lock:
            outage = self._down.get(name)
            if outage is None:
                self._down[name] = _Outage(since=now, last_notice=now)
                notice: tuple[str, dict[str, Any]] | None = ("dependency_down", {"dependency": name, "error": error})
            else:
                outage.failures += 1
                outage.unreported += 1
                notice = None
                if now - outage.last_notice >= self._interval:
                    notice = (
                        "dependency_still_down",
                        {
                            "dependency": name,
                            "error": error,
                            "down_seconds": round(now - outage.since, 1),
                            "failures_since_last_notice": outage.unreported,
                        },
                    )
                    outage.last_notice = now
                    outage.unreported = 0
        if notice is not None:
            self._emit(logging.WARNING, notice[0], notice[1])

    def up(self, name: str) -> None:
        """Reports a successful attempt: ends `name`'s outage, if any."""
        now = self._clock()
        with self._lock:
            outage = self._down.pop(name, None)
        if outage is not None:
            self._emit(
                logging.INFO,
                "dependency_up",
                {"dependency": name, "down_seconds": round(now - outage.since, 1), "failures": outage.failures},
            )

    def report(self, name: str, ok: bool, error: str = "unreachable") -> None:
        """`up` or `down` from the outcome of a check."""
        if ok:
            self.up(name)
        else:
            self.down(name, error)

    def down_names(self) -> list[str]:
        with self._lock:
            return list(self._down)


@dataclass(frozen=True, slots=True)
class NoiseRule:
    """Records of `logger` (or its children) whose message template starts with one of `prefixes` are failed
    attempts to reach `dependency`."""

    logger: str
    prefixes: tuple[str, ...]
    dependency: str

    def matches(self, record: logging.LogRecord) -> bool:
        if record.name != self.logger and not record.name.startswith(self.logger + "."):
            return False
        template = record.msg if isinstance(record.msg, str) else ""
        return template.startswith(self.prefixes)


# The templates are aiokafka 0.14's (client.py, consumer/fetcher.py, consumer/group_coordinator.py,
# producer/sender.py) and pynetdicom 3's (transport.py): each is logged once per failed attempt.
NOISE_RULES: Final = (
    NoiseRule(
        "aiokafka",
        (
            "Unable connect to ",
            "Unable to request metadata from ",
            "Unable to update metadata from ",
            "Failed fetch messages from ",
            "Failed fetch offsets from ",
            "Group Coordinator Request failed: ",
            "FindCoordinator Request failed: ",
            "Heartbeat send request failed: ",
            "Heartbeat session expired",
            # The coordinator's broker is gone (group_coordinator.py: once per heartbeat; measured by `make chaos`
            # with Kafka down 60 s: 13 lines a minute per consumer group that was busy).
            "Heartbeat failed for group %s: coordinator (node %s) is either not started or not valid",
            "Error sending %s to node %s [%s] -- marking coordinator dead",
            "Marking the coordinator dead ",
            "Auto offset commit failed: ",
            "Cannot send %r to %s: %r",
            "Could not send %r: %r",
            # The producer's failed send to a broker that is gone (sender.py: once per batch and retry; measured
            # by `make chaos`: ~12 lines a second per service while Kafka was down).
            "Got error produce response: ",
            "Got error produce response on topic-partition ",
        ),
        "kafka",
    ),
    NoiseRule(
        "pynetdicom",
        ("Association request failed: unable to connect to remote", "TCP Initialisation Error: "),
        "pacs",
    ),
)


class DependencyNoiseFilter(logging.Filter):
    """A handler filter: collapses the records of `rules` into `outages` (dropping them); passes the others."""

    def __init__(self, outages: Outages, rules: tuple[NoiseRule, ...] = NOISE_RULES) -> None:
        super().__init__()
        self._outages = outages
        self._rules = rules

    def filter(self, record: logging.LogRecord) -> bool:
        for rule in self._rules:
            if rule.matches(record):
                # The formatted message: host:port, node ids and the OS error; never a document or a query.
                try:
                    message = record.getMessage()
                except Exception:  # a library's bad arguments must not break logging
                    message = str(record.msg)
                self._outages.down(rule.dependency, message)
                return False
        return True
