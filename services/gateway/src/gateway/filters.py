"""Filters as views (CONTRACT.md "Gateway REST", SEED.md §4.1 and §5): pure, no I/O.

The catalogue holds *all* studies of the linked patients; a filter only decides which are listed, so
changing a filter never re-queries a PACS. Rules:

- modalities: a study matches if any of its modalities is in the set; an empty set means all modalities.
  A study without any modality matches only when every modality is allowed (empty set).
- date: `none`; `between` from/to, both inclusive; `within_months` N: study date >= today minus N calendar
  months, clamped to the end of a shorter month (31 March minus 1 month is 28 or 29 February).
- a study without a date is listed only when no date filter applies (`none`): a date filter asks for a date
  we do not know, and hiding it is the conservative reading. A selected study is listed anyway.
- selected studies are always listed, whatever the filter.
- the RCP's defaults apply unless the request overrides them: `modalities=CT,MR` replaces the modality set
  (an empty value means all), `date_from` + `date_to` (both) give `between`, `within_months` gives
  `within_months`, `all=true` lists everything.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from proxymage_shared.events import (
    MODALITIES,
    BetweenDates,
    ImagingFilters,
    Modality,
    NoDateFilter,
    WithinMonths,
)

DateFilter = NoDateFilter | BetweenDates | WithinMonths
NO_FILTER = ImagingFilters(modalities=(), date_filter=NoDateFilter(kind="none"))


class InvalidFilterError(ValueError):
    """An override that cannot be applied (a message for the caller, no patient data)."""


class FilterableStudy(Protocol):
    @property
    def study_instance_uid(self) -> str: ...
    @property
    def date(self) -> dt.date | None: ...
    @property
    def modalities(self) -> Sequence[str]: ...


S = TypeVar("S", bound=FilterableStudy)


def months_back(today: dt.date, months: int) -> dt.date:
    """`today` minus `months` calendar months, the day clamped to the target month's length."""
    if months < 0:
        raise ValueError("months must be >= 0")
    index = today.year * 12 + (today.month - 1) - months
    year, month = divmod(index, 12)
    if year < dt.MINYEAR:
        return dt.date.min
    month += 1
    return dt.date(year, month, min(today.day, calendar.monthrange(year, month)[1]))


def matches_modalities(study_modalities: Iterable[str], wanted: Iterable[str]) -> bool:
    wanted_set = set(wanted)
    if not wanted_set:
        return True
    return any(modality.strip().upper() in wanted_set for modality in study_modalities)


def matches_date(
    study_date: dt.date | None, date_filter: NoDateFilter | BetweenDates | WithinMonths, today: dt.date
) -> bool:
    if isinstance(date_filter, NoDateFilter):
        return True
    if study_date is None:
        return False
    if isinstance(date_filter, BetweenDates):
        return date_filter.date_from <= study_date <= date_filter.date_to
    return study_date >= months_back(today, date_filter.months)


def matches(study: FilterableStudy, filters: ImagingFilters, today: dt.date) -> bool:
    return matches_modalities(study.modalities, filters.modalities) and matches_date(
        study.date, filters.date_filter, today
    )


def visible(studies: Iterable[S], filters: ImagingFilters, selected: Iterable[str], today: dt.date) -> list[S]:
    """The studies to list, in their original order: those matching `filters`, plus every selected one."""
    chosen = set(selected)
    return [study for study in studies if study.study_instance_uid in chosen or matches(study, filters, today)]


@dataclass(frozen=True, slots=True)
class Overrides:
    """What a request may override (query parameters of `GET /api/v1/enrolments/{id}`)."""

    modalities: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    within_months: int | None = None
    all: bool = False


def _any_case(code: str) -> str:
    return "".join(f"[{letter.upper()}{letter.lower()}]" for letter in code)


# What `parse_modalities` accepts, for the OpenAPI document: known codes in any case, separated by commas,
# spaces around them and empty items allowed.
_CODE = "(?:" + "|".join(_any_case(code) for code in MODALITIES) + ")"
MODALITY_LIST_PATTERN = f"^ *{_CODE}? *(?:, *{_CODE}? *)*$"


def parse_modalities(value: str) -> tuple[Modality, ...]:
    """`"CT,MR"` -> ("CT", "MR"); an empty value means all; unknown codes are refused."""
    codes: list[Modality] = []
    for raw in value.split(","):
        code = raw.strip().upper()
        if not code:
            continue
        if code not in MODALITIES:
            raise InvalidFilterError(f"unknown modality {code[:8]!r}; expected codes among {', '.join(MODALITIES)}")
        if code not in codes:
            codes.append(code)  # type: ignore[arg-type]  # checked against MODALITIES just above
    return tuple(codes)


def effective_filters(defaults: ImagingFilters | None, overrides: Overrides) -> ImagingFilters:
    """The RCP's defaults (none known: no filter) with the request's overrides applied."""
    if overrides.all:
        return NO_FILTER
    base = defaults or NO_FILTER
    modalities = base.modalities if overrides.modalities is None else parse_modalities(overrides.modalities)
    date_filter: DateFilter = base.date_filter
    has_between = overrides.date_from is not None or overrides.date_to is not None
    if has_between and overrides.within_months is not None:
        raise InvalidFilterError("give either date_from and date_to, or within_months, not both")
    if has_between:
        if overrides.date_from is None or overrides.date_to is None:
            raise InvalidFilterError("date_from and date_to go together")
        if overrides.date_from > overrides.date_to:
            raise InvalidFilterError("date_from is after date_to")
        date_filter = BetweenDates(kind="between", date_from=overrides.date_from, date_to=overrides.date_to)
    elif overrides.within_months is not None:
        date_filter = WithinMonths(kind="within_months", months=overrides.within_months)
    return ImagingFilters(modalities=modalities, date_filter=date_filter)
