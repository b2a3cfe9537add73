"""Category counts merge exactly, even when they overflow their cap."""

from __future__ import annotations

import json

import pytest

from controller.core.stats import CategoricalCounts, IncompatibleStatsError


def counts_of(*categories: str, cap: int = 256) -> CategoricalCounts:
    counter = CategoricalCounts(max_categories=cap)
    counter.add_many(categories)
    return counter


def test_counts_and_proportions() -> None:
    counter = counts_of("cat", "dog", "cat", "cat")

    assert {"cat": 3, "dog": 1} == counter.counts
    assert {"cat": 0.75, "dog": 0.25} == counter.proportions()


def test_more_distinct_categories_than_the_cap_drop_the_detail_but_keep_the_total() -> None:
    counter = counts_of("a", "b", "c", "a", cap=2)

    assert counter.overflowed
    assert 4 == counter.total
    assert {} == counter.proportions()


def test_overflow_depends_on_the_whole_stream_not_on_the_split() -> None:
    left, right = counts_of("a", "b", cap=3), counts_of("c", "d", cap=3)

    assert counts_of("a", "b", "c", "d", cap=3) == left.merged(right)
    assert not left.overflowed and not right.overflowed


def test_merging_equals_counting_everything_at_once() -> None:
    merged = counts_of("x", "y").merged(counts_of("y", "z"))

    assert counts_of("x", "y", "y", "z") == merged


def test_caps_must_match_to_merge() -> None:
    with pytest.raises(IncompatibleStatsError, match="max_categories"):
        counts_of("a", cap=2).merged(counts_of("a", cap=3))


def test_json_round_trip() -> None:
    counter = counts_of("b", "a", "b")

    assert counter == CategoricalCounts.from_dict(json.loads(json.dumps(counter.to_dict())))
