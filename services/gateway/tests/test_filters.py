"""Filters as views: examples from CONTRACT.md / SEED.md §4.1, and properties."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from gateway import filters as flt
from hypothesis import given
from hypothesis import strategies as st
from proxymage_shared.events import MODALITIES, BetweenDates, ImagingFilters, NoDateFilter, WithinMonths


@dataclass(frozen=True)
class S:
    study_instance_uid: str
    date: dt.date | None
    modalities: tuple[str, ...]


TODAY = dt.date(2023, 3, 31)


def f(modalities: tuple[str, ...] = (), date_filter: object = None) -> ImagingFilters:
    return ImagingFilters.model_validate(
        {"modalities": modalities, "date_filter": date_filter or {"kind": "none"}}, strict=False
    )


@pytest.mark.parametrize(
    ("today", "months", "expected"),
    [
        (dt.date(2023, 3, 31), 1, dt.date(2023, 2, 28)),
        (dt.date(2024, 3, 31), 1, dt.date(2024, 2, 29)),
        (dt.date(2023, 3, 15), 6, dt.date(2022, 9, 15)),
        (dt.date(2023, 1, 31), 1, dt.date(2022, 12, 31)),
        (dt.date(2023, 5, 31), 3, dt.date(2023, 2, 28)),
        (dt.date(2023, 3, 1), 12, dt.date(2022, 3, 1)),
        (dt.date(2023, 3, 1), 0, dt.date(2023, 3, 1)),
    ],
)
def test_months_back_is_calendar_and_end_of_month_safe(today: dt.date, months: int, expected: dt.date) -> None:
    assert flt.months_back(today, months) == expected


def test_modalities_any_of_and_empty_means_all() -> None:
    ct_sr = S("1", TODAY, ("CT", "SR"))
    assert flt.matches(ct_sr, f(("SR",)), TODAY)
    assert not flt.matches(ct_sr, f(("MR", "PT")), TODAY)
    assert flt.matches(ct_sr, f(()), TODAY)
    assert flt.matches(S("2", TODAY, ()), f(()), TODAY)
    assert not flt.matches(S("2", TODAY, ()), f(("CT",)), TODAY)
    assert flt.matches(S("3", TODAY, (" ct",)), f(("CT",)), TODAY)


def test_between_is_inclusive() -> None:
    between = f((), {"kind": "between", "from": "2023-01-01", "to": "2023-03-31"})
    assert flt.matches(S("1", dt.date(2023, 1, 1), ("CT",)), between, TODAY)
    assert flt.matches(S("1", dt.date(2023, 3, 31), ("CT",)), between, TODAY)
    assert not flt.matches(S("1", dt.date(2022, 12, 31), ("CT",)), between, TODAY)
    assert not flt.matches(S("1", dt.date(2023, 4, 1), ("CT",)), between, TODAY)


def test_within_months_and_undated_studies() -> None:
    six = f((), {"kind": "within_months", "months": 1})
    assert flt.matches(S("1", dt.date(2023, 2, 28), ()), six, TODAY)
    assert not flt.matches(S("1", dt.date(2023, 2, 27), ()), six, TODAY)
    assert not flt.matches(S("1", None, ()), six, TODAY)  # a date filter needs a date
    assert flt.matches(S("1", None, ()), f(()), TODAY)  # no date filter: listed


def test_selected_studies_are_always_listed_in_order() -> None:
    studies = [S("1", dt.date(2000, 1, 1), ("US",)), S("2", TODAY, ("CT",)), S("3", None, ("MR",))]
    strict = f(("CT",), {"kind": "within_months", "months": 1})
    assert [s.study_instance_uid for s in flt.visible(studies, strict, ["3"], TODAY)] == ["2", "3"]
    assert [s.study_instance_uid for s in flt.visible(studies, strict, [], TODAY)] == ["2"]


def test_overrides() -> None:
    defaults = f(("CT", "MR"), {"kind": "within_months", "months": 6})
    assert flt.effective_filters(defaults, flt.Overrides()) == defaults
    assert flt.effective_filters(None, flt.Overrides()) == flt.NO_FILTER
    assert flt.effective_filters(defaults, flt.Overrides(all=True, modalities="US")) == flt.NO_FILTER
    assert flt.effective_filters(defaults, flt.Overrides(modalities="us, PT,US")).modalities == ("US", "PT")
    assert flt.effective_filters(defaults, flt.Overrides(modalities="")).modalities == ()
    between = flt.effective_filters(defaults, flt.Overrides(date_from=TODAY, date_to=TODAY))
    assert between.date_filter == BetweenDates(kind="between", date_from=TODAY, date_to=TODAY)
    assert between.modalities == ("CT", "MR")
    within = flt.effective_filters(defaults, flt.Overrides(within_months=2))
    assert within.date_filter == WithinMonths(kind="within_months", months=2)


@pytest.mark.parametrize(
    "overrides",
    [
        flt.Overrides(modalities="CT,XX"),
        flt.Overrides(date_from=TODAY),
        flt.Overrides(date_from=TODAY, date_to=TODAY - dt.timedelta(days=1)),
        flt.Overrides(date_from=TODAY, date_to=TODAY, within_months=3),
    ],
)
def test_invalid_overrides(overrides: flt.Overrides) -> None:
    with pytest.raises(flt.InvalidFilterError):
        flt.effective_filters(None, overrides)


dates = st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31))
modality_sets = st.lists(st.sampled_from(MODALITIES), unique=True, max_size=5).map(tuple)
studies_st = st.lists(
    st.builds(S, st.uuids().map(str), st.none() | dates, st.lists(st.sampled_from(MODALITIES), max_size=3).map(tuple)),
    max_size=15,
)
date_filters = st.one_of(
    st.just(NoDateFilter(kind="none")),
    st.tuples(dates, dates).map(lambda pair: BetweenDates(kind="between", date_from=min(pair), date_to=max(pair))),
    st.integers(1, 1200).map(lambda months: WithinMonths(kind="within_months", months=months)),
)
filters_st = st.builds(ImagingFilters, modalities=modality_sets, date_filter=date_filters)


@given(dates, st.integers(0, 1200))
def test_months_back_properties(today: dt.date, months: int) -> None:
    earlier = flt.months_back(today, months)
    assert earlier <= today
    assert (today.year * 12 + today.month) - (earlier.year * 12 + earlier.month) == months
    assert earlier.day == today.day or (earlier.day < today.day and (earlier + dt.timedelta(days=1)).day == 1)


@given(studies_st, filters_st, st.data(), dates)
def test_visible_keeps_order_selection_and_only_matching(
    studies: list[S], filters: ImagingFilters, data: st.DataObject, today: dt.date
) -> None:
    selected = data.draw(
        st.lists(st.sampled_from([s.study_instance_uid for s in studies]) if studies else st.nothing())
    )
    listed = flt.visible(studies, filters, selected, today)
    assert [s for s in studies if s in listed] == listed
    assert {s.study_instance_uid for s in studies if s.study_instance_uid in selected} <= {
        s.study_instance_uid for s in listed
    }
    for study in listed:
        assert study.study_instance_uid in selected or flt.matches(study, filters, today)
    assert flt.visible(studies, flt.NO_FILTER, [], today) == studies


@given(studies_st, modality_sets, modality_sets, dates)
def test_more_modalities_never_list_fewer(
    studies: list[S], some: tuple[str, ...], more: tuple[str, ...], today: dt.date
) -> None:
    narrow = f(some)
    wide = f(tuple(dict.fromkeys(some + more))) if some else f(())
    assert set(map(id, flt.visible(studies, narrow, [], today))) <= set(map(id, flt.visible(studies, wide, [], today)))
