"""`proxymage`: the operator's commands. `proxymage topics` creates the topics (the Helm chart's Job);
`proxymage dlq list|show|replay|purge` acts on dead letters.

Settings come from the environment and `PROXYMAGE_ENV_FILE` like the services' (Kafka address and security,
`PROXYMAGE_TOPIC_PREFIX`). Nothing here prints a payload except `dlq show --payload`: dead letters may hold
patient data. Exit codes: 0 done (also when everything asked was already handled), 2 usage (not a dead-letter
topic, bad PARTITION:OFFSET), 3 not found (topic, partition or offset), 4 some dead letters could not be acted on
(or Kafka failed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from aiokafka.errors import KafkaError

from proxymage_shared import admin
from proxymage_shared.errors import describe
from proxymage_shared.ops import dlq, dlq_commands
from proxymage_shared.ops.dlq import Action, DeadLetter, OperatorError
from proxymage_shared.settings import ServiceSettings, load_settings

app = typer.Typer(help="Proxymage operator commands.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="Dead letters: messages a service could not process, parked on `<topic>.dlq` with the reason.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")

T = TypeVar("T")

Topic = Annotated[
    str,
    typer.Argument(
        help="A dead-letter topic (`<topic>.dlq`, as `proxymage dlq list` prints it; the deployment's prefix may "
        "be left out)."
    ),
]
Json = Annotated[bool, typer.Option("--json", help="One JSON document on stdout, for scripts.")]
Offsets = Annotated[list[str] | None, typer.Option("--offset", help="PARTITION:OFFSET of a dead letter (repeatable).")]
Every = Annotated[bool, typer.Option("--all", help="Every dead letter of the topic not handled yet.")]
Operator = Annotated[str, typer.Option("--operator", help="Who acts: recorded with the action.")]


class OperatorSettings(ServiceSettings):
    service_name: str = "operator"


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a command; an operator error becomes its message on stderr and its exit code."""
    try:
        return asyncio.run(coroutine)
    except OperatorError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except KafkaError as error:
        # No traceback for an unreachable or refusing broker: its kind is what the operator acts on.
        typer.echo(f"error: Kafka ({describe(error)}); check PROXYMAGE_KAFKA_BOOTSTRAP_SERVERS/_SECURITY", err=True)
        raise typer.Exit(dlq.EXIT_FAILED) from None


def _settings() -> OperatorSettings:
    return load_settings(OperatorSettings)


def _offsets(values: list[str] | None) -> list[tuple[int, int]]:
    try:
        return [dlq.parse_offset(value) for value in values or ()]
    except OperatorError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None


def _summary(item: DeadLetter, status: dlq.Status) -> dict[str, Any]:
    """A dead letter without its payload."""
    return {
        "partition": item.ref.partition,
        "offset": item.ref.offset,
        "key": None if item.key is None else item.key.decode("utf-8", errors="replace"),
        "original_topic": item.header("x-dlq-original-topic"),
        "original_partition": item.header("x-dlq-original-partition"),
        "original_offset": item.header("x-dlq-original-offset"),
        "service": item.header("x-dlq-service"),
        "kind": item.header("x-dlq-kind"),
        "reason": item.header("x-dlq-reason"),
        "dead_lettered_at": item.dead_lettered_at().isoformat(),
        "status": status,
    }


def _action(action: Action) -> dict[str, Any]:
    return action.model_dump(mode="json")


def _echo_json(document: Any) -> None:
    typer.echo(json.dumps(document, ensure_ascii=False, indent=2))


