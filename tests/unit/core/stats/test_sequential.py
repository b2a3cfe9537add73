"""Anytime-valid e-values: no more false alarms than alpha under continuous monitoring."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from controller.core.stats import bernoulli_test, share_test, split_alpha
from controller.core.stats.sequential import (
    Counts,
    Interval,
    Restart,
    log_e_value,
    null_share,
    restart_weight,
    stratified_share_test,
)


def test_no_trials_is_no_evidence() -> None:
    assert 0.0 == log_e_value(0, 0, 0.1)


def test_events_at_the_null_rate_give_little_evidence_and_far_above_it_much() -> None:
    assert bernoulli_test(10, 1_000, 0.01, alpha=0.01).e_value < 1.0
    assert bernoulli_test(40, 1_000, 0.01, alpha=0.01).rejects


def test_the_e_value_never_overflows() -> None:
    test = bernoulli_test(100_000, 100_000, 0.01, alpha=0.01)

    assert math.isfinite(test.e_value)
    assert test.rejects


def test_the_null_share_is_the_canary_request_share_scaled_by_the_tolerance() -> None:
    assert 0.5 == null_share(100, 100, tolerance=0.0)
    assert pytest.approx(0.12 / 1.12) == null_share(100, 1_000, tolerance=0.2)
    assert 1.0 == null_share(100, 0, tolerance=0.2)


def test_the_share_test_needs_no_baseline_errors() -> None:
    test = share_test(8, 100, 0, 1_000, tolerance=0.2, alpha=0.01)

    assert test.rejects
    assert (8, 8) == (test.events, test.trials)


def test_split_alpha_is_bonferroni() -> None:
    assert 0.01 == split_alpha(0.05, 5)
    with pytest.raises(ValueError):
        split_alpha(0.05, 0)
    with pytest.raises(ValueError):
        split_alpha(1.5, 2)


def first_rejection(
    seed: int,
    *,
    events: int,
    share: float,
    canary_rate: float,
    baseline_rate: float,
    tolerance: float,
    alpha: float,
) -> int | None:
    """Route `events` requests at random, check the share test after every one of them."""
    rng = random.Random(seed)
    threshold = math.log(1.0 / alpha)
    n_c = e_c = n_b = e_b = 0
    for i in range(events):
        if rng.random() < share:
            n_c += 1
            e_c += rng.random() < canary_rate
        else:
            n_b += 1
            e_b += rng.random() < baseline_rate
        if e_c and n_b:
            test = share_test(e_c, n_c, e_b, n_b, tolerance, alpha)
            if test.log_e_value >= threshold:
                return i
    return None


def test_false_alarms_stay_below_alpha_when_checked_after_every_event() -> None:
    """H0 at its boundary (equal error rates, no tolerance): 300 rollouts of 2000 events."""
    alpha = 0.05
    alarms = sum(
        first_rejection(
            seed,
            events=2_000,
            share=0.1,
            canary_rate=0.05,
            baseline_rate=0.05,
            tolerance=0.0,
            alpha=alpha,
        )
        is not None
        for seed in range(300)
    )

    assert alarms / 300 <= alpha


def test_five_times_the_baseline_error_rate_is_detected() -> None:
    detected = [
        first_rejection(
            seed,
            events=3_000,
            share=0.2,
            canary_rate=0.05,
            baseline_rate=0.01,
            tolerance=0.2,
            alpha=0.01,
        )
        for seed in range(100)
    ]

    assert sum(d is not None for d in detected) >= 90


# ---------------------------------------------------------------------------------------------
# Change-point restarts
# ---------------------------------------------------------------------------------------------


def test_the_restart_weights_are_fixed_in_advance_and_sum_to_one() -> None:
    assert 0.5 == restart_weight(0)
    assert 0.25 == restart_weight(1)
    assert pytest.approx(1 / 84) == restart_weight(6)
    # 1/2 + sum over k >= 1 of 1/(2k(k+1)) telescopes to 1 - 1/(2(K+1))
    assert pytest.approx(1 - 1 / (2 * 100_001)) == math.fsum(map(restart_weight, range(100_001)))
    with pytest.raises(ValueError):
        restart_weight(-1)


def test_without_checkpoints_the_change_point_test_is_half_the_share_test() -> None:
    plain = share_test(8, 100, 3, 1_000, tolerance=0.2, alpha=0.01)
    restarted = stratified_share_test(
        [Interval(0, None, Counts(8, 100, 3, 1_000))], tolerance=0.2, alpha=0.01
    )

    assert pytest.approx(plain.log_e_value - math.log(2)) == restarted.log_e_value
    assert restarted.since is None


def test_without_restarts_the_test_is_the_product_over_the_intervals() -> None:
    first, second = Counts(3, 100, 4, 900), Counts(9, 500, 6, 500)
    test = stratified_share_test(
        [Interval(0, None, first), Interval(1, 10.0, second)], 0.2, 0.01, (2.0,), restarts=False
    )

    one = share_test(*first.to_list(), tolerance=0.2, alpha=0.01, odds_ratios=(2.0,))
    two = share_test(*second.to_list(), tolerance=0.2, alpha=0.01, odds_ratios=(2.0,))
    assert pytest.approx(one.log_e_value + two.log_e_value) == test.log_e_value


def test_a_late_burst_is_not_diluted_by_the_healthy_history_before_it() -> None:
    """Ten healthy minutes (0.7 % errors on both cohorts, canary share 20 %), then a minute in
    which the canary fails 3.5 % of its requests: the cumulative test is buried by the
    history, the test restarted at the checkpoint just before the burst is not."""
    history, burst = Counts(84, 12_000, 336, 48_000), Counts(42, 1_200, 34, 4_800)
    now = Counts(*(a + b for a, b in zip(history.to_list(), burst.to_list(), strict=True)))
    cumulative = share_test(*now.to_list(), tolerance=0.2, alpha=0.01 / 3)
    restarted = stratified_share_test(
        [Interval(0, None, history), Interval(60, 600.0, burst)], tolerance=0.2, alpha=0.01 / 3
    )

    assert not cumulative.rejects
    assert cumulative.e_value < 1.0
    assert restarted.rejects
    assert Restart(60, 600.0, burst) == restarted.since
    assert (42, 76) == (restarted.events, restarted.trials)


def test_every_restart_counts_towards_the_e_value() -> None:
    counts = Counts(8, 100, 3, 1_000)
    nothing = Counts(0, 0, 0, 0)
    intervals = [Interval(0, None, nothing), *(Interval(k, 10.0 * k, nothing) for k in (1, 2))]
    one = stratified_share_test([*intervals[:1], Interval(1, 10.0, counts)], 0.2, 0.01)
    three = stratified_share_test([*intervals, Interval(3, 30.0, counts)], 0.2, 0.01)

    # restarts with nothing before them see the whole stream: their weights add up
    plain = share_test(8, 100, 3, 1_000, tolerance=0.2, alpha=0.01).e_value
    assert pytest.approx(plain * (0.5 + 0.25)) == one.e_value
    assert pytest.approx(plain * (0.5 + 0.25 + 1 / 12 + 1 / 24)) == three.e_value


def test_a_share_that_changes_between_steps_is_no_evidence() -> None:
    """Five minutes at a 5 % share with 1 % errors on both cohorts, then a minute at 50 % in
    which a dependency both share fails 30 % of all requests: pooled over both steps the
    canary holds 48 % of the errors at a 24 % request share (Simpson), stratified it holds
    each step's share."""
    quiet, outage = Counts(3, 300, 57, 5_700), Counts(300, 1_000, 300, 1_000)
    pooled = share_test(
        *(a + b for a, b in zip(quiet.to_list(), outage.to_list(), strict=True)),
        tolerance=0.2,
        alpha=0.01,
    )
    stratified = stratified_share_test(
        [Interval(0, None, quiet), Interval(30, 300.0, outage)], tolerance=0.2, alpha=0.01
    )

    assert pooled.rejects
    assert stratified.e_value < 1.0


