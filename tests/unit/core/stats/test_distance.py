"""Distances between distributions, on literal vectors and on binned sketches."""

from __future__ import annotations

import math

import pytest

from controller.core.stats import (
    CategoricalCounts,
    QuantileSketch,
    chi_square_homogeneity,
    common_bins,
    js_divergence,
    l_infinity,
    psi,
)
from controller.core.stats.distance import categorical_bins, chi2_sf, sketch_on_edges

from ..factories import draw


def sketch_of(values: list[float]) -> QuantileSketch:
    sketch = QuantileSketch()
    sketch.add_many(values)
    return sketch


def test_js_divergence_is_zero_for_equal_and_one_for_disjoint_distributions() -> None:
    assert 0.0 == js_divergence([1, 2, 3], [2, 4, 6])
    assert 1.0 == js_divergence([1, 0], [0, 1])


def test_js_divergence_of_a_literal_pair_in_bits() -> None:
    expected = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5 * 1.0)

    assert js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(expected)
    assert js_divergence([0.5, 0.5], [1, 0]) == pytest.approx(expected)


def test_psi_of_a_literal_pair() -> None:
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)

    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)


def test_psi_floors_empty_bins_instead_of_dividing_by_zero() -> None:
    assert math.isfinite(psi([1, 0], [0, 1]))


def test_l_infinity_is_the_largest_change_of_one_share() -> None:
    assert 0.3 == pytest.approx(l_infinity([0.5, 0.3, 0.2], [0.2, 0.4, 0.4]))


@pytest.mark.parametrize(
    ("x", "df", "expected"),
    [(3.841459, 1, 0.05), (18.307038, 10, 0.05), (6.634897, 1, 0.01), (2.0, 2, math.exp(-1.0))],
)
def test_chi_square_tail_matches_tables(x: float, df: int, expected: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(expected, rel=1e-5)


def test_chi_square_tail_is_one_at_zero_and_tiny_far_out() -> None:
    assert 1.0 == chi2_sf(0.0, 3)
    assert chi2_sf(500.0, 9) < 1e-90


def test_chi_square_homogeneity_of_a_two_by_two_table() -> None:
    result = chi_square_homogeneity([10, 20], [20, 10])

    assert result.statistic == pytest.approx(20 / 3)
    assert 1 == result.df
    assert result.p_value == pytest.approx(chi2_sf(20 / 3, 1))


def test_identical_samples_are_perfectly_homogeneous() -> None:
    assert 1.0 == chi_square_homogeneity([5, 0, 7], [10, 0, 14]).p_value


def test_common_bins_cut_both_sketches_at_shared_edges_and_keep_every_count() -> None:
    a = sketch_of(draw(1_000, seed=1, sample=lambda r: r.gauss(0, 1)))
    b = sketch_of(draw(3_000, seed=2, sample=lambda r: r.gauss(0, 1)))

    binned = common_bins(a, b, bins=10)

    assert (1_000, 3_000) == (sum(binned.a), sum(binned.b))
    assert 9 <= len(binned.labels) <= 11
    assert js_divergence(binned.a, binned.b) < 0.02


def test_common_bins_of_disjoint_samples_give_the_maximum_divergence() -> None:
    low, high = sketch_of([1.0, 2.0, 3.0] * 100), sketch_of([100.0, 200.0] * 100)

    binned = common_bins(low, high)

    assert 1.0 == js_divergence(binned.a, binned.b)


def test_categorical_bins_align_on_the_union_of_categories() -> None:
    a, b = CategoricalCounts(), CategoricalCounts()
    a.add_many(["x", "y", "y"])
    b.add_many(["z", "y"])

    assert (["x", "y", "z"], [1, 2, 0], [0, 1, 1]) == categorical_bins(a, b)


def test_a_sketch_re_binned_on_fixed_edges_lands_in_the_right_bins() -> None:
    histogram = sketch_on_edges(sketch_of([-5.0, 0.5, 1.5, 1.6, 50.0]), [0.0, 1.0, 2.0])

    assert [1, 1, 2, 1] == histogram.counts
