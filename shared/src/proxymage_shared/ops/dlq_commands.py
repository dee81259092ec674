"""The dead-letter commands' use cases: pure decisions (ops.dlq) around Kafka reads and writes (ops.dlq_kafka).

A replay publishes first and records the action afterwards: if the command dies in between, the dead letter
still shows as pending and a second replay publishes it again, with the same event_id (unless a new one was
asked for), which the consumers' idempotency absorbs. Recording first could mark as replayed a message that
was never published. Two operators replaying the same dead letter at the same moment can likewise both
publish it; the same event_id makes that harmless too.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from proxymage_shared.ops import dlq
from proxymage_shared.ops.dlq import Action, DeadLetter, OperatorError, Skipped, Status, TopicSummary
from proxymage_shared.ops.dlq_kafka import DlqKafka
from proxymage_shared.settings import ServiceSettings

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class Report:
    """What a replay or purge did."""

    topic: str
    done: list[Action] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failed: list[Skipped] = field(default_factory=list)


async def summaries(settings: ServiceSettings) -> list[TopicSummary]:
    async with DlqKafka(settings) as kafka:
        names = dlq.dlq_topics(await kafka.topics(), settings.topic_prefix)
        actions = await kafka.actions()
        ranges = await kafka.ranges_of(names)
        return [dlq.summarise(name, ranges[name], actions) for name in names]


async def dead_letters(settings: ServiceSettings, topic: str) -> tuple[str, list[tuple[DeadLetter, Status]]]:
    async with DlqKafka(settings) as kafka:
        name = dlq.resolve_dlq_topic(topic, settings.topic_prefix, await kafka.topics())
        actions = await kafka.actions()
        return name, [(item, dlq.status_of(item.ref, actions)) for item in await kafka.dead_letters(name)]


async def one(settings: ServiceSettings, topic: str, partition: int, offset: int) -> tuple[DeadLetter, Action | None]:
    async with DlqKafka(settings) as kafka:
        name = dlq.resolve_dlq_topic(topic, settings.topic_prefix, await kafka.topics())
        item = await kafka.dead_letter(name, partition, offset)
        return item, (await kafka.actions()).get(item.ref.key())


async def _chosen(
    kafka: DlqKafka,
    name: str,
    *,
    offsets: Sequence[tuple[int, int]],
    every: bool,
    before: dt.datetime | None,
) -> list[DeadLetter]:
    if offsets and not every and before is None:  # read only the ones named
        named = [await kafka.dead_letter(name, partition, offset) for partition, offset in dict.fromkeys(offsets)]
        return dlq.select(named, offsets=offsets)
    dlq.select([], offsets=offsets, every=every, before=before)  # refuses a wrong combination before reading
    return dlq.select(await kafka.dead_letters(name), offsets=offsets, every=every, before=before)


async def replay(
    settings: ServiceSettings,
    topic: str,
    *,
    operator: str,
    offsets: Sequence[tuple[int, int]] = (),
    every: bool = False,
    new_event_id: bool = False,
    force: bool = False,
    now: Clock = utc_now,
) -> Report:
    """Publishes the chosen dead letters again on their original topic, each at most once unless forced."""
    operator = dlq.check_operator(operator)
    async with DlqKafka(settings) as kafka:
        name = dlq.resolve_dlq_topic(topic, settings.topic_prefix, await kafka.topics())
        chosen = await _chosen(kafka, name, offsets=offsets, every=every, before=None)
        await kafka.ensure_actions_topic()
        actions = await kafka.actions()
        todo, skipped = dlq.plan(chosen, actions, force=force)
        report = Report(name, skipped=skipped)
        for item in todo:
            at = now()
            try:
                message = dlq.replay_message(
                    item, operator=operator, at=at, new_event_id=uuid.uuid4() if new_event_id else None
                )
            except OperatorError as error:
                report.failed.append(Skipped(item.ref, str(error)))
                continue
            position = await kafka.publish(message)
            action = dlq.next_action(
                actions.get(item.ref.key()),
                kind="replayed",
                dlq_topic=name,
                partition=item.ref.partition,
                offset=item.ref.offset,
                operator=operator,
                at=at,
                replayed_to=position,
                event_id=dlq.event_id_of(message.value),
                new_event_id=new_event_id,
            )
            await kafka.record(action)
            report.done.append(action)
        return report


async def purge(
    settings: ServiceSettings,
    topic: str,
    *,
    operator: str,
    offsets: Sequence[tuple[int, int]] = (),
    every: bool = False,
    before: dt.datetime | None = None,
    now: Clock = utc_now,
) -> Report:
    """Marks the chosen pending dead letters as handled without replaying them."""
    operator = dlq.check_operator(operator)
    async with DlqKafka(settings) as kafka:
        name = dlq.resolve_dlq_topic(topic, settings.topic_prefix, await kafka.topics())
        chosen = await _chosen(kafka, name, offsets=offsets, every=every, before=before)
        await kafka.ensure_actions_topic()
        actions = await kafka.actions()
        todo, skipped = dlq.plan(chosen, actions)
        report = Report(name, skipped=skipped)
        for item in todo:
            action = dlq.next_action(
                None,
                kind="purged",
                dlq_topic=name,
                partition=item.ref.partition,
                offset=item.ref.offset,
                operator=operator,
                at=now(),
            )
            await kafka.record(action)
            report.done.append(action)
        return report
