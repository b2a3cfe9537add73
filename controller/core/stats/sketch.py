"""A relative-error quantile sketch (DDSketch) that merges exactly.

Values map to logarithmic buckets: with `gamma = (1 + alpha) / (1 - alpha)`, a positive value v
goes to key `ceil(log_gamma(v))`, the bucket `(gamma**(k-1), gamma**k]`, whose representative
`2 gamma**k / (1 + gamma)` is within a relative `alpha` of every value in it. So each quantile is
within `alpha` (1% by default) of the exact one (rank `floor(q (n - 1))`, 0-based). Negative values
go to a mirror store keyed by `|v|`; values within `min_positive` of zero to a zero bucket.

Memory is bounded: a store spans at most `max_buckets` consecutive keys; keys below its highest
key minus `max_buckets - 1` collapse into that floor key (the lowest values lose accuracy first,
tails stay exact). With the defaults that only happens for data spanning 17 orders of magnitude.

Merging is exact: the collapsed state depends only on the multiset of keys, so merging sketches of
any split of a stream, in any order, gives a sketch `==` to the one built from the whole stream.
The sum is kept exactly too: a short list of floats whose exact sum is the sum (values are
appended and, every 64, folded by `math.fsum` into a canonical expansion), compared in canonical
form, so `==` holds on every field, not just within rounding. A value beyond +-SUM_LIMIT (about
1e289) counts at that limit in the sum (its bucket, min and max stay exact): the sum of up to
2**63 of them still fits a float, so no sum, fold or stored form can overflow, whatever values a
producer sends; a feature at that scale has no meaningful mean anyway.

The hot path, `add`, is a log, a ceil, a dict update and a list append: well under a
microsecond in CPython. `add_many` takes a list in bulk, about twice as fast, with exactly the
same result.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from controller.core.stats.errors import IncompatibleStatsError

DEFAULT_ALPHA = 0.01
DEFAULT_MAX_BUCKETS = 2048
DEFAULT_MIN_POSITIVE = 1e-9


# --------------------------------------------------------------------------------------------
# Exact sums
# --------------------------------------------------------------------------------------------


def canonical_partials(partials: Iterable[float]) -> list[float]:
    """The canonical expansion of an exact sum: each term is the correctly rounded remainder.

    Two lists of partials with the same exact sum give the same list, whatever the order in which
    their values were added. Usually one term; never more than a few dozen.
    """
    rest = list(partials)
    terms: list[float] = []
    while True:
        head = math.fsum(rest)
        if head == 0.0:
            return terms
        terms.append(head)
        rest.append(-head)


def _weighted_terms(value: float, count: int) -> list[float]:
    """Floats whose exact sum is value * count (value * 2**k for each bit k of count)."""
    terms = []
    bit = 0
    while count:
        if count & 1:
            terms.append(math.ldexp(value, bit))
        count >>= 1
        bit += 1
    return terms


class SketchSummary(TypedDict):
    """What `add_many` would record for some values, summed up elsewhere (by the lane's
    compiled fold): `add_summary` of it is `==` to `add_many` of the values."""

    count: int
    #: values within `min_positive` of zero
    zero: int
    #: count per bucket key, `ceil(log(v) * multiplier)` of each positive value
    positive: Mapping[int, int]
    #: the same for the magnitude of each negative value
    negative: Mapping[int, int]
    min: float
    max: float
    #: floats whose exact sum is the exact sum of the values
    partials: list[float]


#: The pending addends are folded into their canonical expansion once there are this many.
_COMPACT_AT = 64
#: The magnitude at which a value saturates in the exact sum (module docstring).
SUM_LIMIT = 2.0**960


def _bounded(value: float) -> float:
    return value if -SUM_LIMIT <= value <= SUM_LIMIT else math.copysign(SUM_LIMIT, value)


# --------------------------------------------------------------------------------------------
# Buckets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket in ascending value order. `slot` sorts buckets of compatible sketches."""

    slot: tuple[int, int]
    lower: float
    upper: float
    value: float
    count: int


