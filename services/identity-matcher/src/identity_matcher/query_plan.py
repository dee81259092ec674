"""Which patient-level C-FIND queries to send, from the broadest to the narrowest (pure).

We query by birth date only (a key every PACS honours exactly) and compare names locally with the strict
rules: PACS name matching (wildcards, case, accents) varies too much to be trusted. When a PACS caps or
refuses a large answer, the query is narrowed: first by sex (safe: a match needs equal M/F), then by the
first letter of the names, with each accented form of that letter (a PACS may store É where the DCC
writes E). The last level can miss a candidate whose stored name starts with another letter (e.g. a
used name that the DCC does not know): the outcome then says the answer was narrowed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

# Uppercase letters a PN may start with, per unaccented initial (Latin-1 and the French ligatures).
ACCENTED_INITIALS: Final[dict[str, str]] = {
    "A": "AÀÁÂÃÄÅÆ",
    "C": "CÇ",
    "E": "EÈÉÊË",
    "I": "IÌÍÎÏ",
    "N": "NÑ",
    "O": "OÒÓÔÕÖØŒ",
    "U": "UÙÚÛÜ",
    "Y": "YÝŸ",
}


@dataclass(frozen=True, slots=True)
class PatientKeys:
    """Matching keys of one patient-level C-FIND (unset keys are return keys only)."""

    birth_date: dt.date
    sex: str | None = None
    name_pattern: str | None = None


@dataclass(frozen=True, slots=True)
class QueryLevel:
    """One level of the plan: its queries' answers are united."""

    name: str
    queries: tuple[PatientKeys, ...]


def initial_patterns(normalised_names: list[str]) -> tuple[str, ...]:
    """`X*` wildcard patterns for the initials of the given normalised names, accented forms included."""
    patterns: list[str] = []
    for name in normalised_names:
        initial = name[:1]
        if not initial:
            continue
        for letter in ACCENTED_INITIALS.get(initial, initial):
            pattern = f"{letter}*"
            if pattern not in patterns:
                patterns.append(pattern)
    return tuple(patterns)


def query_plan(birth_date: dt.date, sex: str, normalised_names: list[str]) -> tuple[QueryLevel, ...]:
    """The levels to try in order; `sex` is the DCC's M/F; names are the DCC's normalised birth/used names."""
    by_sex = PatientKeys(birth_date, sex)
    return (
        QueryLevel("birth_date", (PatientKeys(birth_date),)),
        QueryLevel("birth_date+sex", (by_sex,)),
        QueryLevel(
            "birth_date+sex+initial",
            tuple(PatientKeys(birth_date, sex, pattern) for pattern in initial_patterns(normalised_names)),
        ),
    )


def vigilance_queries(birth_date: dt.date, sex: str) -> tuple[PatientKeys, ...]:
    """Extra queries whose answers can only be near misses (CONTRACT.md rule 6), never matches.

    Querying by birth date cannot find a record whose birth date was typed with day and month swapped, so
    that date is queried too (when it is a valid, different date). One-digit date errors would take dozens
    of queries and are not looked for.
    """
    if birth_date.day > 12 or birth_date.day == birth_date.month:
        return ()
    return (PatientKeys(birth_date.replace(month=birth_date.day, day=birth_date.month), sex),)
