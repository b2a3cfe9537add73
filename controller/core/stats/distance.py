"""Distances between distributions, and the binning that makes two sketches comparable.

- `js_divergence`: Jensen-Shannon divergence in bits (base 2), in [0, 1]; 0 for equal
  distributions, 1 for disjoint ones. Symmetric and finite even with empty bins.
- `psi`: population stability index, sum (p - q) ln(p / q), empty bins floored at `epsilon`.
  Convention: < 0.1 no change, 0.1-0.2 moderate, > 0.2 significant.
- `l_infinity`: the largest difference in any one category's share.
- `chi_square_homogeneity`: Pearson's test that two samples share one distribution, with its
  p-value (`chi2_sf`, from the regularized incomplete gamma function).

Two sketches are binned on their common bucket grid (same alpha): `common_bins` cuts the pooled
buckets at the quantiles of the equal-weight mixture of both cohorts, so each bin holds about the
same share of "either" cohort and no bin is empty for both. Each bucket falls wholly in one bin,
so the counts are exact at bucket resolution. A sketch is compared with fixed edges (a training
profile) by `sketch_on_edges`, which assigns each bucket by its representative value.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import NamedTuple

from controller.core.stats.categorical import CategoricalCounts
from controller.core.stats.histogram import NumericHistogram
from controller.core.stats.sketch import QuantileSketch

DEFAULT_BINS = 10
PSI_EPSILON = 1e-4


def _normalized(weights: Sequence[float]) -> list[float]:
    total = math.fsum(weights)
    if total <= 0.0:
        raise ValueError("a distribution needs a positive total weight")
    return [w / total for w in weights]


def _check_lengths(p: Sequence[float], q: Sequence[float]) -> None:
    if len(p) != len(q):
        raise ValueError(f"distributions must have the same bins: {len(p)} vs {len(q)}")


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits of two weight vectors (normalized here)."""
    _check_lengths(p, q)
    p, q = _normalized(p), _normalized(q)
    total = 0.0
    for a, b in zip(p, q, strict=True):
        m = (a + b) / 2.0
        if a > 0.0:
            total += a * math.log2(a / m)
        if b > 0.0:
            total += b * math.log2(b / m)
    return min(max(total / 2.0, 0.0), 1.0)


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two weight vectors (normalized here)."""
    _check_lengths(expected, actual)
    p, q = _normalized(expected), _normalized(actual)
    total = 0.0
    for a, b in zip(p, q, strict=True):
        a, b = max(a, epsilon), max(b, epsilon)
        total += (b - a) * math.log(b / a)
    return total


def l_infinity(p: Sequence[float], q: Sequence[float]) -> float:
    """Largest absolute difference between the shares of one bin (normalized here)."""
    _check_lengths(p, q)
    p, q = _normalized(p), _normalized(q)
    return max(abs(a - b) for a, b in zip(p, q, strict=True))


# --------------------------------------------------------------------------------------------
# Chi-square
# --------------------------------------------------------------------------------------------


def _lower_gamma_series(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its series (x < a + 1)."""
    term = total = 1.0 / a
    n = a
    for _ in range(10_000):
        n += 1.0
        term *= x / n
        total += term
        if abs(term) < abs(total) * 1e-15:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _upper_gamma_fraction(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) by Lentz's continued fraction (x >= a + 1)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if x <= 0.0:
        return 1.0
    a, half = df / 2.0, x / 2.0
    if half < a + 1.0:
        return min(max(1.0 - _lower_gamma_series(a, half), 0.0), 1.0)
    return min(max(_upper_gamma_fraction(a, half), 0.0), 1.0)


class ChiSquare(NamedTuple):
    statistic: float
    df: int
    p_value: float


def chi_square_homogeneity(a: Sequence[int], b: Sequence[int]) -> ChiSquare:
    """Pearson's chi-square test that count vectors a and b come from one distribution.

    Bins empty in both are dropped; with fewer than two bins left there is nothing to test
    (statistic 0, p-value 1).
    """
    _check_lengths(a, b)
    columns = [(x, y) for x, y in zip(a, b, strict=True) if x + y > 0]
    n_a, n_b = sum(x for x, _ in columns), sum(y for _, y in columns)
    if len(columns) < 2 or n_a == 0 or n_b == 0:
        return ChiSquare(0.0, max(len(columns) - 1, 0), 1.0)
    n = n_a + n_b
    statistic = 0.0
    for x, y in columns:
        column = x + y
        expected_a, expected_b = n_a * column / n, n_b * column / n
        statistic += (x - expected_a) ** 2 / expected_a + (y - expected_b) ** 2 / expected_b
    df = len(columns) - 1
    return ChiSquare(statistic, df, chi2_sf(statistic, df))


# --------------------------------------------------------------------------------------------
# Binning two distributions the same way
# --------------------------------------------------------------------------------------------


class BinnedPair(NamedTuple):
    """Two count vectors over the same bins, with a label per bin."""

    labels: list[str]
    a: list[int]
    b: list[int]


def common_bins(a: QuantileSketch, b: QuantileSketch, bins: int = DEFAULT_BINS) -> BinnedPair:
    """Bin two compatible sketches on shared edges at the quantiles of their equal mixture.

    Labels read "<= upper" with the largest representative value in the bin.
    """
    a.check_compatible(b)
    if bins < 2:
        raise ValueError(f"need at least 2 bins, got {bins}")
    if a.is_empty() or b.is_empty():
        raise ValueError("both sketches need values to be binned together")
    pooled = a.joint_slot_counts(b)
    weight_a, weight_b = 0.5 / a.count, 0.5 / b.count
    labels: list[str] = []
    counts_a: list[int] = []
    counts_b: list[int] = []
    cumulative = 0.0
    next_cut = 1
    in_a = in_b = 0
    last = len(pooled) - 1
    for index, (slot, count_a, count_b) in enumerate(pooled):
        in_a += count_a
        in_b += count_b
        cumulative += count_a * weight_a + count_b * weight_b
        if cumulative >= next_cut / bins - 1e-12 or index == last:
            value = max(a.slot_value(slot), b.slot_value(slot))
            labels.append(f"<= {value:.6g}")
            counts_a.append(in_a)
            counts_b.append(in_b)
            in_a = in_b = 0
            while next_cut <= bins and cumulative >= next_cut / bins - 1e-12:
                next_cut += 1
    return BinnedPair(labels, counts_a, counts_b)


def categorical_bins(a: CategoricalCounts, b: CategoricalCounts) -> BinnedPair:
    """Two category counters aligned on the union of their categories (sorted)."""
    labels = sorted(set(a.counts) | set(b.counts))
    return BinnedPair(
        labels, [a.counts.get(k, 0) for k in labels], [b.counts.get(k, 0) for k in labels]
    )


def sketch_on_edges(sketch: QuantileSketch, edges: Sequence[float]) -> NumericHistogram:
    """Re-bin a sketch onto fixed edges, each bucket by its representative value."""
    histogram = NumericHistogram(edges)
    for bucket in sketch.buckets():
        histogram.counts[bisect.bisect_right(histogram.edges, bucket.value)] += bucket.count
    return histogram
