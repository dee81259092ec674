"""The mechanisms of idempotent, concurrency-safe writes that every service's store uses (not business rules:
which event wins, or what a write contains, stays in each service's domain).

Everything a service writes is a single-document insert or conditional update, on MongoDB and FerretDB alike:
- times are compared as stored, so every time written or compared is first truncated like MongoDB (`to_ms`);
- an insert that finds the `_id` taken lost a race (`is_duplicate_key`, with FerretDB's variant of the error);
- events are ordered by (occurred_at, event_id) (`EventStamp`): replays are equal, a later event is newer, and
  two events of the same millisecond are still ordered, the same way in every service;
- a read, a decision, then a write conditional on what was read, is retried a bounded number of times when a
  concurrent writer changed the document in between (`until_written`), then gives up with
  `WriteConflictError` (transient: the message is retried as a whole).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from pymongo.errors import DuplicateKeyError, OperationFailure

from proxymage_shared.errors import WriteConflictError

T = TypeVar("T")

# MongoDB's duplicate-key codes (11000; 11001 from old servers on update) and FerretDB v1's internal error,
# which it also returns for a duplicate key (then told by its message).
DUPLICATE_KEY_CODES: Final = frozenset({11000, 11001})
FERRETDB_INTERNAL: Final = 1
# How many times a conditional write is tried again after losing to a concurrent writer: a handful of writers
# touch one document at once (replicas, periodic tasks); ten lost races in a row mean something else is wrong.
WRITE_ATTEMPTS: Final = 10


def to_ms(value: dt.datetime) -> dt.datetime:
    """`value` in UTC, truncated to the millisecond as MongoDB stores it (a naive value is taken as UTC)."""
    value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def is_duplicate_key(error: BaseException) -> bool:
    """Whether a write failed because the `_id` (or a unique key) is taken."""
    if isinstance(error, DuplicateKeyError):
        return True
    if not isinstance(error, OperationFailure):
        return False
    if error.code in DUPLICATE_KEY_CODES:
        return True
    return error.code == FERRETDB_INTERNAL and "duplicate key" in str(error).lower()


@dataclass(frozen=True, slots=True, order=True)
class EventStamp:
    """When an event occurred and which one it was: the total order of events about the same thing."""

    occurred_at: dt.datetime
    event_id: str

    @classmethod
    def of(cls, occurred_at: dt.datetime, event_id: object) -> EventStamp:
        return cls(to_ms(occurred_at), str(event_id))

    def is_newer_than(self, current: EventStamp | None) -> bool:
        """Strictly newer than `current` (nothing recorded yet: newer). A replay is not newer."""
        return current is None or self > current


class LostRace:
    """The outcome of a conditional write that found the document changed since it was read."""

    _instance: LostRace | None = None

    def __new__(cls) -> LostRace:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "LOST_RACE"


LOST_RACE: Final = LostRace()


async def until_written(
    attempt: Callable[[], Awaitable[T | LostRace]], *, what: str, attempts: int = WRITE_ATTEMPTS
) -> T:
    """Runs `attempt` (read, decide, write conditionally on what was read) until it returns anything but
    `LOST_RACE`; `WriteConflictError` after `attempts` lost races. `what` names the document, without patient
    data (an id)."""
    for _ in range(attempts):
        outcome = await attempt()
        if not isinstance(outcome, LostRace):
            return outcome
    raise WriteConflictError(f"{what} kept changing ({attempts} conditional writes lost); try again")
