"""Cohort assignment is sticky, monotone in the canary share, and matches the share."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.sdk import assign_cohort, bucket
from schemas import Cohort

KEYS = [f"user-{i}" for i in range(100_000)]

keys = st.text(min_size=0, max_size=64)
percents = st.floats(min_value=0, max_value=100, allow_nan=False)


@given(key=keys, salt=keys, p=percents, q=percents)
def test_a_canary_user_stays_canary_while_the_share_grows(
    key: str, salt: str, p: float, q: float
) -> None:
    low, high = sorted((p, q))
    if assign_cohort(key, low, salt) is Cohort.CANARY:
        assert Cohort.CANARY == assign_cohort(key, high, salt)


@given(key=keys, salt=keys)
def test_the_bucket_is_within_0_and_100_and_deterministic(key: str, salt: str) -> None:
    assert 0 <= bucket(key, salt) < 100
    assert bucket(key, salt) == bucket(key, salt)


@given(key=keys, salt=keys)
def test_nobody_at_0_and_everybody_at_100(key: str, salt: str) -> None:
    assert Cohort.BASELINE == assign_cohort(key, 0, salt)
    assert Cohort.CANARY == assign_cohort(key, 100, salt)


@pytest.mark.parametrize("percent", [0.5, 1, 5, 10, 25, 50, 90])
def test_the_canary_share_matches_the_percent_over_100k_users(percent: float) -> None:
    n = len(KEYS)
    canary = sum(assign_cohort(k, percent, "dep-1") is Cohort.CANARY for k in KEYS)
    p = percent / 100
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(canary - n * p) < 5 * sigma, f"{canary} canary users of {n} at {percent} %"


def test_buckets_are_uniform_chi_square() -> None:
    bins = 20
    counts = [0] * bins
    for k in KEYS:
        counts[int(bucket(k, "dep-1") * bins / 100)] += 1
    expected = len(KEYS) / bins
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    # 19 degrees of freedom: P(chi2 > 43.8) = 0.001
    assert chi2 < 43.8, f"chi-square {chi2:.1f} over {bins} bins: {counts}"


def test_each_deployment_draws_its_own_users() -> None:
    first = {k for k in KEYS if assign_cohort(k, 10, "dep-1") is Cohort.CANARY}
    second = {k for k in KEYS if assign_cohort(k, 10, "dep-2") is Cohort.CANARY}
    both = len(first & second)
    # independent draws: about 1 % of users are canary in both (sigma ~ 31)
    assert abs(both - 1000) < 160, both


def test_a_share_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match=r"within \[0, 100\]"):
        assign_cohort("user-1", 101, "dep-1")
    with pytest.raises(ValueError):
        assign_cohort("user-1", -1, "dep-1")
