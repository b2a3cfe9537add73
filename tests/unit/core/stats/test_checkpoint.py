"""Checkpoints: the counts behind the change-point restarts, and what "slow" meant then."""

from __future__ import annotations

import json

from controller.core.stats.checkpoint import (
    Checkpoint,
    error_intervals,
    slow_counts,
    slow_intervals,
    trim,
)
from controller.core.stats.cohort import CohortStats
from controller.core.stats.sequential import Counts

from ..factories import make_cohort

FAST = [40.0, 45.0, 50.0, 55.0, 60.0, 70.0, 80.0, 90.0, 120.0, 200.0]


def test_a_checkpoint_records_errors_and_the_slow_requests_of_each_quantile() -> None:
    baseline, canary = make_cohort(1_000, 7, latencies=FAST), make_cohort(250, 2, latencies=FAST)

    checkpoint = Checkpoint.take(4, 40.0, baseline, canary, quantiles=[0.95, 0.5, 0.5])

    assert Counts(2, 250, 7, 1_000) == checkpoint.errors
    assert [0.5, 0.95] == [s.quantile for s in checkpoint.slow]
    p50 = baseline.latency.quantile_bucket(0.5)
    assert p50 is not None
    assert p50.slot == checkpoint.slow[0].slot
    assert slow_counts(baseline, canary, p50.slot) == checkpoint.slow[0].counts
    assert 500 == checkpoint.slow[0].counts.baseline_events  # five of ten latencies above 60 ms


def test_without_baseline_latencies_there_is_no_slow_threshold_to_fix() -> None:
    checkpoint = Checkpoint.take(1, 10.0, make_cohort(), make_cohort(5), quantiles=[0.5])

    assert () == checkpoint.slow


def test_a_checkpoint_round_trips_through_json() -> None:
    baseline, canary = make_cohort(1_000, 7, latencies=FAST), make_cohort(250, 2, latencies=FAST)
    checkpoint = Checkpoint.take(4, 40.0, baseline, canary, quantiles=[0.5, 0.95])

    assert checkpoint == Checkpoint.from_dict(json.loads(json.dumps(checkpoint.to_dict())))


def test_intervals_count_what_came_between_checkpoints_each_above_its_own_slot() -> None:
    baseline, canary = make_cohort(1_000, 7, latencies=FAST), make_cohort(250, 2, latencies=FAST)
    first = Checkpoint.take(4, 40.0, baseline, canary, quantiles=[0.5])
    slower = [2 * x for x in FAST]
    baseline_mid = baseline.merged(make_cohort(400, 3, latencies=slower))
    canary_mid = canary.merged(make_cohort(100, 9, latencies=slower))
    second = Checkpoint.take(5, 50.0, baseline_mid, canary_mid, quantiles=[0.5], before=first)
    baseline_now = baseline_mid.merged(make_cohort(100, 1, latencies=slower))
    canary_now = canary_mid.merged(make_cohort(50, 0, latencies=FAST))
    current = baseline_now.latency.quantile_bucket(0.5)
    assert current is not None

    errors = error_intervals([first, second], baseline_now, canary_now)
    slow = slow_intervals([first, second], 0.5, baseline_now, canary_now, current.slot)

    assert [(0, None), (4, 40.0), (5, 50.0)] == [(i.index, i.at) for i in errors]
    assert [Counts(2, 250, 7, 1_000), Counts(9, 100, 3, 400), Counts(0, 50, 1, 100)] == [
        i.counts for i in errors
    ]
    assert second.slow[0].slot > first.slow[0].slot  # the baseline got slower: p50 moved up
    # the first interval above the first checkpoint's p50 bucket (60 ms): 5 of 10 fast
    # latencies; the second above the same bucket, where every doubled latency is; the last
    # above the second checkpoint's higher bucket
    assert Counts(125, 250, 500, 1_000) == slow[0].counts
    assert Counts(100, 100, 400, 400) == slow[1].counts
    assert (
        slow_counts(baseline_now, canary_now, second.slow[0].slot).since(second.slow[0].counts)
        == slow[2].counts
    )


def test_without_checkpoints_one_interval_counts_everything() -> None:
    baseline, canary = make_cohort(1_000, 7, latencies=FAST), make_cohort(250, 2, latencies=FAST)
    p50 = baseline.latency.quantile_bucket(0.5)
    assert p50 is not None

    [errors] = error_intervals([], baseline, canary)
    [slow] = slow_intervals([], 0.5, baseline, canary, p50.slot)

    assert (0, None, Counts(2, 250, 7, 1_000)) == (errors.index, errors.at, errors.counts)
    assert slow_counts(baseline, canary, p50.slot) == slow.counts


