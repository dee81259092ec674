"""The order of an enrolment's lifecycle events (CONTRACT v1.1), as a pure decision.

An enrolment's *current lifecycle event* is the newest, by `occurred_at`, of its enrolled events
(`dcc.patient-enrolled.v1`) and withdrawals (`dcc.enrolment-withdrawn.v1`); on a tie the first one seen
stays current, so a replay can never flip the outcome. Events of one enrolment come on two topics and may
be consumed in any order or replayed: deciding against the current event alone gives the outcome of their
`occurred_at` order whatever the arrival order.

| current event       | incoming event                    | decision                                      |
|---------------------|-----------------------------------|-----------------------------------------------|
| none                | any                               | NEW: it becomes current, answer it            |
| same event_id       | same event, outcome not recorded  | RESUME: answer it (the process stopped midway)|
| same event_id       | same event, outcome recorded      | DUPLICATE: nothing to do                      |
| older               | newer (either kind)               | NEW: it supersedes the current one            |
| newer or same time  | older or same time                | STALE: superseded already, nothing to do      |

So a withdrawal newer than the enrolled event withdraws it; an enrolled event older than a withdrawal is
stale; an enrolled event newer than a withdrawal re-opens the enrolment, resolved from scratch.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Literal, TypeAlias

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
    if incoming.occurred_at > current.event.occurred_at:
        return Acceptance.NEW
    return Acceptance.STALE
