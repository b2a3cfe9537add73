"""The values of one field, and how a cohort's statistics are configured.

`ValueDistribution` keeps numbers in a relative-error sketch (`QuantileSketch`) and, while the
field has at most `max_exact_values` distinct numbers, their exact counts too (`ExactCounts`: a
binary or integer feature is binned onto a profile's edges exactly); strings and booleans as
categories (`CategoricalCounts`); a field that carries both keeps both. `StatsConfig` says how
large those may grow. Both are mergeable plain values compared with `==`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.core.stats.categorical import DEFAULT_MAX_CATEGORIES, CategoricalCounts
from controller.core.stats.exact import DEFAULT_MAX_VALUES, ExactCounts
from controller.core.stats.profile import FeatureProfile
from controller.core.stats.sketch import (
    DEFAULT_ALPHA,
    DEFAULT_MAX_BUCKETS,
    DEFAULT_MIN_POSITIVE,
    QuantileSketch,
    SketchSummary,
)


@dataclass(frozen=True)
class StatsConfig:
    """Settings every cohort of a rollout shares; stats merge only under equal settings."""

    latency_alpha: float = DEFAULT_ALPHA
    value_alpha: float = DEFAULT_ALPHA
    max_buckets: int = DEFAULT_MAX_BUCKETS
    min_positive: float = DEFAULT_MIN_POSITIVE
    max_categories: int = DEFAULT_MAX_CATEGORIES
    max_error_types: int = 64
    max_class_scores: int = 16
    max_exact_values: int = DEFAULT_MAX_VALUES

    def latency_sketch(self) -> QuantileSketch:
        return QuantileSketch(self.latency_alpha, self.max_buckets, self.min_positive)

    def value_sketch(self) -> QuantileSketch:
        return QuantileSketch(self.value_alpha, self.max_buckets, self.min_positive)

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_alpha": self.latency_alpha,
            "value_alpha": self.value_alpha,
            "max_buckets": self.max_buckets,
            "min_positive": self.min_positive,
            "max_categories": self.max_categories,
            "max_error_types": self.max_error_types,
            "max_class_scores": self.max_class_scores,
            "max_exact_values": self.max_exact_values,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StatsConfig:
        return cls(**{k: data[k] for k in cls().to_dict() if k in data})


class ValueDistribution:
    """The values of one field: numbers in a sketch and, while few, counted exactly (`exact`);
    strings (and booleans) as categories. Numbers are recorded through `add_number`,
    `add_numbers` and `add_number_summary`, which keep the two in step."""

    __slots__ = ("categories", "exact", "numbers")

    def __init__(
        self,
        numbers: QuantileSketch,
        categories: CategoricalCounts,
        exact: ExactCounts | None = None,
    ) -> None:
        self.numbers = numbers
        self.categories = categories
        #: without it (a distribution stored before it existed): numbers of unknown detail
        self.exact = exact if exact is not None else ExactCounts.unknown(numbers.count)

    @classmethod
    def empty(cls, config: StatsConfig) -> ValueDistribution:
        return cls(
            config.value_sketch(),
            CategoricalCounts(config.max_categories),
            ExactCounts(config.max_exact_values),
        )

    def add_number(self, value: float) -> None:
        """Record a finite number."""
        self.numbers.add(value)
        self.exact.add(value)

    def add_numbers(self, values: Sequence[float]) -> None:
        """Record finite numbers: `==` to `add_number` of each in turn."""
        self.numbers.add_many(values)
        self.exact.add_many(values)

    def add_number_summary(self, summary: SketchSummary, exact: Mapping[float, int] | None) -> None:
        """Record numbers summed up elsewhere: their sketch summary and their exact counts
        (None: more distinct values than any cap keeps)."""
        self.numbers.add_summary(summary)
        self.exact.add_summary(exact, summary["count"])

    @property
    def count(self) -> int:
        return self.numbers.count + self.categories.total

    def is_numeric(self) -> bool:
        """True when most values were numbers (ties go to numbers)."""
        return self.numbers.count >= self.categories.total

    def merged(self, other: ValueDistribution) -> ValueDistribution:
        return ValueDistribution(
            self.numbers.merged(other.numbers),
            self.categories.merged(other.categories),
            self.exact.merged(other.exact),
        )

    def merge_from(self, other: ValueDistribution) -> None:
        """Add `other`'s values to these, in place: `==` to `self.merged(other)`."""
        self.numbers.merge_from(other.numbers)
        self.categories.merge_from(other.categories)
        self.exact.merge_from(other.exact)

    def copy(self) -> ValueDistribution:
        return ValueDistribution(self.numbers.copy(), self.categories.copy(), self.exact.copy())

    def to_dict(self) -> dict[str, Any]:
        return {
            "numbers": self.numbers.to_dict(),
            "categories": self.categories.to_dict(),
            "exact": self.exact.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValueDistribution:
        """Reads a distribution stored without `exact` (before it existed) as numbers of
        unknown detail (overflowed), so the detectors fall back to the sketch for it."""
        exact = data.get("exact")
        return cls(
            QuantileSketch.from_dict(data["numbers"]),
            CategoricalCounts.from_dict(data["categories"]),
            None if exact is None else ExactCounts.from_dict(exact),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ValueDistribution):
            return NotImplemented
        return (
            self.numbers == other.numbers
            and self.categories == other.categories
            and self.exact == other.exact
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return (
            f"ValueDistribution(numbers={self.numbers!r}, categories={self.categories!r}, "
            f"exact={self.exact!r})"
        )


def out_of_domain_count(distribution: ValueDistribution, profile: FeatureProfile) -> int:
    """Values of `distribution` outside the profile's domain (see `CohortStats.field_quality`)."""
    count = 0
    low, high = profile.domain_min, profile.domain_max
    if low is not None or high is not None:
        for bucket in distribution.numbers.buckets():
            if (low is not None and bucket.upper < low) or (
                high is not None and bucket.lower > high
            ):
                count += bucket.count
    if profile.allowed is not None and not distribution.categories.overflowed:
        allowed = set(profile.allowed)
        count += sum(c for k, c in distribution.categories.counts.items() if k not in allowed)
    return count