class _Store:
    """Counts per integer key, spanning at most `max_buckets` consecutive keys."""

    __slots__ = ("counts", "hi", "lo", "max_buckets")

    def __init__(self, max_buckets: int) -> None:
        self.max_buckets = max_buckets
        self.counts: dict[int, int] = {}
        self.lo = 0
        self.hi = 0

    def add(self, key: int, count: int) -> None:
        counts = self.counts
        if not counts:
            counts[key] = count
            self.lo = self.hi = key
            return
        if key > self.hi:
            self.hi = key
            floor = key - self.max_buckets + 1
            if self.lo < floor:
                self._collapse_below(floor)
        else:
            floor = self.hi - self.max_buckets + 1
            if key < floor:
                key = floor
        counts[key] = counts.get(key, 0) + count
        if key < self.lo:
            self.lo = key

    def add_counts(self, counted: Mapping[int, int]) -> None:
        """Add counts per key: the same store as `add` on each in turn, in any order (the
        collapsed state depends only on the keys and the highest of them)."""
        if not counted:
            return
        low, high = min(counted), max(counted)
        counts = self.counts
        if counts:
            if self.lo <= low and high <= self.hi:  # the common case: no bound moves
                for key, count in counted.items():
                    counts[key] = counts.get(key, 0) + count
                return
            low = min(low, self.lo)
            high = max(high, self.hi)
        floor = high - self.max_buckets + 1
        if counts and self.lo < floor:
            self._collapse_below(floor)
        moved = 0
        for key, count in counted.items():
            if key < floor:
                moved += count
            else:
                counts[key] = counts.get(key, 0) + count
        if moved:
            counts[floor] = counts.get(floor, 0) + moved
        self.lo = max(low, floor)
        self.hi = high

    def _collapse_below(self, floor: int) -> None:
        counts = self.counts
        moved = 0
        for key in [k for k in counts if k < floor]:
            moved += counts.pop(key)
        counts[floor] = counts.get(floor, 0) + moved
        self.lo = floor

    def copy(self) -> _Store:
        clone = _Store(self.max_buckets)
        clone.counts = dict(self.counts)
        clone.lo = self.lo
        clone.hi = self.hi
        return clone

    def pairs(self) -> list[tuple[int, int]]:
        """(key, count) in key order; JSON writes each as a two-element array."""
        return sorted(self.counts.items())


