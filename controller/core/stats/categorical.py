"""Counts of categorical values (class labels, string features, error types).

Cardinality is bounded without losing exact merging: a counter keeps per-category counts while the
stream has at most `max_categories` distinct values. Once the *whole* stream has more, it is
`overflowed`: it keeps the total and drops the detail. Whether a stream has more than N distinct
values does not depend on order or on how it was split, so merging stays associative,
commutative and `==` to counting the whole stream at once. Detectors report an overflowed field as
not comparable instead of guessing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from controller.core.stats.errors import IncompatibleStatsError

DEFAULT_MAX_CATEGORIES = 256


class CategoricalCounts:
    """Count per category, with a cap on distinct categories. Mutable `add`; pure `merged`."""

    __slots__ = ("counts", "max_categories", "overflowed", "total")

    def __init__(self, max_categories: int = DEFAULT_MAX_CATEGORIES) -> None:
        if max_categories < 1:
            raise ValueError(f"max_categories must be at least 1, got {max_categories}")
        self.max_categories = int(max_categories)
        self.counts: dict[str, int] = {}
        self.total = 0
        self.overflowed = False

    def add(self, category: str, count: int = 1) -> None:
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        if count == 0:
            return
        self.total += count
        if self.overflowed:
            return
        counts = self.counts
        if category in counts:
            counts[category] += count
        elif len(counts) < self.max_categories:
            counts[category] = count
        else:
            self._overflow()

    def add_many(self, categories: Iterable[str]) -> None:
        """Count each category once: `==` to calling `add` on each in turn (whether the stream
        overflows depends only on its distinct values), grouped by a Counter first."""
        self.add_counts(Counter(categories))

    def add_counts(self, counted: Mapping[str, int]) -> None:
        """Count categories counted elsewhere, in their order: `==` to `add_many` of the stream
        they were counted from."""
        for category, count in counted.items():
            self.add(category, count)

    def merge_from(self, other: CategoricalCounts) -> None:
        """Count `other`'s stream into this one, in place: `==` to `self.merged(other)`."""
        self.check_compatible(other)
        self.total += other.total
        if other.overflowed:
            self._overflow()
        if self.overflowed:
            return
        counts = self.counts
        for category, count in other.counts.items():
            counts[category] = counts.get(category, 0) + count
        if len(counts) > self.max_categories:
            self._overflow()

    def _overflow(self) -> None:
        self.overflowed = True
        self.counts = {}

    def proportions(self) -> dict[str, float]:
        """Share of each category; empty when there is no count or the detail overflowed."""
        if not self.total or self.overflowed:
            return {}
        return {category: count / self.total for category, count in self.counts.items()}

    def check_compatible(self, other: CategoricalCounts) -> None:
        if self.max_categories != other.max_categories:
            raise IncompatibleStatsError(
                f"cannot merge categorical counts capped at {self.max_categories} and "
                f"{other.max_categories} categories; build both with the same max_categories"
            )

    def copy(self) -> CategoricalCounts:
        clone = CategoricalCounts(self.max_categories)
        clone.counts = dict(self.counts)
        clone.total = self.total
        clone.overflowed = self.overflowed
        return clone

    def merged(self, other: CategoricalCounts) -> CategoricalCounts:
        """A new counter of both streams; neither input changes."""
        result = self.copy()
        result.merge_from(other)
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_categories": self.max_categories,
            "total": self.total,
            "overflowed": self.overflowed,
            "counts": dict(sorted(self.counts.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalCounts:
        counter = cls(int(data.get("max_categories", DEFAULT_MAX_CATEGORIES)))
        counter.counts = {str(k): int(v) for k, v in data.get("counts", {}).items()}
        counter.total = int(data.get("total", sum(counter.counts.values())))
        counter.overflowed = bool(data.get("overflowed", False))
        return counter

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CategoricalCounts):
            return NotImplemented
        return (
            self.max_categories == other.max_categories
            and self.total == other.total
            and self.overflowed == other.overflowed
            and self.counts == other.counts
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        detail = "overflowed" if self.overflowed else f"{len(self.counts)} categories"
        return f"CategoricalCounts(total={self.total}, {detail})"
