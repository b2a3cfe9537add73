"""ExactCounts counts a field's distinct numbers exactly while there are few of them."""

from __future__ import annotations

import json

import pytest

from controller.core.stats import ExactCounts, IncompatibleStatsError


def counts_of(values: list[float], max_values: int = 4) -> ExactCounts:
    counts = ExactCounts(max_values)
    counts.add_many(values)
    return counts


def test_each_distinct_number_is_counted_with_zero_of_either_sign_as_one() -> None:
    counts = counts_of([1.0, 0.0, 1.0, -0.0, 0.5])

    assert ({0.0: 2, 1.0: 2, 0.5: 1}, 5, False) == (counts.counts, counts.total, counts.overflowed)


def test_more_distinct_numbers_than_the_cap_keep_the_total_and_drop_the_detail() -> None:
    counts = counts_of([1.0, 2.0, 3.0, 1.0, 4.0, 5.0, 1.0])

    assert ({}, 7, True) == (counts.counts, counts.total, counts.overflowed)


def test_counts_on_edges_follow_the_profile_convention() -> None:
    """Below the first edge, [edges[i-1], edges[i]), at or above the last: a value on an edge
    belongs to the bin that starts there."""
    counts = counts_of([0.0, 1.0, 1.0, 1.5, 2.0, 3.0], max_values=8)

    assert [1, 3, 2] == counts.on_edges((1.0, 2.0))


def test_overflowed_counts_cannot_be_binned() -> None:
    with pytest.raises(ValueError, match="use the sketch"):
        counts_of([1.0, 2.0, 3.0], max_values=2).on_edges((1.0,))


def test_a_summary_without_detail_overflows_the_counts() -> None:
    counts = counts_of([1.0])

    counts.add_summary(None, 300)

    assert (True, 301) == (counts.overflowed, counts.total)


def test_unknown_counts_are_overflowed_unless_there_were_no_numbers() -> None:
    assert ExactCounts.unknown(5).overflowed
    assert ExactCounts() == ExactCounts.unknown(0)


def test_counts_survive_json_and_merge_only_under_the_same_cap() -> None:
    counts = counts_of([0.1, 0.2, 0.1])

    assert counts == ExactCounts.from_dict(json.loads(json.dumps(counts.to_dict())))
    with pytest.raises(IncompatibleStatsError, match="max_exact_values"):
        counts.merge_from(ExactCounts(8))


def test_the_cap_the_profile_rules_assume_is_the_default_cap() -> None:
    from controller.core.stats import StatsConfig
    from schemas.events import MAX_EXACT_VALUES

    assert MAX_EXACT_VALUES == StatsConfig().max_exact_values == ExactCounts().max_values
