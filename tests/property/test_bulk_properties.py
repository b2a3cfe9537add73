"""The bulk paths record exactly what the one-by-one paths record.

The worker folds predictions in bulk (`CohortStats.observe_many`, `QuantileSketch.add_many`,
`CategoricalCounts.add_many`) and merges deltas in place (`merge_from`); replay and the reference
definitions observe one value at a time and merge into copies. Every statistic must come out
`==` whichever path built it, on any stream, including the odd values (ints, booleans, NaN,
infinities, class scores, features missing from some events).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.stats import (
    CategoricalCounts,
    CohortStats,
    ExactCounts,
    Observation,
    QuantileSketch,
    StatsConfig,
)

numbers = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
sketch_values = st.lists(
    numbers | st.integers(-1000, 1000) | st.sampled_from([0.0, -0.0, 1e-10, -1e-10]),
    max_size=200,
)
bucket_budgets = st.sampled_from([4, 16, 2048])
feature_values = st.one_of(
    st.none(),
    numbers,
    st.integers(-5, 5),
    st.sampled_from([0.0, -0.0, 0.5, 1.0]),  # few distinct numbers: counted exactly
    st.sampled_from(["red", "green", "blue"]),
    st.booleans(),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
predictions = st.one_of(
    st.none(),
    numbers,
    st.integers(-5, 5),
    st.sampled_from([0.0, -0.0, 1.0]),
    st.booleans(),
    st.sampled_from(["cat", "dog", math.nan]),
    st.dictionaries(st.sampled_from(["cat", "dog"]), st.floats(0, 1), min_size=1),
)
observations = st.builds(
    Observation,
    ok=st.booleans(),
    latency_ms=st.floats(-1.0, 1e5) | st.sampled_from([math.nan, math.inf, 0.0]),
    event_time=st.floats(1.7e9, 1.7e9 + 3600),
    error_type=st.sampled_from([None, "timeout", "oom", "disk"]),
    prediction=predictions,
    features=st.none()
    | st.dictionaries(st.sampled_from(["age", "plan", "score"]), feature_values, max_size=3),
)
#: small caps, so that generated streams both stay under them and overflow them
CONFIG = StatsConfig(max_buckets=16, max_categories=3, max_error_types=2, max_exact_values=4)


def one_by_one(stats: CohortStats, rows: list[Observation]) -> CohortStats:
    for row in rows:
        stats.observe(**row._asdict())
    return stats


@given(sketch_values, sketch_values, bucket_budgets)
def test_a_sketch_takes_a_list_as_if_value_by_value(
    before: list[float], values: list[float], budget: int
) -> None:
    expected, actual = (QuantileSketch(alpha=0.02, max_buckets=budget) for _ in range(2))
    for value in [*before, *values]:
        expected.add(value)
    for value in before:
        actual.add(value)

    actual.add_many(values)

    assert expected == actual
    assert expected.to_dict() == actual.to_dict()


def test_a_non_finite_value_is_refused_before_anything_is_recorded() -> None:
    sketch = QuantileSketch()

    with pytest.raises(ValueError, match="finite"):
        sketch.add_many([1.0, math.nan, 2.0])

    assert QuantileSketch() == sketch


@given(
    st.lists(st.sampled_from("abcdefg"), max_size=30),
    st.lists(st.sampled_from("abcdefg"), max_size=30),
)
def test_categories_counted_in_bulk_equal_categories_counted_one_by_one(
    before: list[str], categories: list[str]
) -> None:
    expected, actual = CategoricalCounts(max_categories=4), CategoricalCounts(max_categories=4)
    for category in [*before, *categories]:
        expected.add(category)
    for category in before:
        actual.add(category)

    actual.add_many(categories)

    assert expected == actual


@given(
    st.lists(st.sampled_from([0.0, -0.0, 1.0, 2.5, 3.0, -7.0]), max_size=30),
    st.lists(st.sampled_from([0.0, -0.0, 1.0, 2.5, 3.0, -7.0]) | numbers, max_size=30),
)
def test_exact_counts_in_bulk_equal_exact_counts_one_by_one(
    before: list[float], values: list[float]
) -> None:
    expected, actual = ExactCounts(max_values=4), ExactCounts(max_values=4)
    for value in [*before, *values]:
        expected.add(value)
    for value in before:
        actual.add(value)

    actual.add_many(values)

    assert expected == actual


@settings(max_examples=150, deadline=None)
@given(st.lists(observations, max_size=10), st.lists(observations, max_size=40))
def test_observing_in_bulk_equals_observing_one_by_one(
    before: list[Observation], rows: list[Observation]
) -> None:
    expected = one_by_one(CohortStats(CONFIG), [*before, *rows])
    actual = one_by_one(CohortStats(CONFIG), before)

    actual.observe_many(rows)

    assert expected == actual
    assert expected.to_dict() == actual.to_dict()


@settings(max_examples=50, deadline=None)
@given(st.lists(observations, min_size=1, max_size=20))
def test_aware_datetimes_count_as_their_epoch_seconds(rows: list[Observation]) -> None:
    times = [datetime.fromtimestamp(r.event_time, UTC) for r in rows]  # to the microsecond
    dated = [r._replace(event_time=t) for r, t in zip(rows, times, strict=True)]
    expected = one_by_one(
        CohortStats(CONFIG),
        [r._replace(event_time=t.timestamp()) for r, t in zip(rows, times, strict=True)],
    )
    actual = CohortStats(CONFIG)

    actual.observe_many(dated)

    assert expected == actual


@pytest.mark.parametrize(
    "bad_time", [math.nan, math.inf, datetime(2026, 1, 1)], ids=["nan", "inf", "naive"]
)
def test_a_bad_event_time_is_refused_before_anything_is_recorded(bad_time: Any) -> None:
    stats = CohortStats(CONFIG)
    rows = [Observation(ok=True, latency_ms=1.0, event_time=bad_time)]

    with pytest.raises(ValueError, match="event_time"):
        stats.observe_many(rows)

    assert CohortStats(CONFIG) == stats


@settings(max_examples=80, deadline=None)
@given(st.lists(observations, max_size=20), st.lists(observations, max_size=20))
def test_merging_in_place_equals_merging_into_a_copy(
    mine: list[Observation], theirs: list[Observation]
) -> None:
    target, other = one_by_one(CohortStats(CONFIG), mine), one_by_one(CohortStats(CONFIG), theirs)
    expected = target.merged(other)
    other_before = other.copy()

    target.merge_from(other)

    assert expected == target
    assert other_before == other


@settings(max_examples=40, deadline=None)
@given(st.lists(observations, min_size=1, max_size=20), st.lists(observations, max_size=20))
def test_merging_in_place_shares_nothing_with_the_merged_stats(
    theirs: list[Observation], later: list[Observation]
) -> None:
    other = one_by_one(CohortStats(CONFIG), theirs)
    other_before = other.copy()
    target = CohortStats(CONFIG)
    target.merge_from(other)

    one_by_one(target, later)  # the merged-into side keeps changing

    assert other_before == other
