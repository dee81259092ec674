"""Dead letters as an operator sees them: which to act on, what a replay publishes, what was done. No I/O.

A dead letter (kafka.dead_letter) is the original message's bytes, key and headers on `<topic>.dlq`, plus
`x-dlq-*` headers naming the reason. An operator either replays it (the same bytes and key back on the
original topic) or purges it (marks it handled; Kafka's retention deletes it later). Each action is a record
keyed by the dead letter's position, on the compacted topic `DLQ_ACTIONS`: the latest action per dead letter
survives, carrying the earlier ones, so a dead letter is never replayed twice unless the operator forces it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from proxymage_shared import kafka
from proxymage_shared.topics import DLQ_SUFFIX

DLQ_HEADER_PREFIX: Final = "x-dlq-"
REPLAYED_FROM: Final = "x-replayed-from"
REPLAYED_BY: Final = "x-replayed-by"
REPLAYED_AT: Final = "x-replayed-at"
REPLAY_HEADERS: Final = frozenset({REPLAYED_FROM, REPLAYED_BY, REPLAYED_AT})
MAX_OPERATOR_LENGTH: Final = 100

# Exit codes of the CLI (typer's own usage errors exit with 2 as well).
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_FAILED: Final = 4

Header = tuple[str, bytes]
Status = Literal["pending", "replayed", "purged"]


class OperatorError(Exception):
    """A refusal worded for the operator (no payload in it); `exit_code` is the CLI's."""

    exit_code: int = EXIT_FAILED


class UsageError(OperatorError):
    exit_code = EXIT_USAGE


class NotFoundError(OperatorError):
    exit_code = EXIT_NOT_FOUND


@dataclass(frozen=True, slots=True, order=True)
class DlqRef:
    """Where a dead letter is: its dead-letter topic, partition and offset."""

    topic: str
    partition: int
    offset: int

    def key(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    ref: DlqRef
    key: bytes | None
    value: bytes
    headers: tuple[Header, ...]
    timestamp_ms: int

    def header(self, name: str) -> str | None:
        for header_name, value in self.headers:
            if header_name == name:
                return value.decode("utf-8", errors="replace")
        return None

    def dead_lettered_at(self) -> dt.datetime:
        """When it was dead-lettered: the `x-dlq-at` header, else the record's timestamp."""
        text = self.header(kafka.DLQ_AT)
        if text:
            try:
                at = dt.datetime.fromisoformat(text)
            except ValueError:
                pass
            else:
                return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.UTC)


class Position(BaseModel):
    """Where a replay landed."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class Action(BaseModel):
    """What an operator did with one dead letter (the value of a `DLQ_ACTIONS` record)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["replayed", "purged"]
    dlq_topic: str
    partition: int
    offset: int
    operator: str
    at: dt.datetime
    # Replays only: where the message was published again, and the event_id it carried.
    replayed_to: Position | None = None
    event_id: str | None = None
    new_event_id: bool = False
    # The earlier actions on the same dead letter (a forced replay): compaction keeps only the latest record.
    earlier: tuple[Action, ...] = ()

    @property
    def ref(self) -> DlqRef:
        return DlqRef(self.dlq_topic, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to publish."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[Header, ...]


@dataclass(frozen=True, slots=True)
class Skipped:
    ref: DlqRef
    why: str


@dataclass(frozen=True, slots=True)
class TopicSummary:
    topic: str
    total: int
    handled: int

    @property
    def pending(self) -> int:
        return self.total - self.handled


def parse_offset(text: str) -> tuple[int, int]:
    """`"P:O"` (partition:offset, as `dlq list` prints them) -> (P, O)."""
    partition, sep, offset = text.strip().partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise UsageError(f"{text!r} is not PARTITION:OFFSET (e.g. 0:42)")
    return int(partition), int(offset)


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 time with its offset (`Z` or `+01:00`): a time without one would be read in an unknown zone."""
    try:
        at = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)") from None
    if at.tzinfo is None:
        raise UsageError(f"{text!r} has no time zone (e.g. 2026-12-01T00:00:00Z or ...+01:00)")
    return at


def check_operator(name: str) -> str:
    """Who acts, as recorded: required, one printable line."""
    name = name.strip()
    if not name or len(name) > MAX_OPERATOR_LENGTH or not name.isprintable():
        raise UsageError(f"--operator must name who acts (1 to {MAX_OPERATOR_LENGTH} printable characters)")
    return name


def resolve_dlq_topic(name: str, prefix: str, existing: Collection[str]) -> str:
    """The dead-letter topic the operator means: its full name, or its name without the deployment's prefix.
    Always one of the deployment's own (another deployment on the same cluster has another prefix)."""
    if not name.endswith(DLQ_SUFFIX):
        raise UsageError(
            f"{name!r} is not a dead-letter topic: their names end in {DLQ_SUFFIX!r} (`proxymage dlq list` lists them)"
        )
    full = name if name.startswith(prefix) else prefix + name
    if full not in existing:
        raise NotFoundError(f"no topic {full!r} on this cluster")
    return full


def dlq_topics(existing: Iterable[str], prefix: str) -> list[str]:
    """The deployment's dead-letter topics, sorted."""
    return sorted(name for name in existing if name.startswith(prefix) and name.endswith(DLQ_SUFFIX))


def original_topic(dead_letter: DeadLetter) -> str:
    """Where a replay goes: the topic the dead-letter topic is named after. A header naming another topic is
    refused rather than followed: a replay never publishes where the dead letter did not come from."""
    expected = dead_letter.ref.topic.removesuffix(DLQ_SUFFIX)
    named = dead_letter.header(kafka.DLQ_TOPIC)
    if named is not None and named != expected:
        raise OperatorError(f"{dead_letter.ref.key()} names original topic {named!r}, not {expected!r}: not replayed")
    return expected


def event_id_of(value: bytes) -> str | None:
    """The payload's `event_id`, if it is a JSON object with one (an invalid event may be anything)."""
    try:
        document = json.loads(value)
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("event_id"), str):
        return str(document["event_id"])
    return None


