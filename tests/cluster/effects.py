"""Bookkeeping of the broker-failover test: which input events lost their effect or got it twice, and how late.

Definitions (issue 14 point 6):
- an input event's *effect* is the outcome event the service publishes for it (the identity-matcher answers
  each enrolled event with one `identity.resolved`, whose `event_id` is derived from the input event and the
  resolution, so a re-publication of the same resolution carries the same id);
- *lost*: an input event acknowledged by Kafka for which no outcome ever arrives;
- *duplicated*: an input event answered by two or more outcomes with different event ids, i.e. the effect
  applied twice (resolved twice) rather than the same outcome delivered twice;
- *redelivered*: a further copy of an outcome already received (same event id): at-least-once delivery,
  which every consumer absorbs by event id; counted, not an error.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Effects:
    sent: int
    lost: tuple[str, ...]
    duplicated: tuple[str, ...]
    redelivered: int
    unexpected: tuple[str, ...]  # outcomes answering no input event of the flow


def account(sent: Iterable[str], outcomes: Iterable[tuple[str, str]]) -> Effects:
    """`sent`: the input events' ids; `outcomes`: (input event id, outcome event id) of every outcome received,
    copies included."""
    sent_ids = list(sent)
    expected = set(sent_ids)
    answers: dict[str, set[str]] = defaultdict(set)
    copies = 0
    unexpected: list[str] = []
    for source_event_id, outcome_event_id in outcomes:
        if source_event_id not in expected:
            unexpected.append(outcome_event_id)
            continue
        if outcome_event_id in answers[source_event_id]:
            copies += 1
        answers[source_event_id].add(outcome_event_id)
    return Effects(
        sent=len(sent_ids),
        lost=tuple(event_id for event_id in sent_ids if not answers.get(event_id)),
        duplicated=tuple(event_id for event_id in sent_ids if len(answers.get(event_id, ())) > 1),
        redelivered=copies,
        unexpected=tuple(unexpected),
    )


def latencies(sent_at: Mapping[str, float], received_at: Mapping[str, float]) -> dict[str, float]:
    """Seconds from each input event's send to its outcome's first arrival (events without an outcome left out)."""
    return {event_id: received_at[event_id] - at for event_id, at in sent_at.items() if event_id in received_at}


def percentile(values: Iterable[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in [0, 1]) of `values`; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
