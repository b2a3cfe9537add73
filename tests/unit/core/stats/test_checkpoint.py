"""Checkpoints: the counts behind the change-point restarts, and what "slow" meant then."""

from __future__ import annotations

import json

from controller.core.stats.checkpoint import (
    Checkpoint,
    error_restarts,
    slow_counts,
    slow_restarts,
)
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


def test_restarts_count_what_came_after_each_checkpoint() -> None:
    baseline, canary = make_cohort(1_000, 7, latencies=FAST), make_cohort(250, 2, latencies=FAST)
    checkpoint = Checkpoint.take(4, 40.0, baseline, canary, quantiles=[0.5])
    slower = [2 * x for x in FAST]
    baseline_now = baseline.merged(make_cohort(400, 3, latencies=FAST))
    canary_now = canary.merged(make_cohort(100, 9, latencies=slower))

    [errors] = error_restarts([checkpoint], baseline_now, canary_now)
    [slow] = slow_restarts([checkpoint], 0.5, baseline_now, canary_now)

    assert (4, 40.0, Counts(9, 100, 3, 400)) == (errors.index, errors.at, errors.counts)
    # above the checkpoint's p50 bucket (60 ms): 5 of 10 fast latencies, every doubled one
    assert Counts(100, 100, 200, 400) == slow.counts
    assert [] == slow_restarts([checkpoint], 0.95, baseline_now, canary_now)