class QuantileSketch:
    """DDSketch with positive, negative and zero stores. Mutable `add`; pure `merged`.

    >>> sketch = QuantileSketch()
    >>> sketch.add_many([10.0, 20.0, 30.0])
    >>> round(sketch.quantile(0.5) or 0.0)
    20
    """

    __slots__ = (
        "_gamma",
        "_log_gamma",
        "_max",
        "_min",
        "_multiplier",
        "_negative",
        "_partials",
        "_positive",
        "alpha",
        "count",
        "max_buckets",
        "min_positive",
        "zero_count",
    )

    def __init__(
        self,
        alpha: float = DEFAULT_ALPHA,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        min_positive: float = DEFAULT_MIN_POSITIVE,
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if max_buckets < 2:
            raise ValueError(f"max_buckets must be at least 2, got {max_buckets}")
        if not (min_positive > 0.0 and math.isfinite(min_positive)):
            raise ValueError(f"min_positive must be a positive number, got {min_positive}")
        self.alpha = float(alpha)
        self.max_buckets = int(max_buckets)
        self.min_positive = float(min_positive)
        self._gamma = (1.0 + alpha) / (1.0 - alpha)
        self._log_gamma = math.log(self._gamma)
        self._multiplier = 1.0 / self._log_gamma
        self._positive = _Store(self.max_buckets)
        self._negative = _Store(self.max_buckets)
        self.zero_count = 0
        self.count = 0
        self._min = math.inf
        self._max = -math.inf
        self._partials: list[float] = []

    # ---- the hot path ------------------------------------------------------------------

    def add(self, value: float, count: int = 1) -> None:
        """Record `value` `count` times. Raises ValueError for a non-finite value."""
        if count != 1:
            if count == 0:
                return
            if count < 0:
                raise ValueError(f"count must not be negative, got {count}")
        if value > self.min_positive:
            if value == math.inf:
                raise ValueError("a sketch takes finite values only, got inf")
            key = math.ceil(math.log(value) * self._multiplier)
            store = self._positive
            counts = store.counts
            if counts and store.lo <= key <= store.hi:
                # the common case, inlined: a key inside the span moves no bounds
                counts[key] = counts.get(key, 0) + count
            else:
                store.add(key, count)
        elif value < -self.min_positive:
            if value == -math.inf:
                raise ValueError("a sketch takes finite values only, got -inf")
            self._negative.add(math.ceil(math.log(-value) * self._multiplier), count)
        elif value == value:
            self.zero_count += count
        else:
            raise ValueError("a sketch takes finite values only, got nan")
        self.count += count
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value
        parts = self._partials
        if count == 1:
            parts.append(_bounded(value))
        else:
            parts += _weighted_terms(_bounded(value), count)
        if len(parts) > _COMPACT_AT:
            self._partials = canonical_partials(parts)

    def add_many(self, values: Iterable[float]) -> None:
        """Record every value once: the bulk path, `==` to calling `add` on each in turn.

        A list is taken in a few passes at C speed (a sum checks that every value is finite,
        a Counter groups the bucket keys, `canonical_partials` folds the exact sum) instead of
        one `add` each, about twice as fast. Raises ValueError for a non-finite value
        before recording any."""
        values = values if isinstance(values, list) else list(values)
        n = len(values)
        if not n:
            return
        if not math.isfinite(sum(values)):  # a nan or an infinity, or an overflowing sum
            for value in values:
                if not math.isfinite(value):
                    raise ValueError(f"a sketch takes finite values only, got {value}")
        low, high = min(values), max(values)
        bound = self.min_positive
        multiplier = self._multiplier
        log, ceil = math.log, math.ceil
        if low > bound:
            positive = values
        else:
            positive = [v for v in values if v > bound] if high > bound else []
            negative = [-v for v in values if v < -bound] if low < -bound else []
            self.zero_count += n - len(positive) - len(negative)
            if negative:
                self._negative.add_counts(Counter([ceil(log(v) * multiplier) for v in negative]))
        if positive:
            self._positive.add_counts(Counter([ceil(log(v) * multiplier) for v in positive]))
        self._extend(n, low, high, values, are_values=True)

    def add_summary(self, summary: SketchSummary) -> None:
        """Record values summed up as a `SketchSummary` under this sketch's `multiplier` and
        `min_positive`: `==` to `add_many` of the values themselves."""
        if not summary["count"]:
            return
        self._positive.add_counts(summary["positive"])
        self._negative.add_counts(summary["negative"])
        self.zero_count += summary["zero"]
        summed = summary["partials"]
        self._extend(summary["count"], summary["min"], summary["max"], summed, are_values=False)

    def _extend(
        self, count: int, low: float, high: float, partials: list[float], are_values: bool
    ) -> None:
        """Count `count` values from `low` to `high` whose exact sum is that of `partials` (the
        values themselves when `are_values`); each bounded by SUM_LIMIT in the sum."""
        self.count += count
        if low < self._min:
            self._min = low
        if high > self._max:
            self._max = high
        parts = self._partials
        beyond = (
            high > SUM_LIMIT or low < -SUM_LIMIT
            if are_values
            else any(not -SUM_LIMIT <= v <= SUM_LIMIT for v in partials)
        )
        if beyond:
            partials = [_bounded(v) for v in partials]
        parts += partials
        if len(parts) > _COMPACT_AT:
            self._partials = canonical_partials(parts)

    @property
    def multiplier(self) -> float:
        """`1 / log(gamma)`: a positive value's bucket key is `ceil(log(v) * multiplier)`."""
        return self._multiplier

    # ---- reading -----------------------------------------------------------------------

    @property
    def sum(self) -> float:
        """The correctly rounded exact sum of every value added."""
        return math.fsum(self._partials)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    @property
    def min(self) -> float | None:
        return self._min if self.count else None

    @property
    def max(self) -> float | None:
        return self._max if self.count else None

    def is_empty(self) -> bool:
        return self.count == 0

    def key_of(self, value: float) -> tuple[int, int]:
        """The slot a value falls into (see `Bucket.slot`)."""
        if value > self.min_positive:
            return (1, math.ceil(math.log(value) * self._multiplier))
        if value < -self.min_positive:
            return (-1, -math.ceil(math.log(-value) * self._multiplier))
        return (0, 0)

    def _bounds(self, key: int) -> tuple[float, float, float]:
        upper = self._gamma**key
        lower = upper / self._gamma
        return lower, upper, 2.0 * upper / (1.0 + self._gamma)

    def buckets(self) -> Iterator[Bucket]:
        """Non-empty buckets in ascending value order, with representative values clamped to
        [min, max]. Slots compare across sketches with the same alpha and min_positive."""
        lo, hi = self._min, self._max
        for key in sorted(self._negative.counts, reverse=True):
            lower, upper, value = self._bounds(key)
            value = min(max(-value, lo), hi)
            yield Bucket((-1, -key), -upper, -lower, value, self._negative.counts[key])
        if self.zero_count:
            value = min(max(0.0, lo), hi)
            yield Bucket((0, 0), -self.min_positive, self.min_positive, value, self.zero_count)
        for key in sorted(self._positive.counts):
            lower, upper, value = self._bounds(key)
            value = min(max(value, lo), hi)
            yield Bucket((1, key), lower, upper, value, self._positive.counts[key])

    def slot_counts(self) -> list[tuple[tuple[int, int], int]]:
        """(slot, count) of every non-empty bucket in ascending value order: the cheap form of
        `buckets()` for binning and counting."""
        negative, positive = self._negative.counts, self._positive.counts
        result = [((-1, -k), negative[k]) for k in sorted(negative, reverse=True)]
        if self.zero_count:
            result.append(((0, 0), self.zero_count))
        result += [((1, k), positive[k]) for k in sorted(positive)]
        return result

    def joint_slot_counts(self, other: QuantileSketch) -> list[tuple[tuple[int, int], int, int]]:
        """(slot, count here, count in other) over the buckets of either, ascending."""
        self.check_compatible(other)
        joint: list[tuple[tuple[int, int], int, int]] = []
        mine, theirs = self._negative.counts, other._negative.counts
        for k in sorted(mine.keys() | theirs.keys(), reverse=True):
            joint.append(((-1, -k), mine.get(k, 0), theirs.get(k, 0)))
        if self.zero_count or other.zero_count:
            joint.append(((0, 0), self.zero_count, other.zero_count))
        mine, theirs = self._positive.counts, other._positive.counts
        for k in sorted(mine.keys() | theirs.keys()):
            joint.append(((1, k), mine.get(k, 0), theirs.get(k, 0)))
        return joint

    def slot_value(self, slot: tuple[int, int]) -> float:
        """The representative value of a slot, clamped to [min, max] when not empty."""
        sign, key = slot
        value = 0.0 if sign == 0 else sign * self._bounds(sign * key)[2]
        return min(max(value, self._min), self._max) if self.count else value

    def bucket_at(self, slot: tuple[int, int]) -> Bucket:
        """The bucket of a slot, with its bounds, representative value and count."""
        sign, key = slot
        if sign == 0:
            lower, upper, count = -self.min_positive, self.min_positive, self.zero_count
        elif sign > 0:
            lower, upper, _ = self._bounds(key)
            count = self._positive.counts.get(key, 0)
        else:
            low, high, _ = self._bounds(-key)
            lower, upper, count = -high, -low, self._negative.counts.get(-key, 0)
        return Bucket(slot, lower, upper, self.slot_value(slot), count)

    def quantile_bucket(self, q: float) -> Bucket | None:
        """The bucket holding the value at rank floor(q (count - 1)); None when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        if not self.count:
            return None
        rank = q * (self.count - 1)
        seen = 0
        slots = self.slot_counts()
        for slot, count in slots:
            seen += count
            if seen > rank:
                return self.bucket_at(slot)
        return self.bucket_at(slots[-1][0])  # pragma: no cover  (rank < count stops the loop)

    def quantile(self, q: float) -> float | None:
        """The value at rank floor(q (count - 1)), within a relative alpha; None when empty."""
        bucket = self.quantile_bucket(q)
        return None if bucket is None else bucket.value

    def count_above(self, slot: tuple[int, int]) -> int:
        """How many values fall in buckets after `slot` (strictly greater values)."""
        return sum(count for other, count in self.slot_counts() if other > slot)

    # ---- merging and copying -----------------------------------------------------------

    def params(self) -> tuple[float, int, float]:
        return (self.alpha, self.max_buckets, self.min_positive)

    def check_compatible(self, other: QuantileSketch) -> None:
        if self.params() != other.params():
            raise IncompatibleStatsError(
                "cannot merge or compare sketches with different (alpha, max_buckets, "
                f"min_positive): {self.params()} vs {other.params()}; build both with the same "
                "settings"
            )

    def copy(self) -> QuantileSketch:
        clone = QuantileSketch(self.alpha, self.max_buckets, self.min_positive)
        clone._positive = self._positive.copy()
        clone._negative = self._negative.copy()
        clone.zero_count = self.zero_count
        clone.count = self.count
        clone._min = self._min
        clone._max = self._max
        clone._partials = list(self._partials)
        return clone

    def merged(self, other: QuantileSketch) -> QuantileSketch:
        """A new sketch of both streams; neither input changes."""
        result = self.copy()
        result.merge_from(other)
        return result

    def merge_from(self, other: QuantileSketch) -> None:
        """Add `other`'s stream to this one, in place: `==` to `self.merged(other)`."""
        self.check_compatible(other)
        if not other.count:
            return
        self._positive.add_counts(other._positive.counts)
        self._negative.add_counts(other._negative.counts)
        self.zero_count += other.zero_count
        self.count += other.count
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        self._partials = canonical_partials(self._partials + other._partials)

    # ---- plain values ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "max_buckets": self.max_buckets,
            "min_positive": self.min_positive,
            "count": self.count,
            "zero_count": self.zero_count,
            "min": self.min,
            "max": self.max,
            "sum": self.sum,
            "sum_parts": canonical_partials(self._partials),
            "positive": self._positive.pairs(),
            "negative": self._negative.pairs(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantileSketch:
        sketch = cls(
            alpha=float(data["alpha"]),
            max_buckets=int(data["max_buckets"]),
            min_positive=float(data["min_positive"]),
        )
        sketch._positive.add_counts({int(k): int(c) for k, c in data.get("positive", [])})
        sketch._negative.add_counts({int(k): int(c) for k, c in data.get("negative", [])})
        sketch.zero_count = int(data.get("zero_count", 0))
        sketch.count = int(data["count"])
        if sketch.count:
            sketch._min = float(data["min"])
            sketch._max = float(data["max"])
        parts = data.get("sum_parts")
        sketch._partials = [float(p) for p in parts] if parts is not None else []
        if parts is None and data.get("sum"):
            sketch._partials = [float(data["sum"])]
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSketch):
            return NotImplemented
        return (
            self.params() == other.params()
            and self.count == other.count
            and self.zero_count == other.zero_count
            and self._positive.counts == other._positive.counts
            and self._negative.counts == other._negative.counts
            and self.min == other.min
            and self.max == other.max
            and canonical_partials(self._partials) == canonical_partials(other._partials)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        buckets = len(self._positive.counts) + len(self._negative.counts)
        return (
            f"QuantileSketch(count={self.count}, min={self.min}, max={self.max}, "
            f"alpha={self.alpha}, buckets={buckets})"
        )


#: Latencies are a QuantileSketch; the name says what the policy reads.
LatencySketch = QuantileSketch
