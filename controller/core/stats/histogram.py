"""A histogram over fixed bin edges, with underflow and overflow bins.

Layout (the same as a training profile's): with n ascending edges there are n + 1 bins; bin 0
holds values below the first edge, bin i holds `[edges[i-1], edges[i])`, bin n holds values at or
above the last edge. Two histograms merge only when their edges are equal.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from controller.core.stats.errors import IncompatibleStatsError


class NumericHistogram:
    """Counts of numbers per bin. Mutable `add`; pure `merged`."""

    __slots__ = ("counts", "edges")

    def __init__(self, edges: Sequence[float], counts: Sequence[int] | None = None) -> None:
        edges = tuple(float(e) for e in edges)
        if not edges:
            raise ValueError("a histogram needs at least one bin edge")
        if not all(math.isfinite(e) for e in edges):
            raise ValueError(f"bin edges must be finite, got {edges}")
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"bin edges must be strictly ascending, got {edges}")
        self.edges: tuple[float, ...] = edges
        if counts is None:
            self.counts = [0] * (len(edges) + 1)
        else:
            if len(counts) != len(edges) + 1:
                raise ValueError(
                    f"{len(edges)} edges need {len(edges) + 1} counts, got {len(counts)}"
                )
            self.counts = [int(c) for c in counts]

    def bin_of(self, value: float) -> int:
        if value != value:
            raise ValueError("a histogram takes numbers, got nan")
        return bisect.bisect_right(self.edges, value)

    def add(self, value: float, count: int = 1) -> None:
        self.counts[self.bin_of(value)] += count

    def add_many(self, values: Iterable[float]) -> None:
        for value in values:
            self.add(value)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def proportions(self) -> list[float]:
        total = self.total
        return [c / total for c in self.counts] if total else [0.0] * len(self.counts)

    def check_compatible(self, other: NumericHistogram) -> None:
        if self.edges != other.edges:
            raise IncompatibleStatsError(
                f"cannot merge histograms with different bin edges: {self.edges} vs "
                f"{other.edges}; re-bin one of them first"
            )

    def copy(self) -> NumericHistogram:
        return NumericHistogram(self.edges, self.counts)

    def merged(self, other: NumericHistogram) -> NumericHistogram:
        """A new histogram of both streams; neither input changes."""
        self.check_compatible(other)
        return NumericHistogram(
            self.edges, [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        )

    def to_dict(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericHistogram:
        return cls(data["edges"], data["counts"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumericHistogram):
            return NotImplemented
        return self.edges == other.edges and self.counts == other.counts

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return f"NumericHistogram(edges={list(self.edges)}, counts={self.counts})"
