"""The dead-letter commands' decisions, without Kafka: naming dead letters, building a replay, bookkeeping."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from proxymage_shared import kafka
from proxymage_shared.ops import dlq
from proxymage_shared.ops.cli import app
from proxymage_shared.topics import DLQ_ACTIONS, dlq_actions_spec, topic_specs
from typer.testing import CliRunner

AT = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)
EVENT_ID = "0b6c1f3e-8d6a-4f43-9b4e-3c1d2a7e9f10"
BODY = json.dumps({"event_id": EVENT_ID, "occurred_at": "2026-12-03T07:00:00Z", "enrolment_id": "enr-1"}).encode()


def dead_letter(partition: int = 0, offset: int = 7, *, value: bytes = BODY, at: str | None = None) -> dlq.DeadLetter:
    return dlq.DeadLetter(
        ref=dlq.DlqRef("p.dcc.patient-enrolled.v1.dlq", partition, offset),
        key=b"enr-1",
        value=value,
        headers=(
            ("content-type", b"application/json"),
            ("x-event-type", b"PatientEnrolled"),
            (kafka.DLQ_REASON, b"gave up after 5 attempts: ServerSelectionTimeoutError"),
            (kafka.DLQ_KIND, b"retries_exhausted"),
            (kafka.DLQ_TOPIC, b"p.dcc.patient-enrolled.v1"),
            (kafka.DLQ_PARTITION, b"3"),
            (kafka.DLQ_OFFSET, b"41"),
            (kafka.DLQ_SERVICE, b"identity-matcher"),
            (kafka.DLQ_AT, (at or "2026-12-02T10:00:00+00:00").encode()),
        ),
        timestamp_ms=1_700_000_000_000,
    )


def action(item: dlq.DeadLetter, kind: str = "replayed", operator: str = "alice") -> dlq.Action:
    return dlq.next_action(
        None,
        kind=kind,
        dlq_topic=item.ref.topic,
        partition=item.ref.partition,
        offset=item.ref.offset,
        operator=operator,
        at=AT,
    )


@pytest.mark.parametrize(("text", "expected"), [("0:42", (0, 42)), (" 12:0 ", (12, 0))])
def test_offsets_are_partition_colon_offset(text: str, expected: tuple[int, int]) -> None:
    assert dlq.parse_offset(text) == expected


@pytest.mark.parametrize("text", ["42", "0:", ":4", "a:1", "0:-1", "0:1:2", ""])
def test_a_malformed_offset_is_a_usage_error(text: str) -> None:
    with pytest.raises(dlq.UsageError):
        dlq.parse_offset(text)


def test_a_topic_is_found_with_or_without_the_prefix_and_must_be_a_dead_letter_topic() -> None:
    existing = {"p.dcc.patient-enrolled.v1", "p.dcc.patient-enrolled.v1.dlq"}
    assert dlq.resolve_dlq_topic("p.dcc.patient-enrolled.v1.dlq", "p.", existing) == "p.dcc.patient-enrolled.v1.dlq"
    assert dlq.resolve_dlq_topic("dcc.patient-enrolled.v1.dlq", "p.", existing) == "p.dcc.patient-enrolled.v1.dlq"
    with pytest.raises(dlq.UsageError, match="not a dead-letter topic"):
        dlq.resolve_dlq_topic("p.dcc.patient-enrolled.v1", "p.", existing)
    with pytest.raises(dlq.NotFoundError):
        dlq.resolve_dlq_topic("dcc.study-removed.v1.dlq", "p.", existing)
    # Another deployment's topic on the same cluster is never taken for this one's.
    assert dlq.resolve_dlq_topic("a.v1.dlq", "p.", {"a.v1.dlq", "p.a.v1.dlq"}) == "p.a.v1.dlq"
    with pytest.raises(dlq.NotFoundError):
        dlq.resolve_dlq_topic("a.v1.dlq", "p.", {"a.v1.dlq"})


def test_only_the_deployments_dead_letter_topics_are_listed() -> None:
    existing = ["p.a.v1.dlq", "p.a.v1", "q.a.v1.dlq", "p.proxymage.dlq-actions.v1", "p.b.v1.dlq"]
    assert dlq.dlq_topics(existing, "p.") == ["p.a.v1.dlq", "p.b.v1.dlq"]


def test_a_replay_is_the_original_message_with_who_replayed_it_instead_of_the_dead_letter_headers() -> None:
    item = dead_letter()
    message = dlq.replay_message(item, operator="alice", at=AT)
    assert message.topic == "p.dcc.patient-enrolled.v1"
    assert message.key == b"enr-1"
    assert message.value == BODY  # byte for byte: same event_id, consumers dedup a replay of an applied event
    assert message.headers == (
        ("content-type", b"application/json"),
        ("x-event-type", b"PatientEnrolled"),
        (dlq.REPLAYED_FROM, b"p.dcc.patient-enrolled.v1.dlq:0:7"),
        (dlq.REPLAYED_BY, b"alice"),
        (dlq.REPLAYED_AT, b"2026-12-03T08:00:00+00:00"),
    )


def test_a_replay_of_a_replay_carries_only_the_latest_replay_headers() -> None:
    first = dlq.replay_message(dead_letter(), operator="alice", at=AT)
    again = dlq.DeadLetter(dlq.DlqRef("p.dcc.patient-enrolled.v1.dlq", 1, 2), first.key, first.value,
                           (*first.headers, (kafka.DLQ_KIND, b"permanent_error")), 0)  # fmt: skip
    headers = dlq.replay_message(again, operator="bob", at=AT).headers
    assert [name for name, _ in headers].count(dlq.REPLAYED_BY) == 1
    assert (dlq.REPLAYED_BY, b"bob") in headers
    assert (dlq.REPLAYED_FROM, b"p.dcc.patient-enrolled.v1.dlq:1:2") in headers


def test_a_new_event_id_is_given_only_when_asked_and_changes_nothing_else() -> None:
    fresh = uuid.uuid4()
    message = dlq.replay_message(dead_letter(), operator="alice", at=AT, new_event_id=fresh)
    document = json.loads(message.value)
    assert document == {**json.loads(BODY), "event_id": str(fresh)}
    assert list(document) == list(json.loads(BODY))  # field order kept
    assert dlq.event_id_of(message.value) == str(fresh)
    assert dlq.event_id_of(BODY) == EVENT_ID


@pytest.mark.parametrize("value", [b"\xff\xfe not JSON", b"[1, 2]", b'{"enrolment_id": "enr-1"}'])
def test_a_new_event_id_is_refused_for_a_payload_without_one(value: bytes) -> None:
    assert dlq.event_id_of(value) is None
    with pytest.raises(dlq.OperatorError, match="event_id"):
        dlq.replay_message(dead_letter(value=value), operator="alice", at=AT, new_event_id=uuid.uuid4())
    assert dlq.replay_message(dead_letter(value=value), operator="alice", at=AT).value == value  # as-is is fine


def test_a_replay_never_goes_to_a_topic_other_than_the_one_the_dead_letter_topic_is_named_after() -> None:
    item = dead_letter()
    forged = dlq.DeadLetter(item.ref, item.key, item.value, ((kafka.DLQ_TOPIC, b"p.identity.resolved.v1"),), 0)
    with pytest.raises(dlq.OperatorError, match="not replayed"):
        dlq.replay_message(forged, operator="alice", at=AT)
    bare = dlq.DeadLetter(item.ref, item.key, item.value, (), 0)  # no header: the topic's name decides
    assert dlq.replay_message(bare, operator="alice", at=AT).topic == "p.dcc.patient-enrolled.v1"


def test_a_dead_letter_is_acted_on_once_unless_forced() -> None:
    first, second = dead_letter(0, 1), dead_letter(1, 1)
    actions = {first.ref.key(): action(first, operator="alice")}
    todo, skipped = dlq.plan([first, second], actions)
    assert todo == [second]
    assert [item.ref for item in skipped] == [first.ref]
    assert "already replayed by alice at 2026-12-03T08:00:00+00:00" in skipped[0].why
    forced, none_skipped = dlq.plan([first, second], actions, force=True)
    assert (forced, none_skipped) == ([first, second], [])


def test_the_action_log_keeps_the_latest_record_per_dead_letter_and_forgets_tombstones() -> None:
    one, two = dead_letter(0, 1), dead_letter(0, 2)
    replayed = action(one)
    purged = dlq.next_action(
        replayed, kind="purged", dlq_topic=one.ref.topic, partition=0, offset=1, operator="bob", at=AT
    )
    records = [
        (one.ref.key().encode(), replayed.model_dump_json().encode()),
        (two.ref.key().encode(), action(two).model_dump_json().encode()),
        (one.ref.key().encode(), purged.model_dump_json().encode()),
        (two.ref.key().encode(), None),
    ]
    actions = dlq.fold_actions(records)
    assert list(actions) == [one.ref.key()]
    assert actions[one.ref.key()] == purged
    assert [(item.kind, item.operator) for item in purged.earlier] == [("replayed", "alice")]
    assert dlq.status_of(one.ref, actions) == "purged"
    assert dlq.status_of(two.ref, actions) == "pending"


def test_an_action_survives_its_json_round_trip() -> None:
    item = dead_letter()
    replayed = dlq.next_action(
        None,
        kind="replayed",
        dlq_topic=item.ref.topic,
        partition=0,
        offset=7,
        operator="alice",
        at=AT,
        replayed_to=dlq.Position(topic="p.dcc.patient-enrolled.v1", partition=3, offset=99),
        event_id=EVENT_ID,
    )
    again = dlq.next_action(replayed, **replayed.model_dump(exclude={"earlier"}))
    assert dlq.Action.model_validate_json(again.model_dump_json()) == again
    assert again.earlier == (replayed,)


def test_dead_letters_are_named_by_position_all_or_nothing_by_time_or_all() -> None:
    old, new = dead_letter(0, 1, at="2026-11-01T00:00:00+00:00"), dead_letter(1, 5, at="2026-12-02T00:00:00+01:00")
    letters = [old, new]
    assert dlq.select(letters, offsets=[(1, 5), (1, 5)]) == [new]
    with pytest.raises(dlq.NotFoundError, match="0:9"):
        dlq.select(letters, offsets=[(1, 5), (0, 9)])
    # `new` was dead-lettered at 23:00 UTC (midnight in +01:00): times compare as instants
    assert dlq.select(letters, before=dt.datetime(2026, 12, 1, 23, 0, tzinfo=dt.UTC)) == [old]
    assert dlq.select(letters, before=dt.datetime(2026, 12, 1, 23, 1, tzinfo=dt.UTC)) == letters
    assert dlq.select(letters, every=True) == letters
    with pytest.raises(dlq.UsageError):
        dlq.select(letters)
    with pytest.raises(dlq.UsageError):
        dlq.select(letters, offsets=[(0, 1)], every=True)


def test_a_time_needs_its_offset() -> None:
    assert dlq.parse_time("2026-12-01T00:00:00Z") == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    with pytest.raises(dlq.UsageError, match="time zone"):
        dlq.parse_time("2026-12-01T00:00:00")
    with pytest.raises(dlq.UsageError):
        dlq.parse_time("yesterday")


def test_the_dead_lettering_time_falls_back_on_the_record_timestamp() -> None:
    item = dead_letter(at="garbage")
    assert item.dead_lettered_at() == dt.datetime.fromtimestamp(1_700_000_000, dt.UTC)


def test_a_summary_counts_the_actions_on_dead_letters_still_kept() -> None:
    topic = "p.a.v1.dlq"
    actions = {
        f"{topic}:0:{offset}": dlq.next_action(
            None, kind="purged", dlq_topic=topic, partition=0, offset=offset, operator="a", at=AT
        )
        for offset in (1, 5, 9)  # 1: deleted by retention since; 9: beyond the end (another topic's life)
    }
    summary = dlq.summarise(topic, {0: (3, 8), 1: (0, 2)}, actions)
    assert (summary.total, summary.handled, summary.pending) == (7, 1, 6)
    assert dlq.summarise("p.b.v1.dlq", {0: (0, 1)}, actions).pending == 1


def test_the_operator_is_named() -> None:
    assert dlq.check_operator(" alice ") == "alice"
    for bad in ("", "   ", "a\nb", "x" * 101):
        with pytest.raises(dlq.UsageError):
            dlq.check_operator(bad)


def test_the_action_topic_is_compacted_with_one_partition_and_created_with_the_others() -> None:
    assert dlq_actions_spec("p.") in topic_specs(6, prefix="p.")
    spec = dlq_actions_spec("p.")
    assert (spec.name, spec.partitions, spec.config()["cleanup.policy"]) == (f"p.{DLQ_ACTIONS}", 1, "compact")


def test_the_cli_refuses_a_malformed_offset_before_reaching_kafka() -> None:
    result = CliRunner().invoke(app, ["dlq", "replay", "x.dlq", "--offset", "nope", "--operator", "alice"])
    assert result.exit_code == dlq.EXIT_USAGE
    assert "PARTITION:OFFSET" in result.output


def test_the_cli_requires_an_operator_for_a_replay() -> None:
    result = CliRunner().invoke(app, ["dlq", "replay", "x.dlq", "--all"])
    assert result.exit_code == 2
    assert "--operator" in result.output


def test_an_unreachable_broker_is_an_error_message_not_a_traceback() -> None:
    result = CliRunner().invoke(app, ["dlq", "list"], env={"PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.exit_code == dlq.EXIT_FAILED
    assert "error: Kafka (KafkaConnectionError)" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
