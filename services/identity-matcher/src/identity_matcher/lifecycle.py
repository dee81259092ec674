"""The order of an enrolment's lifecycle events (CONTRACT v1.1), as a pure decision.

An enrolment's *current lifecycle event* is the newest of its enrolled events (`dcc.patient-enrolled.v1`)
and withdrawals (`dcc.enrolment-withdrawn.v1`), in the order every service gives events
(`idempotency.EventStamp`): by `occurred_at` truncated to the millisecond, then by `event_id`. Two events of
the same millisecond are thus still ordered, the same way whatever the order of arrival (before issue 12 the
first one seen stayed current on a tie, which depended on arrival); a replay is never newer, so it can never
flip the outcome. Events of one enrolment come on two topics and may be consumed in any order or replayed:
deciding against the current event alone gives the outcome of their order whatever the arrival order.

| current event       | incoming event                    | decision                                      |
|---------------------|-----------------------------------|-----------------------------------------------|
| none                | any                               | NEW: it becomes current, answer it            |
| same event_id       | same event, outcome not recorded  | RESUME: answer it (the process stopped midway)|
| same event_id       | same event, outcome recorded      | DUPLICATE: nothing to do                      |
| older               | newer (either kind)               | NEW: it supersedes the current one            |
| newer               | older                             | STALE: superseded already, nothing to do      |

So a withdrawal newer than the enrolled event withdraws it; an enrolled event older than a withdrawal is
stale; an enrolled event newer than a withdrawal re-opens the enrolment, resolved from scratch.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Literal, TypeAlias

from proxymage_shared.idempotency import EventStamp

LifecycleKind: TypeAlias = Literal["enrolled", "withdrawn"]


class Acceptance(enum.Enum):
    NEW = "new"  # first or newest lifecycle event of the enrolment: answer it
    RESUME = "resume"  # the current event again, not answered yet (the process stopped midway): answer it
    DUPLICATE = "duplicate"  # the current event again, already answered: nothing to do
    STALE = "stale"  # not newer than the current event: superseded, nothing to do


ANSWER: frozenset[Acceptance] = frozenset({Acceptance.NEW, Acceptance.RESUME})


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    kind: LifecycleKind
    event_id: str
    occurred_at: dt.datetime

    @property
    def stamp(self) -> EventStamp:
        return EventStamp.of(self.occurred_at, self.event_id)


@dataclass(frozen=True, slots=True)
class Current:
    """The enrolment's current lifecycle event and whether its outcome has been recorded."""

    event: LifecycleEvent
    answered: bool


def decide(current: Current | None, incoming: LifecycleEvent) -> Acceptance:
    if current is None:
        return Acceptance.NEW
    if current.event.event_id == incoming.event_id:
        return Acceptance.DUPLICATE if current.answered else Acceptance.RESUME
    if incoming.stamp.is_newer_than(current.event.stamp):
        return Acceptance.NEW
    return Acceptance.STALE
