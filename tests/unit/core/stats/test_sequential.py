"""Anytime-valid e-values: no more false alarms than alpha under continuous monitoring."""

from __future__ import annotations

import math
import random

import pytest

from controller.core.stats import bernoulli_test, share_test, split_alpha
from controller.core.stats.sequential import log_e_value, null_share


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