@dlq_app.command("list")
def list_(
    topic: Annotated[
        str | None, typer.Argument(help="A dead-letter topic: one line per dead letter. Without it: every topic.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Dead-letter topics with their pending counts, or one topic's dead letters (never their payloads)."""
    settings = _settings()
    if topic is None:
        summaries = _run(dlq_commands.summaries(settings))
        if as_json:
            _echo_json(
                [{"topic": s.topic, "total": s.total, "handled": s.handled, "pending": s.pending} for s in summaries]
            )
            return
        for summary in summaries:
            typer.echo(f"{summary.topic}\t{summary.pending} pending\t({summary.total} kept, {summary.handled} handled)")
        return
    name, items = _run(dlq_commands.dead_letters(settings, topic))
    rows = [_summary(item, status) for item, status in items]
    if as_json:
        _echo_json({"topic": name, "dead_letters": rows})
        return
    typer.echo(f"{name}: {len(rows)} dead letter(s), {sum(row['status'] == 'pending' for row in rows)} pending")
    for row in rows:
        typer.echo(
            f"{row['partition']}:{row['offset']}\t{row['status']}\t{row['dead_lettered_at']}\t"
            f"from {row['original_topic']} {row['original_partition']}:{row['original_offset']}\t"
            f"{row['service']}\t{row['kind']}\t{row['reason']}"
        )


@dlq_app.command()
def show(
    topic: Topic,
    partition: Annotated[int, typer.Argument(min=0)],
    offset: Annotated[int, typer.Argument(min=0)],
    payload: Annotated[
        bool,
        typer.Option(
            "--payload",
            help="Also print the message body. It may hold patient data: printing it is the operator's own act.",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """One dead letter: its headers, its size, what was done with it; its body only with --payload."""
    item, action = _run(dlq_commands.one(_settings(), topic, partition, offset))
    document: dict[str, Any] = {
        "topic": item.ref.topic,
        **_summary(item, "pending" if action is None else action.kind),
        "headers": {name: value.decode("utf-8", errors="replace") for name, value in item.headers},
        "size": len(item.value),
        "action": None if action is None else _action(action),
    }
    if payload:
        document["payload"] = item.value.decode("utf-8", errors="replace")
    if as_json:
        _echo_json(document)
        return
    for name in ("topic", "partition", "offset", "key", "status", "size"):
        typer.echo(f"{name}: {document[name]}")
    typer.echo("headers:")
    for name, value in document["headers"].items():
        typer.echo(f"  {name}: {value}")
    if action is not None:
        typer.echo(f"action: {action.kind} by {action.operator} at {action.at.isoformat()}")
        if action.replayed_to is not None:
            to = action.replayed_to
            typer.echo(f"  replayed to {to.topic} {to.partition}:{to.offset} (event_id {action.event_id})")
        for earlier in action.earlier:
            typer.echo(f"  earlier: {earlier.kind} by {earlier.operator} at {earlier.at.isoformat()}")
    if payload:
        typer.echo("payload:")
        typer.echo(document["payload"])


def _skipped(item: dlq.Skipped) -> dict[str, Any]:
    return {"partition": item.ref.partition, "offset": item.ref.offset, "why": item.why}


def _report(report: dlq_commands.Report, verb: str, as_json: bool) -> None:
    if as_json:
        _echo_json(
            {
                "topic": report.topic,
                "done": [_action(action) for action in report.done],
                "skipped": [
                    {"partition": s.ref.partition, "offset": s.ref.offset, "why": s.why} for s in report.skipped
                ],
                "failed": [{"partition": s.ref.partition, "offset": s.ref.offset, "why": s.why} for s in report.failed],
            }
        )
    else:
        for action in report.done:
            line = f"{verb} {action.partition}:{action.offset}"
            if action.replayed_to is not None:
                to = action.replayed_to
                line += f" -> {to.topic} {to.partition}:{to.offset} (event_id {action.event_id})"
            typer.echo(line)
        for skipped in report.skipped:
            typer.echo(f"skipped {skipped.ref.partition}:{skipped.ref.offset}: {skipped.why}")
        for failed in report.failed:
            typer.echo(f"FAILED {failed.ref.partition}:{failed.ref.offset}: {failed.why}", err=True)
        typer.echo(f"{len(report.done)} {verb}, {len(report.skipped)} skipped, {len(report.failed)} failed")
    if report.failed:
        raise typer.Exit(dlq.EXIT_FAILED)


@dlq_app.command()
def replay(
    topic: Topic,
    operator: Operator,
    offset: Offsets = None,
    every: Every = False,
    new_event_id: Annotated[
        bool,
        typer.Option(
            "--new-event-id",
            help="Give each replayed event a fresh event_id. Without it the event keeps its event_id, so a consumer "
            "that already applied it ignores it; with it, consumers apply it as a new event.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replay even dead letters already replayed or purged.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Publishes dead letters again on their original topic (same key, bytes and headers, plus
    x-replayed-from/-by/-at). Each dead letter is replayed once: running the command again skips it."""
    report = _run(
        dlq_commands.replay(
            _settings(),
            topic,
            operator=operator,
            offsets=_offsets(offset),
            every=every,
            new_event_id=new_event_id,
            force=force,
        )
    )
    _report(report, "replayed", as_json)


@dlq_app.command()
def purge(
    topic: Topic,
    operator: Operator,
    offset: Offsets = None,
    every: Every = False,
    before: Annotated[
        str | None,
        typer.Option(
            "--before",
            help="Dead letters dead-lettered before this time (ISO 8601 with its offset, e.g. 2026-12-01T00:00:00Z).",
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Marks dead letters as handled without replaying them (Kafka deletes them after the topic's retention)."""
    try:
        time = None if before is None else dlq.parse_time(before)
    except OperatorError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    report = _run(
        dlq_commands.purge(_settings(), topic, operator=operator, offsets=_offsets(offset), every=every, before=time)
    )
    _report(report, "purged", as_json)


@app.command()
def topics(
    partitions: Annotated[
        int | None, typer.Option(help="Partitions of each topic (default: PROXYMAGE_TOPIC_PARTITIONS, 6).")
    ] = None,
    replication_factor: Annotated[
        int | None,
        typer.Option(help="Replicas of each partition (default: PROXYMAGE_TOPIC_REPLICATION_FACTOR; 3 in production)."),
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Topic name prefix (default: PROXYMAGE_TOPIC_PREFIX).")] = None,
) -> None:
    """Creates every contract topic and its dead-letter topic (idempotent)."""
    created, total = admin.create_topics(
        load_settings(OperatorSettings), partitions=partitions, replication_factor=replication_factor, prefix=prefix
    )
    typer.echo(admin.report(created, total))


def main() -> None:
    app()