def with_event_id(value: bytes, event_id: uuid.UUID) -> bytes:
    """The payload with a fresh `event_id`, every other field (and their order) unchanged."""
    try:
        document = json.loads(value)
    except ValueError:
        document = None
    if not isinstance(document, dict) or "event_id" not in document:
        raise OperatorError("cannot give a new event_id: the payload is not a JSON object with an event_id")
    document["event_id"] = str(event_id)
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def replay_message(
    dead_letter: DeadLetter, *, operator: str, at: dt.datetime, new_event_id: uuid.UUID | None = None
) -> Outbound:
    """The original message again: same key, same bytes (unless a new event_id is asked for), its own headers
    without the dead-letter ones, plus who replayed which dead letter when."""
    kept = (
        (name, value)
        for name, value in dead_letter.headers
        if not name.startswith(DLQ_HEADER_PREFIX) and name not in REPLAY_HEADERS
    )
    headers = (
        *kept,
        (REPLAYED_FROM, dead_letter.ref.key().encode()),
        (REPLAYED_BY, operator.encode()),
        (REPLAYED_AT, at.isoformat().encode()),
    )
    value = dead_letter.value if new_event_id is None else with_event_id(dead_letter.value, new_event_id)
    return Outbound(original_topic(dead_letter), dead_letter.key, value, headers)


def fold_actions(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, Action]:
    """The latest action per dead letter from the action topic's records (key, value) in offset order;
    a tombstone (no value) forgets the key, as compaction would."""
    actions: dict[str, Action] = {}
    for key, value in records:
        if key is None:
            continue
        name = key.decode("utf-8", errors="replace")
        if value is None:
            actions.pop(name, None)
        else:
            actions[name] = Action.model_validate_json(value)
    return actions


def status_of(ref: DlqRef, actions: Mapping[str, Action]) -> Status:
    action = actions.get(ref.key())
    return "pending" if action is None else action.kind


def next_action(previous: Action | None, **fields: object) -> Action:
    """A new action on a dead letter, carrying the earlier ones (flattened, oldest first)."""
    earlier = () if previous is None else (*previous.earlier, previous.model_copy(update={"earlier": ()}))
    return Action.model_validate({**fields, "earlier": earlier})


def select(
    dead_letters: Sequence[DeadLetter],
    *,
    offsets: Sequence[tuple[int, int]] = (),
    every: bool = False,
    before: dt.datetime | None = None,
) -> list[DeadLetter]:
    """The dead letters named: by position (all must exist: nothing is done if one does not), every one, or
    those dead-lettered before a time. Exactly one way must be given."""
    if sum((bool(offsets), every, before is not None)) != 1:
        raise UsageError("name the dead letters with --offset P:O (repeatable), --all, or --before (one of them)")
    if offsets:
        by_position = {(item.ref.partition, item.ref.offset): item for item in dead_letters}
        missing = [f"{partition}:{offset}" for partition, offset in offsets if (partition, offset) not in by_position]
        if missing:
            raise NotFoundError("no dead letter at " + ", ".join(missing))
        return [by_position[position] for position in dict.fromkeys(offsets)]
    if before is not None:
        if before.tzinfo is None:
            raise UsageError("--before needs a time zone (e.g. 2026-12-01T00:00:00+01:00 or ...Z)")
        return [item for item in dead_letters if item.dead_lettered_at() < before]
    return list(dead_letters)


def plan(
    chosen: Sequence[DeadLetter], actions: Mapping[str, Action], *, force: bool = False
) -> tuple[list[DeadLetter], list[Skipped]]:
    """Which of the chosen dead letters to act on: those not handled yet, or all of them when forced."""
    todo: list[DeadLetter] = []
    skipped: list[Skipped] = []
    for item in chosen:
        action = actions.get(item.ref.key())
        if action is None or force:
            todo.append(item)
        else:
            skipped.append(Skipped(item.ref, f"already {action.kind} by {action.operator} at {action.at.isoformat()}"))
    return todo, skipped


def summarise(topic: str, ranges: Mapping[int, tuple[int, int]], actions: Mapping[str, Action]) -> TopicSummary:
    """How many dead letters a topic holds (`ranges`: partition -> [first, end) offsets still kept) and how
    many of those are handled. Offsets are contiguous: dead letters are never published in transactions."""
    total = sum(end - first for first, end in ranges.values())
    handled = 0
    for action in actions.values():
        if action.dlq_topic == topic and action.partition in ranges:
            first, end = ranges[action.partition]
            handled += first <= action.offset < end
    return TopicSummary(topic, total, handled)
