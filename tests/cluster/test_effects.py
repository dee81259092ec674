"""Unit tests of the failover test's bookkeeping (no servers): a miscount there would hide a lost or doubled effect."""

from __future__ import annotations

import math

from .effects import account, latencies, percentile


def test_one_outcome_per_input_is_neither_lost_nor_duplicated() -> None:
    effects = account(["a", "b"], [("a", "out-a"), ("b", "out-b")])
    assert effects.lost == ()
    assert effects.duplicated == ()
    assert effects.redelivered == 0
    assert effects.sent == 2


def test_an_input_without_outcome_is_lost() -> None:
    effects = account(["a", "b", "c"], [("b", "out-b")])
    assert effects.lost == ("a", "c")


def test_two_distinct_outcomes_for_one_input_are_a_duplicated_effect() -> None:
    effects = account(["a"], [("a", "out-a"), ("a", "out-a-again")])
    assert effects.duplicated == ("a",)
    assert effects.lost == ()


def test_the_same_outcome_delivered_twice_is_a_redelivery_not_a_duplicate() -> None:
    effects = account(["a"], [("a", "out-a"), ("a", "out-a"), ("a", "out-a")])
    assert effects.duplicated == ()
    assert effects.redelivered == 2


def test_outcomes_of_other_inputs_are_reported_apart() -> None:
    effects = account(["a"], [("a", "out-a"), ("warm-up", "out-w")])
    assert effects.unexpected == ("out-w",)
    assert effects.lost == ()


def test_latencies_skip_inputs_without_outcome() -> None:
    assert latencies({"a": 1.0, "b": 2.0}, {"a": 1.25}) == {"a": 0.25}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.5) == 3.0
    assert math.isnan(percentile([], 0.5))
