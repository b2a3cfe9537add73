"""A fixed-edge histogram with tails, laid out like a training profile."""

from __future__ import annotations

import json

import pytest

from controller.core.stats import IncompatibleStatsError, NumericHistogram


def test_values_fall_in_right_open_bins_with_underflow_and_overflow() -> None:
    histogram = NumericHistogram([0.0, 10.0, 20.0])
    histogram.add_many([-1.0, 0.0, 9.99, 10.0, 19.0, 20.0, 99.0])

    assert [1, 2, 2, 2] == histogram.counts


def test_proportions_sum_to_one() -> None:
    histogram = NumericHistogram([1.0], [1, 3])

    assert [0.25, 0.75] == histogram.proportions()


def test_merging_adds_counts_bin_by_bin() -> None:
    left, right = NumericHistogram([1.0, 2.0], [1, 2, 3]), NumericHistogram([1.0, 2.0], [3, 2, 1])

    assert NumericHistogram([1.0, 2.0], [4, 4, 4]) == left.merged(right)


def test_histograms_with_other_edges_do_not_merge() -> None:
    with pytest.raises(IncompatibleStatsError, match="bin edges"):
        NumericHistogram([1.0]).merged(NumericHistogram([2.0]))


@pytest.mark.parametrize("edges", [[], [2.0, 1.0], [1.0, 1.0], [float("nan")]])
def test_edges_must_be_finite_and_ascending(edges: list[float]) -> None:
    with pytest.raises(ValueError):
        NumericHistogram(edges)


def test_json_round_trip() -> None:
    histogram = NumericHistogram([0.5, 1.5], [3, 0, 7])

    assert histogram == NumericHistogram.from_dict(json.loads(json.dumps(histogram.to_dict())))
