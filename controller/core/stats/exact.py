"""Exact counts of a field's distinct numbers, while there are few of them.

A relative-error sketch cannot say on which side of an edge a value lies when the edge is inside
its bucket, so it cannot bin a binary, an integer or a half-step feature onto a training
profile's edges. `ExactCounts` keeps the count of every distinct number instead, while the
stream has at most `max_values` of them; once the *whole* stream has more, it is `overflowed`:
it keeps the total and drops the detail (like `CategoricalCounts`). Whether a stream has more
than N distinct values does not depend on order or on how it was split, so merging stays
associative, commutative and `==` to counting the whole stream at once. `0.0` and `-0.0` are
one value.

`on_edges(edges)` counts the values on a profile's bins, exactly, with the profile's convention
(below the first edge, `[edges[i-1], edges[i])`, at or above the last).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from controller.core.stats.errors import IncompatibleStatsError

DEFAULT_MAX_VALUES = 256


class ExactCounts:
    """Count per distinct number, with a cap on distinct numbers. Mutable `add`; pure
    `merged`."""

    __slots__ = ("counts", "max_values", "overflowed", "total")

    def __init__(self, max_values: int = DEFAULT_MAX_VALUES) -> None:
        if max_values < 1:
            raise ValueError(f"max_values must be at least 1, got {max_values}")
        self.max_values = int(max_values)
        self.counts: dict[float, int] = {}
        self.total = 0
        self.overflowed = False

    @classmethod
    def unknown(cls, total: int, max_values: int = DEFAULT_MAX_VALUES) -> ExactCounts:
        """`total` values whose detail was not kept (stored before these counts existed)."""
        counts = cls(max_values)
        counts.total = total
        counts.overflowed = total > 0
        return counts

    # ---- recording ---------------------------------------------------------------------

    def add(self, value: float, count: int = 1) -> None:
        """Count a finite number `count` times (the caller checks that it is finite)."""
        self.total += count
        if not self.overflowed:
            self._insert(value, count)

    def _insert(self, value: float, count: int) -> None:
        counts = self.counts
        if value in counts:
            counts[value] += count
        elif len(counts) < self.max_values:
            counts[value] = count
        else:
            self._overflow()

    def add_many(self, values: Sequence[float]) -> None:
        """Count each value once: `==` to `add` on each in turn, grouped by a Counter first."""
        if self.overflowed:
            self.total += len(values)
            return
        self.add_counts(Counter(values))

    def add_counts(self, counted: Mapping[float, int]) -> None:
        """Count values counted elsewhere: `==` to `add_many` of the values they were counted
        from (the overflow depends only on the distinct values)."""
        self.total += sum(counted.values())
        for value, count in counted.items():
            if self.overflowed:
                return
            self._insert(value, count)

    def add_summary(self, counted: Mapping[float, int] | None, total: int) -> None:
        """Record `total` values counted elsewhere: `counted` per distinct value, or None when
        they had more distinct values than any cap keeps (the compiled lane's summary)."""
        if counted is None:
            self.total += total
            self._overflow()
        else:
            self.add_counts(counted)

    def _overflow(self) -> None:
        self.overflowed = True
        self.counts = {}

    # ---- reading -----------------------------------------------------------------------

    def on_edges(self, edges: Sequence[float]) -> list[int]:
        """The counts on `len(edges) + 1` bins: below the first edge, `[edges[i-1], edges[i])`,
        at or above the last. Only while not overflowed (else there is no detail to bin)."""
        if self.overflowed:
            raise ValueError("overflowed counts have no values to bin; use the sketch")
        bins = [0] * (len(edges) + 1)
        for value, count in self.counts.items():
            bins[bisect.bisect_right(edges, value)] += count
        return bins

    # ---- merging and plain values ------------------------------------------------------

    def check_compatible(self, other: ExactCounts) -> None:
        if self.max_values != other.max_values:
            raise IncompatibleStatsError(
                f"cannot merge exact counts capped at {self.max_values} and "
                f"{other.max_values} values; build both with the same max_exact_values"
            )

    def merge_from(self, other: ExactCounts) -> None:
        """Count `other`'s stream into this one, in place: `==` to `self.merged(other)`."""
        self.check_compatible(other)
        self.total += other.total
        if other.overflowed:
            self._overflow()
        if self.overflowed:
            return
        counts = self.counts
        for value, count in other.counts.items():
            counts[value] = counts.get(value, 0) + count
        if len(counts) > self.max_values:
            self._overflow()

    def copy(self) -> ExactCounts:
        clone = ExactCounts(self.max_values)
        clone.counts = dict(self.counts)
        clone.total = self.total
        clone.overflowed = self.overflowed
        return clone

    def merged(self, other: ExactCounts) -> ExactCounts:
        """A new counter of both streams; neither input changes."""
        result = self.copy()
        result.merge_from(other)
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_values": self.max_values,
            "total": self.total,
            "overflowed": self.overflowed,
            "counts": [[value, count] for value, count in sorted(self.counts.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExactCounts:
        counter = cls(int(data.get("max_values", DEFAULT_MAX_VALUES)))
        for value, count in data.get("counts", []):
            counter.counts[float(value)] = counter.counts.get(float(value), 0) + int(count)
        counter.total = int(data.get("total", sum(counter.counts.values())))
        counter.overflowed = bool(data.get("overflowed", False))
        return counter

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExactCounts):
            return NotImplemented
        return (
            self.max_values == other.max_values
            and self.total == other.total
            and self.overflowed == other.overflowed
            and self.counts == other.counts
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        detail = "overflowed" if self.overflowed else f"{len(self.counts)} values"
        return f"ExactCounts(total={self.total}, {detail})"