def test_an_interval_whose_checkpoint_fixed_no_slot_is_not_tested() -> None:
    baseline, canary = make_cohort(1_000, 7, latencies=FAST), make_cohort(250, 2, latencies=FAST)
    first = Checkpoint.take(1, 10.0, baseline, canary, quantiles=[0.5])
    p50 = baseline.latency.quantile_bucket(0.5)
    assert p50 is not None

    slow = slow_intervals([first], 0.95, baseline, canary, p50.slot)

    assert [Counts(0, 0, 0, 0)] * 2 == [i.counts for i in slow]


def test_a_checkpoint_stored_before_previous_counts_loads_without_them() -> None:
    data = {"index": 2, "at": 20.0, "errors": [1, 10, 2, 40], "slow": [[0.5, [1, 9], [1, 2, 3, 4]]]}

    checkpoint = Checkpoint.from_dict(data)

    assert checkpoint.slow[0].previous is None
    assert Counts(1, 2, 3, 4) == checkpoint.slow[0].counts


def three_checkpoints() -> tuple[list[Checkpoint], CohortStats, CohortStats]:
    """Checkpoints 1, 2, 3 over a baseline that gets slower, and the cohorts after them."""
    baseline, canary = make_cohort(1_000, 7, latencies=FAST), make_cohort(250, 2, latencies=FAST)
    first = Checkpoint.take(1, 10.0, baseline, canary, quantiles=[0.5])
    slower = [2 * x for x in FAST]
    baseline = baseline.merged(make_cohort(400, 3, latencies=slower))
    canary = canary.merged(make_cohort(100, 9, latencies=slower))
    second = Checkpoint.take(2, 20.0, baseline, canary, quantiles=[0.5], before=first)
    baseline = baseline.merged(make_cohort(300, 1, latencies=[3 * x for x in FAST]))
    canary = canary.merged(make_cohort(80, 4, latencies=[3 * x for x in FAST]))
    third = Checkpoint.take(3, 30.0, baseline, canary, quantiles=[0.5], before=second)
    return [first, second, third], baseline, canary


def test_forgetting_a_checkpoint_merges_its_interval_into_the_one_before() -> None:
    points, baseline, canary = three_checkpoints()
    before = slow_intervals(points, 0.5, baseline, canary, points[-1].slow[0].slot)
    errors_before = error_intervals(points, baseline, canary)

    kept = list(points)
    trim(kept, 2)  # the oldest that is not a cut goes first

    assert [2, 3] == [c.index for c in kept]
    # forgetting the first merges it into the test from the start: nothing to adjust
    assert kept[0] == points[1]

    middle = [points[0], points[2].absorbing(points[1])]
    after = slow_intervals(middle, 0.5, baseline, canary, points[-1].slow[0].slot)
    # the interval from 1 to 3: each part counted above the slot fixed at its own start
    assert _sum(before[1].counts, before[2].counts) == after[1].counts
    assert before[3].counts == after[2].counts
    errors_after = error_intervals(middle, baseline, canary)
    assert _sum(errors_before[1].counts, errors_before[2].counts) == errors_after[1].counts


def test_cuts_are_kept_and_the_interval_after_a_change_is_not_tested() -> None:
    points, baseline, canary = three_checkpoints()
    change = Checkpoint.from_dict({**points[0].to_dict(), "cut": True, "tested": False})
    settled = Checkpoint.from_dict({**points[1].to_dict(), "cut": True})
    kept = [change, settled, points[2]]
    extra = Checkpoint.take(4, 40.0, baseline, canary, quantiles=[0.5], before=points[2])

    trim(kept, 3)
    assert [1, 2, 3] == [c.index for c in kept]
    kept.append(extra)
    trim(kept, 3)

    assert [1, 2, 4] == [c.index for c in kept]  # 3 went, its interval merged into 2's
    errors = error_intervals(kept, baseline, canary)
    slow = slow_intervals(kept, 0.5, baseline, canary, extra.slow[0].slot)
    assert Counts(0, 0, 0, 0) == errors[1].counts == slow[1].counts  # the switch: untested
    assert errors[2].counts == points[2].errors.since(settled.errors)


def _sum(a: Counts, b: Counts) -> Counts:
    return Counts(*(x + y for x, y in zip(a.to_list(), b.to_list(), strict=True)))
