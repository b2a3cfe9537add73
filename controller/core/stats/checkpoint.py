"""Checkpoints: the counts behind a rollout's share tests as they stood every few seconds.

The share tests (`stratified_share_test`) judge each interval between checkpoints on its own
and restart at each checkpoint, so they need the counts of each interval. For errors that is a
difference of counters. For slow requests the checkpoint also fixes what "slow" means for the
interval it starts: the sketch bucket that held the baseline's quantile then, and the next
checkpoint records the requests above that same bucket (`SlowCount.previous`), which makes
each interval an exact test of an event fixed before it began. Only the first interval (before
the oldest checkpoint kept) is counted above a bucket chosen at its end, and with no checkpoint
yet the baseline's current quantile is used, which moves a little as the baseline grows.

Where a step changes the canary's share, the rollout cuts twice (controller.core.rollout.
alignment): at the change, and once requests routed at the old share have completed. Those
checkpoints are `cut`s, and the interval between them, when the routers switch and old-share
requests still complete, is not tested (`tested` False on the first): every tested interval
then has one share. Cuts are kept when the oldest checkpoints are forgotten (`trim`), so the
intervals stay apart by share however long the rollout runs; forgetting a checkpoint merges
its interval into the one before (`Checkpoint.absorbing`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from controller.core.stats.cohort import CohortStats
from controller.core.stats.sequential import Counts, Interval


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
    """Slow requests at a checkpoint: above `slot`, the bucket of the baseline's `quantile`,
    and above the slot the checkpoint before fixed for the same quantile (`previous`: the end
    of the interval that checkpoint started; None when it fixed none)."""

    quantile: float
    slot: tuple[int, int]
    counts: Counts
    previous: Counts | None = None


@dataclass(frozen=True)
class Checkpoint:
    """The `index`-th checkpoint (from 1) of a rollout, taken at `at` on the caller's clock
    (a cut's `at` is the completion time it cuts at). `cut`: taken where a step changed the
    traffic share (kept by `trim`); `tested`: whether the share tests judge the interval
    this checkpoint starts."""

    index: int
    at: float
    errors: Counts
    slow: tuple[SlowCount, ...] = ()
    cut: bool = False
    tested: bool = True

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
        before: Checkpoint | None = None,
        *,
        cut: bool = False,
        tested: bool = True,
    ) -> Checkpoint:
        """The counts now; slow requests for each quantile once the baseline has latencies
        (and above the slots of the checkpoint `before`, which ends its interval)."""
        slow = []
        for q in sorted(set(quantiles)):
            bucket = baseline.latency.quantile_bucket(q)
            if bucket is not None:
                earlier = None if before is None else before.slow_count(q)
                previous = None if earlier is None else slow_counts(baseline, canary, earlier.slot)
                counts = slow_counts(baseline, canary, bucket.slot)
                slow.append(SlowCount(q, bucket.slot, counts, previous))
        return cls(index, at, error_counts(baseline, canary), tuple(slow), cut, tested)

    def absorbing(self, dropped: Checkpoint) -> Checkpoint:
        """This checkpoint once `dropped`, the one before it, is forgotten: the interval
        before this one then starts where `dropped`'s did, so each slow count's `previous`
        adds the slow requests of `dropped`'s interval (above the slot fixed before it) to
        those of its own (above `dropped`'s slot). The union is still a set of requests fixed
        interval by interval before they came, judged against one share (`trim` only forgets
        checkpoints that are not cuts, inside one step). Without a slot for `dropped`'s
        interval the merged interval counts nothing above its start (`slow_intervals`)."""
        slow = []
        for s in self.slow:
            gone = dropped.slow_count(s.quantile)
            first = None if gone is None else gone.previous  # dropped's interval, its end
            if first is None:
                previous = None
            elif s.previous is None or gone is None:
                previous = first
            else:
                previous = _plus(first, s.previous.since(gone.counts))
            slow.append(replace(s, previous=previous))
        return replace(self, slow=tuple(slow))

    def slow_count(self, quantile: float) -> SlowCount | None:
        return next((s for s in self.slow if s.quantile == quantile), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "at": self.at,
            "errors": self.errors.to_list(),
            "slow": [
                [
                    s.quantile,
                    list(s.slot),
                    s.counts.to_list(),
                    None if s.previous is None else s.previous.to_list(),
                ]
                for s in self.slow
            ],
            "cut": self.cut,
            "tested": self.tested,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            index=int(data["index"]),
            at=float(data["at"]),
            errors=Counts.from_list(data["errors"]),
            slow=tuple(_slow_count(item) for item in data.get("slow", ())),
            cut=bool(data.get("cut", False)),
            tested=bool(data.get("tested", True)),
        )


def _plus(a: Counts, b: Counts) -> Counts:
    return Counts(*(x + y for x, y in zip(a.to_list(), b.to_list(), strict=True)))


def trim(checkpoints: list[Checkpoint], keep: int) -> None:
    """Forget checkpoints until `keep` are left: the oldest that is not a cut first (its
    interval merges into the one before it, `Checkpoint.absorbing`), the oldest cut only when
    nothing else is left to forget. In place."""
    while len(checkpoints) > keep:
        position = next((i for i, c in enumerate(checkpoints[:-1]) if not c.cut), 0)
        if 0 < position < len(checkpoints) - 1:  # the oldest merges into the test from the start
            checkpoints[position + 1] = checkpoints[position + 1].absorbing(checkpoints[position])
        del checkpoints[position]


def _slow_count(item: Sequence[Any]) -> SlowCount:
    q, slot, counts, *rest = item  # a checkpoint stored before `previous` has three items
    previous = rest[0] if rest else None
    return SlowCount(
        float(q),
        (int(slot[0]), int(slot[1])),
        Counts.from_list(counts),
        None if previous is None else Counts.from_list(previous),
    )


_NONE = Counts(0, 0, 0, 0)


def error_intervals(
    checkpoints: Sequence[Checkpoint], baseline: CohortStats, canary: CohortStats
) -> list[Interval]:
    """The error counts of each interval: before the oldest checkpoint kept (index 0: the
    test from the start), between consecutive checkpoints, and since the newest; nothing
    for an interval that is not tested."""
    now = error_counts(baseline, canary)
    if not checkpoints:
        return [Interval(0, None, now)]
    out = [Interval(0, None, checkpoints[0].errors)]
    for a, b in itertools.pairwise(checkpoints):
        out.append(Interval(a.index, a.at, b.errors.since(a.errors) if a.tested else _NONE))
    last = checkpoints[-1]
    out.append(Interval(last.index, last.at, now.since(last.errors) if last.tested else _NONE))
    return out


def slow_intervals(
    checkpoints: Sequence[Checkpoint],
    quantile: float,
    baseline: CohortStats,
    canary: CohortStats,
    slot: tuple[int, int],
) -> list[Interval]:
    """The slow-request counts of each interval (as `error_intervals`), each above the slot
    its first checkpoint fixed for `quantile` (the first interval above the slot of the oldest
    checkpoint; with no checkpoint, above `slot`, the baseline's current bucket). An interval
    whose first checkpoint fixed no slot counts nothing: it is not tested."""
    if not checkpoints:
        return [Interval(0, None, slow_counts(baseline, canary, slot))]
    first = checkpoints[0].slow_count(quantile)
    out = [Interval(0, None, _NONE if first is None else first.counts)]
    for a, b in itertools.pairwise(checkpoints):
        start, end = a.slow_count(quantile), b.slow_count(quantile)
        if not a.tested or start is None or end is None or end.previous is None:
            counts = _NONE
        else:
            counts = end.previous.since(start.counts)
        out.append(Interval(a.index, a.at, counts))
    last = checkpoints[-1]
    start = last.slow_count(quantile)
    counts = (
        _NONE
        if start is None or not last.tested
        else slow_counts(baseline, canary, start.slot).since(start.counts)
    )
    out.append(Interval(last.index, last.at, counts))
    return out
