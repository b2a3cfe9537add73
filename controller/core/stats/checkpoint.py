"""Checkpoints: the counts behind a rollout's share tests as they stood every few seconds.

The change-point tests (`changepoint_share_test`) restart at each checkpoint, and a restart
needs the counts added since. For errors that is a difference of counters. For slow requests
the checkpoint also fixes what "slow" means for its restart: the sketch bucket that held the
baseline's quantile then. A restart counts the requests above that fixed bucket since the
checkpoint, which makes it an exact test of a fixed event (the test from the start uses the
baseline's current quantile instead, which moves a little as the baseline grows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.core.stats.cohort import CohortStats
from controller.core.stats.sequential import Counts, Restart


def error_counts(baseline: CohortStats, canary: CohortStats) -> Counts:
    """Failed requests and requests of both cohorts."""
    return Counts(canary.errors, canary.requests, baseline.errors, baseline.requests)


def slow_counts(baseline: CohortStats, canary: CohortStats, slot: tuple[int, int]) -> Counts:
    """Latencies above the bucket `slot` and latencies of both cohorts."""
    return Counts(
        canary.latency.count_above(slot),
        canary.latency.count,
        baseline.latency.count_above(slot),
        baseline.latency.count,
    )


@dataclass(frozen=True)
class SlowCount:
    """Slow requests at a checkpoint: above `slot`, the bucket of the baseline's `quantile`."""

    quantile: float
    slot: tuple[int, int]
    counts: Counts


@dataclass(frozen=True)
class Checkpoint:
    """The `index`-th checkpoint (from 1) of a rollout, taken at `at` on the caller's clock."""

    index: int
    at: float
    errors: Counts
    slow: tuple[SlowCount, ...] = ()

    def __post_init__(self) -> None:
        if self.index < 1:
            raise ValueError(f"checkpoint indices start at 1, got {self.index}")

    @classmethod
    def take(
        cls,
        index: int,
        at: float,
        baseline: CohortStats,
        canary: CohortStats,
        quantiles: Iterable[float] = (),
    ) -> Checkpoint:
        """The counts now; slow requests for each quantile once the baseline has latencies."""
        slow = []
        for q in sorted(set(quantiles)):
            bucket = baseline.latency.quantile_bucket(q)
            if bucket is not None:
                slow.append(SlowCount(q, bucket.slot, slow_counts(baseline, canary, bucket.slot)))
        return cls(index, at, error_counts(baseline, canary), tuple(slow))

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "at": self.at,
            "errors": self.errors.to_list(),
            "slow": [[s.quantile, list(s.slot), s.counts.to_list()] for s in self.slow],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            index=int(data["index"]),
            at=float(data["at"]),
            errors=Counts.from_list(data["errors"]),
            slow=tuple(
                SlowCount(float(q), (int(slot[0]), int(slot[1])), Counts.from_list(counts))
                for q, slot, counts in data.get("slow", ())
            ),
        )


def error_restarts(
    checkpoints: Sequence[Checkpoint], baseline: CohortStats, canary: CohortStats
) -> list[Restart]:
    """The error counts since each checkpoint."""
    now = error_counts(baseline, canary)
    return [Restart(c.index, c.at, now.since(c.errors)) for c in checkpoints]


def slow_restarts(
    checkpoints: Sequence[Checkpoint], quantile: float, baseline: CohortStats, canary: CohortStats
) -> list[Restart]:
    """The slow-request counts since each checkpoint that fixed a threshold for `quantile`."""
    now: dict[tuple[int, int], Counts] = {}  # thresholds repeat: count above each once
    restarts = []
    for c in checkpoints:
        for slow in c.slow:
            if slow.quantile == quantile:
                if slow.slot not in now:
                    now[slow.slot] = slow_counts(baseline, canary, slow.slot)
                restarts.append(Restart(c.index, c.at, now[slow.slot].since(slow.counts)))
    return restarts
