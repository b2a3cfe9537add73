"""Invariants of the mergeable statistics: merging any split of a stream, in any order, gives
exactly (==) the statistics of the whole stream, and every statistic survives JSON."""

from __future__ import annotations

import itertools
import json
from functools import reduce
from typing import Any, TypeVar

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

T = TypeVar("T")

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
# Up to 150 values: past 64 the sketch folds its pending addends into the exact sum's expansion.
values = st.lists(finite | st.integers(-1000, 1000).map(float), max_size=150)
# A tiny bucket budget makes the collapsing of low buckets happen in most examples.
bucket_budgets = st.sampled_from([4, 16, 2048])


def sketch_of(items: list[float], max_buckets: int) -> QuantileSketch:
    sketch = QuantileSketch(alpha=0.02, max_buckets=max_buckets)
    sketch.add_many(items)
    return sketch


def json_round_trip(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(data, allow_nan=False))
    return result


def split(items: list[T], cuts: list[int]) -> list[list[T]]:
    points = sorted({c % (len(items) + 1) for c in cuts})
    edges = [0, *points, len(items)]
    return [items[a:b] for a, b in itertools.pairwise(edges)]


@given(values, st.lists(st.integers(0, 100), max_size=4), bucket_budgets)
def test_sketches_of_any_split_merge_to_the_sketch_of_the_whole(
    items: list[float], cuts: list[int], budget: int
) -> None:
    parts = [sketch_of(part, budget) for part in split(items, cuts)]

    merged = reduce(QuantileSketch.merged, parts)

    assert sketch_of(items, budget) == merged
    assert sketch_of(items, budget).to_dict() == merged.to_dict()


@given(values, values, values, bucket_budgets)
def test_sketch_merge_is_associative_and_commutative(
    a: list[float], b: list[float], c: list[float], budget: int
) -> None:
    x, y, z = (sketch_of(v, budget) for v in (a, b, c))

    assert x.merged(y).merged(z) == x.merged(y.merged(z))
    assert x.merged(y) == y.merged(x)


@given(values, bucket_budgets)
def test_a_sketch_survives_json(items: list[float], budget: int) -> None:
    sketch = sketch_of(items, budget)

    assert sketch == QuantileSketch.from_dict(json_round_trip(sketch.to_dict()))


@given(values, bucket_budgets)
def test_the_sum_is_exact_whatever_the_order(items: list[float], budget: int) -> None:
    assert sketch_of(items, budget) == sketch_of(list(reversed(items)), budget)


categories = st.lists(st.sampled_from("abcdefgh"), max_size=40)


def counts_of(items: list[str]) -> CategoricalCounts:
    counter = CategoricalCounts(max_categories=4)
    counter.add_many(items)
    return counter


@given(categories, st.lists(st.integers(0, 100), max_size=4))
def test_category_counts_of_any_split_merge_to_the_counts_of_the_whole(
    items: list[str], cuts: list[int]
) -> None:
    merged = reduce(CategoricalCounts.merged, [counts_of(p) for p in split(items, cuts)])

    assert counts_of(items) == merged


@given(categories, categories, categories)
def test_category_merge_is_associative_and_commutative(
    a: list[str], b: list[str], c: list[str]
) -> None:
    x, y, z = counts_of(a), counts_of(b), counts_of(c)

    assert x.merged(y).merged(z) == x.merged(y.merged(z))
    assert x.merged(y) == y.merged(x)


discrete = st.lists(st.sampled_from([0.0, -0.0, 1.0, 2.5, 3.0, -7.0]) | finite, max_size=40)


def exact_of(items: list[float]) -> ExactCounts:
    counter = ExactCounts(max_values=4)
    counter.add_many(items)
    return counter


@given(discrete, st.lists(st.integers(0, 100), max_size=4))
def test_exact_counts_of_any_split_merge_to_the_counts_of_the_whole(
    items: list[float], cuts: list[int]
) -> None:
    merged = reduce(ExactCounts.merged, [exact_of(p) for p in split(items, cuts)])

    assert exact_of(items) == merged


@given(discrete, discrete, discrete)
def test_exact_count_merge_is_associative_and_commutative(
    a: list[float], b: list[float], c: list[float]
) -> None:
    x, y, z = exact_of(a), exact_of(b), exact_of(c)

    assert x.merged(y).merged(z) == x.merged(y.merged(z))
    assert x.merged(y) == y.merged(x)


@given(discrete)
def test_exact_counts_survive_json(items: list[float]) -> None:
    counts = exact_of(items)

    assert counts == ExactCounts.from_dict(json_round_trip(counts.to_dict()))


feature_values = st.one_of(
    st.none(),
    finite,
    st.integers(-5, 5),
    st.sampled_from([0.0, -0.0, 0.5, 1.0]),  # few distinct numbers: counted exactly
    st.sampled_from(["red", "green", "blue"]),
    st.booleans(),
    st.just(float("nan")),
)
predictions = st.one_of(
    st.none(),
    finite,
    st.sampled_from([0.0, 1.0]),
    st.sampled_from(["cat", "dog"]),
    st.dictionaries(st.sampled_from(["cat", "dog"]), st.floats(0, 1), min_size=1),
)
observations = st.builds(
    Observation,
    ok=st.booleans(),
    latency_ms=st.floats(-1.0, 1e5, allow_nan=False) | st.just(float("nan")),
    event_time=st.floats(1.7e9, 1.7e9 + 3600),
    error_type=st.sampled_from([None, "timeout", "oom"]),
    prediction=predictions,
    features=st.none()
    | st.dictionaries(st.sampled_from(["age", "plan", "score"]), feature_values, max_size=3),
)
#: small caps, so that generated streams both stay under them and overflow them
CONFIG = StatsConfig(max_buckets=16, max_categories=3, max_error_types=2, max_exact_values=4)


def cohort_of(items: list[Observation]) -> CohortStats:
    return CohortStats.of(items, CONFIG)


@settings(max_examples=60, deadline=None)
@given(st.lists(observations, max_size=25), st.lists(st.integers(0, 100), max_size=3))
def test_cohort_stats_of_any_split_merge_to_the_stats_of_the_whole(
    items: list[Observation], cuts: list[int]
) -> None:
    merged = reduce(CohortStats.merged, [cohort_of(p) for p in split(items, cuts)])

    assert cohort_of(items) == merged


@settings(max_examples=40, deadline=None)
@given(*(st.lists(observations, max_size=10) for _ in range(3)))
def test_cohort_merge_is_associative_and_commutative(
    a: list[Observation], b: list[Observation], c: list[Observation]
) -> None:
    x, y, z = cohort_of(a), cohort_of(b), cohort_of(c)

    assert x.merged(y).merged(z) == x.merged(y.merged(z))
    assert x.merged(y) == y.merged(x)


@settings(max_examples=60, deadline=None)
@given(st.lists(observations, max_size=25))
def test_cohort_stats_survive_json(items: list[Observation]) -> None:
    stats = cohort_of(items)

    assert stats == CohortStats.from_dict(json_round_trip(stats.to_dict()))


@settings(max_examples=30, deadline=None)
@given(st.lists(observations, max_size=10))
def test_merging_with_empty_stats_changes_nothing(items: list[Observation]) -> None:
    stats = cohort_of(items)

    assert stats == stats.merged(CohortStats(CONFIG))
    assert stats == CohortStats(CONFIG).merged(stats)
