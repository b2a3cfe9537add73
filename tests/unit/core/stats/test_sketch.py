"""The quantile sketch is accurate to alpha, bounded, and merges exactly."""

from __future__ import annotations

import json
import math
import random
import sys

import pytest

from controller.core.stats import IncompatibleStatsError, QuantileSketch

from ..factories import lognormal_latencies

QUANTILES = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_of_lognormal_latencies_are_within_one_percent(seed: int) -> None:
    values = lognormal_latencies(20_000, seed=seed, median_ms=80.0, sigma=1.2)
    sketch = QuantileSketch(alpha=0.01)
    sketch.add_many(values)

    for q in QUANTILES:
        exact = exact_quantile(values, q)
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) / exact <= 0.01 + 1e-12, q


def test_quantiles_of_values_of_both_signs_are_within_alpha() -> None:
    rng = random.Random(7)
    values = [rng.gauss(0.0, 10.0) for _ in range(5_000)]
    sketch = QuantileSketch(alpha=0.02)
    sketch.add_many(values)

    for q in QUANTILES:
        exact = exact_quantile(values, q)
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) <= 0.02 * abs(exact) + 1e-9, q


def test_count_sum_min_max_and_mean_are_exact() -> None:
    sketch = QuantileSketch()
    sketch.add_many([0.1, 0.2, 0.3])
    sketch.add(5.0, count=3)

    assert 6 == sketch.count
    assert 15.6 == sketch.sum
    assert 0.1 == sketch.min
    assert 5.0 == sketch.max
    assert 2.6 == sketch.mean


def test_zero_and_tiny_values_share_the_zero_bucket() -> None:
    sketch = QuantileSketch(min_positive=1e-6)
    sketch.add_many([0.0, 1e-9, -1e-9])

    assert 3 == sketch.zero_count
    assert 0.0 == sketch.quantile(0.5)


def test_an_empty_sketch_has_no_quantile() -> None:
    sketch = QuantileSketch()

    assert sketch.quantile(0.5) is None
    assert sketch.min is None
    assert sketch.mean is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(bad: float) -> None:
    sketch = QuantileSketch()

    with pytest.raises(ValueError, match="finite"):
        sketch.add(bad)
    assert QuantileSketch() == sketch


def test_memory_is_bounded_by_collapsing_the_lowest_buckets() -> None:
    sketch = QuantileSketch(max_buckets=50)
    sketch.add_many(10.0**k for k in range(-8, 9))

    assert len(list(sketch.buckets())) <= 50
    assert 17 == sketch.count
    top = sketch.quantile(1.0)
    assert top is not None and abs(top - 1e8) / 1e8 <= 0.01


def test_buckets_ascend_and_cover_every_value() -> None:
    sketch = QuantileSketch()
    sketch.add_many([-3.0, -1.0, 0.0, 2.0, 2.0, 50.0])

    buckets = list(sketch.buckets())

    assert [b.slot for b in buckets] == sorted(b.slot for b in buckets)
    assert 6 == sum(b.count for b in buckets)
    assert all(b.lower <= b.value <= b.upper for b in buckets)


def test_count_above_a_slot_counts_strictly_greater_buckets() -> None:
    sketch = QuantileSketch()
    sketch.add_many([10.0, 20.0, 20.0, 30.0, 40.0])

    assert 2 == sketch.count_above(sketch.key_of(20.0))


def test_merging_halves_equals_the_whole_stream_exactly() -> None:
    values = lognormal_latencies(2_000, seed=11)
    left, right, whole = QuantileSketch(), QuantileSketch(), QuantileSketch()
    left.add_many(values[:700])
    right.add_many(values[700:])
    whole.add_many(values)

    assert whole == left.merged(right)
    assert whole.to_dict() == right.merged(left).to_dict()


def test_merged_leaves_both_inputs_unchanged() -> None:
    left, right = QuantileSketch(), QuantileSketch()
    left.add(1.0)
    right.add(2.0)
    before = (left.to_dict(), right.to_dict())

    left.merged(right)

    assert before == (left.to_dict(), right.to_dict())


def test_sketches_with_other_settings_do_not_merge() -> None:
    with pytest.raises(IncompatibleStatsError, match="alpha"):
        QuantileSketch(alpha=0.01).merged(QuantileSketch(alpha=0.02))


def test_a_sketch_survives_a_json_round_trip() -> None:
    sketch = QuantileSketch()
    sketch.add_many([-2.5, 0.0, 0.1, 0.2, 0.3, 1e6])

    restored = QuantileSketch.from_dict(json.loads(json.dumps(sketch.to_dict())))

    assert sketch == restored
    assert sketch.sum == restored.sum


def test_a_summary_of_values_adds_like_the_values_themselves() -> None:
    values = [0.0, 1e-12, 3.5, -2.25, 1e6, 7.0, 7.0, -1e-3]
    summed = QuantileSketch()
    summed.add_many(values)
    sketch = QuantileSketch()
    sketch.add_many([1.0, 2.0])
    expected = sketch.copy()
    expected.add_many(values)

    sketch.add_summary(
        {
            "count": summed.count,
            "zero": summed.zero_count,
            "positive": dict(summed._positive.counts),
            "negative": dict(summed._negative.counts),
            "min": min(values),
            "max": max(values),
            "partials": list(values),
        }
    )

    assert expected == sketch
    assert QuantileSketch().multiplier == sketch.multiplier


def test_huge_values_saturate_the_sum_and_never_overflow() -> None:
    """The fuzz found it: two features of 1e308 overflowed the exact sum (`math.fsum`), and the
    statistics delta could not be written, losing its lane group."""
    from controller.core.stats.sketch import SUM_LIMIT

    top = sys.float_info.max
    one, bulk, merged = QuantileSketch(), QuantileSketch(), QuantileSketch()
    for value in (top, top, -top, top, 1.0):
        one.add(value)
    one.add(top, count=1_000)
    bulk.add_many([top] * 100 + [-top] * 3 + [5.0])
    merged.merge_from(one)
    merged.merge_from(bulk)

    for sketch in (one, bulk, merged):
        assert math.isfinite(sketch.sum)
        assert abs(sketch.sum) <= 2**63 * SUM_LIMIT
        assert sketch == QuantileSketch.from_dict(json.loads(json.dumps(sketch.to_dict())))
    assert (top, -top) == (one.max, one.min)  # min, max and buckets stay exact
    assert one.sum == pytest.approx(1_002 * SUM_LIMIT, rel=1e-9)
    small = QuantileSketch()
    small.add_many([1.5, 2.5])
    assert 4.0 == small.sum  # ordinary values are untouched