def test_counts_of_another_stream_are_an_error() -> None:
    with pytest.raises(ValueError, match="events <= trials"):
        Counts(1, 10, 1, 10).since(Counts(2, 5, 0, 5))
    with pytest.raises(ValueError, match="events <= trials"):
        Counts(3, 2, 0, 0)
    with pytest.raises(ValueError, match="start at 1"):
        Restart(0, 0.0, Counts(0, 0, 0, 0))


def test_counts_round_trip_through_plain_values() -> None:
    counts = Counts(1, 200, 4, 800)

    assert counts == Counts.from_list(counts.to_list())


def first_false_alarm(
    seed: int, *, requests: int, every: int, alpha: float, stratified: bool
) -> int | None:
    """H0 at its boundary (no tolerance): a dependency both cohorts share fails in runs of 20
    requests on average (2 % of requests fail), requests go to the canary at random, at a
    share of 5 % for the first third of the stream and 50 % after (a step). Checked after
    every error, with a checkpoint every `every` requests and at the step (all kept)."""
    rng = random.Random(seed)
    totals = [0, 0, 0, 0]
    marks: list[tuple[int, list[int]]] = []
    bad = False
    step = requests // 3
    for i in range(1, requests + 1):
        bad = rng.random() >= 0.05 if bad else rng.random() < 0.05 * 0.02 / 0.98
        failed = bad
        canary = rng.random() < (0.05 if i <= step else 0.5)
        totals[0 if canary else 2] += failed
        totals[1 if canary else 3] += 1
        if i % every == 0 or i == step:
            marks.append((i, list(totals)))
        if not (failed and totals[0] and totals[3]):
            continue
        if stratified:
            edges = [[0, 0, 0, 0], *(m for _, m in marks), totals]
            intervals = [
                Interval(k, float(k), Counts(*(b - a for a, b in zip(x, y, strict=True))))
                for k, (x, y) in enumerate(itertools.pairwise(edges))
            ]
            test = stratified_share_test(intervals, 0.0, alpha)
        else:
            test = share_test(*totals, tolerance=0.0, alpha=alpha)
        if test.rejects:
            return i
    return None


def test_errors_in_runs_and_a_step_keep_false_alarms_below_alpha_when_stratified() -> None:
    """200 null streams of 3000 requests with 30 checkpoints each, the errors in runs and the
    share stepping from 5 % to 50 %: the pooled share test fails about 40 % of them."""
    alpha = 0.05
    runs = 200
    stratified = sum(
        first_false_alarm(seed, requests=3_000, every=100, alpha=alpha, stratified=True) is not None
        for seed in range(runs)
    )
    pooled = sum(
        first_false_alarm(seed, requests=3_000, every=100, alpha=alpha, stratified=False)
        is not None
        for seed in range(runs)
    )

    assert stratified / runs <= alpha
    assert pooled / runs > 0.25
