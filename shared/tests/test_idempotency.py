"""The shared write mechanisms, without a server (their use against FerretDB is in each store's tests)."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest
from proxymage_shared.errors import ProxymageError, TransientError, WriteConflictError, describe
from proxymage_shared.events import PatientEnrolled
from proxymage_shared.idempotency import (
    LOST_RACE,
    EventStamp,
    LostRace,
    is_duplicate_key,
    to_ms,
    until_written,
)
from pydantic import ValidationError
from pymongo.errors import DuplicateKeyError, OperationFailure


def test_times_are_truncated_to_the_millisecond_in_utc() -> None:
    paris = dt.datetime(2026, 3, 1, 10, 0, 0, 123_999, tzinfo=ZoneInfo("Europe/Paris"))
    assert to_ms(paris) == dt.datetime(2026, 3, 1, 9, 0, 0, 123_000, tzinfo=dt.UTC)
    assert to_ms(dt.datetime(2026, 3, 1, 9, 0, 0, 999)) == dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def test_duplicate_keys_are_told_from_other_failures() -> None:
    assert is_duplicate_key(DuplicateKeyError("E11000 duplicate key", 11000))
    assert is_duplicate_key(OperationFailure("dup", 11001))
    assert is_duplicate_key(OperationFailure("Internal error: duplicate key value", 1))  # FerretDB v1
    assert not is_duplicate_key(OperationFailure("Internal error: disk full", 1))
    assert not is_duplicate_key(OperationFailure("not primary", 10107))
    assert not is_duplicate_key(ValueError("duplicate key"))


def test_events_are_ordered_by_time_then_id_and_a_replay_is_not_newer() -> None:
    at = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
    first = EventStamp.of(at, "a")
    assert first.is_newer_than(None)
    assert not first.is_newer_than(EventStamp.of(at + dt.timedelta(microseconds=900), "a"))  # same ms: a replay
    assert EventStamp.of(at, "b").is_newer_than(first)  # same millisecond: the id decides, in every service
    assert not EventStamp.of(at - dt.timedelta(seconds=1), "z").is_newer_than(first)
    assert EventStamp.of(at + dt.timedelta(milliseconds=1), "0").is_newer_than(first)


async def test_a_conditional_write_is_retried_after_lost_races_then_gives_up() -> None:
    outcomes = iter([LOST_RACE, LOST_RACE, "written"])

    async def attempt() -> str | LostRace:
        return next(outcomes)

    assert await until_written(attempt, what="enrolment enr-1") == "written"

    async def always_lost() -> LostRace:
        return LOST_RACE

    with pytest.raises(WriteConflictError, match="enrolment enr-2 kept changing") as raised:
        await until_written(always_lost, what="enrolment enr-2", attempts=3)
    assert isinstance(raised.value, TransientError)  # the message is retried as a whole


def test_error_details_never_quote_received_or_stored_values() -> None:
    try:
        PatientEnrolled.model_validate({"event_id": str(uuid.uuid4()), "patient": {"birth_name": "DUPONT-SECRET"}})
    except ValidationError as error:
        detail = describe(error)
    assert "DUPONT-SECRET" not in detail
    assert detail.startswith("ValidationError: ")
    assert "occurred_at" in detail
    assert describe(OperationFailure("document {name: 'DUPONT-SECRET'} failed", 2)) == "OperationFailure (code 2)"
    assert describe(ConnectionRefusedError(111, "Connection refused")) == (
        "ConnectionRefusedError (errno 111: Connection refused)"
    )
    assert describe(KeyError("DUPONT-SECRET")) == "KeyError"
    assert (
        describe(ProxymageError("MIRC refused the move (0xA801)")) == "ProxymageError: MIRC refused the move (0xA801)"
    )
