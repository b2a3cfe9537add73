"""error_rate: an anytime-valid test of the canary's error rate against its baseline's."""

from __future__ import annotations

import random

import pytest

from controller.core.detectors import ErrorRate, EvaluationContext
from controller.core.stats import CohortStats
from controller.core.stats.checkpoint import Checkpoint
from controller.core.stats.sequential import Counts
from controller.core.verdict import Outcome, Verdict

from ..factories import make_cohort

NOW = EvaluationContext(now=1_000.0)


def judge(baseline: CohortStats, canary: CohortStats, **params: object) -> Verdict:
    return ErrorRate.from_params(params).evaluate(baseline, canary, NOW)  # type: ignore[arg-type]


def test_a_canary_without_requests_is_no_data() -> None:
    verdict = judge(make_cohort(1_000, 10), CohortStats())

    assert Outcome.NO_DATA == verdict.outcome
    assert "no canary requests yet" == verdict.reason


def test_without_baseline_requests_there_is_nothing_to_compare_with() -> None:
    verdict = judge(CohortStats(), make_cohort(200, 2))

    assert Outcome.NO_DATA == verdict.outcome
    assert "no baseline requests" in verdict.reason


@pytest.mark.parametrize(
    ("canary_errors", "alpha", "expected"),
    [
        (1, 0.01, Outcome.PASS),
        (2, 0.01, Outcome.PASS),
        (3, 0.01, Outcome.PASS),  # e-value 40 < 100: suggestive, not yet strong evidence
        (4, 0.01, Outcome.FAIL),  # e-value 230 >= 100
        (3, 0.05, Outcome.FAIL),  # e-value 40 >= 20 at a looser alpha
    ],
)
def test_a_few_canary_errors_against_a_clean_baseline_fail_only_on_strong_evidence(
    canary_errors: int, alpha: float, expected: Outcome
) -> None:
    """0 of 1000 baseline requests failed; the canary served 100."""
    verdict = judge(make_cohort(1_000, 0), make_cohort(100, canary_errors), alpha=alpha)

    assert expected == verdict.outcome, verdict.reason


def test_the_reason_gives_rates_counts_and_the_e_value_against_its_threshold() -> None:
    verdict = judge(make_cohort(1_000, 0), make_cohort(100, 4))

    assert verdict.reason.startswith("canary error rate 4.0% (4/100) vs baseline 0.0% (0/1000)")
    assert "e-value 230 >= 100" in verdict.reason
    assert 4 == verdict.evidence["canary_errors"]
    assert 100.0 == verdict.evidence["threshold"]


def test_equal_error_rates_pass_once_both_cohorts_have_enough_requests() -> None:
    verdict = judge(make_cohort(9_000, 90), make_cohort(1_000, 10))

    assert Outcome.PASS == verdict.outcome
    assert "no evidence of more than 1.2x the baseline's" in verdict.reason


def test_too_few_requests_without_evidence_is_no_data_not_a_pass() -> None:
    verdict = judge(make_cohort(1_000, 10), make_cohort(40, 0))

    assert Outcome.NO_DATA == verdict.outcome
    assert "too few requests to pass" in verdict.reason


def test_overwhelming_evidence_fails_before_min_samples() -> None:
    verdict = judge(make_cohort(1_000, 10), make_cohort(50, 30))

    assert Outcome.FAIL == verdict.outcome


def test_a_tolerance_lets_a_slightly_worse_canary_pass() -> None:
    baseline, canary = make_cohort(20_000, 200), make_cohort(20_000, 300)

    assert Outcome.FAIL == judge(baseline, canary, tolerance=0.0).outcome
    assert Outcome.PASS == judge(baseline, canary, tolerance=0.5).outcome


def test_the_absolute_cap_fails_on_evidence_of_a_rate_above_it() -> None:
    baseline = make_cohort(2_000, 200)  # the baseline is as bad: the comparison passes

    verdict = judge(baseline, make_cohort(500, 60), max_error_rate=0.05)

    assert Outcome.FAIL == verdict.outcome
    assert "canary error rate 12.0% (60/500) above the 5.0% cap" in verdict.reason


def test_a_rate_near_the_cap_is_not_evidence_of_exceeding_it() -> None:
    verdict = judge(make_cohort(2_000, 100), make_cohort(500, 27), max_error_rate=0.05)

    assert Outcome.PASS == verdict.outcome


def test_false_alarms_of_the_detector_stay_below_alpha_when_checked_every_five_events() -> None:
    """Equal error rates at the edge of H0 (tolerance 0), 100 rollouts of 2000 requests."""
    alpha, alarms = 0.05, 0
    detector = ErrorRate.from_params({"alpha": alpha, "tolerance": 0.0})
    for seed in range(100):
        rng = random.Random(seed)
        baseline, canary = CohortStats(), CohortStats()
        for i in range(2_000):
            cohort = canary if rng.random() < 0.2 else baseline
            cohort.observe(ok=rng.random() >= 0.05, latency_ms=10.0, event_time=float(i))
            if i % 5 == 4 and detector.evaluate(baseline, canary, NOW).outcome is Outcome.FAIL:
                alarms += 1
                break

    assert alarms / 100 <= alpha


def test_a_late_burst_fails_on_the_restarted_test_and_says_since_when() -> None:
    """Ten healthy minutes, then a minute of x5 canary errors (see the change-point test)."""
    checkpoint = Checkpoint(60, 600.0, Counts(84, 12_000, 336, 48_000))
    context = EvaluationContext(now=660.0, checkpoints=(checkpoint,))
    baseline, canary = make_cohort(52_800, 370), make_cohort(13_200, 126)

    verdict = ErrorRate.from_params({}).evaluate(baseline, canary, context)
    cumulative = ErrorRate.from_params({"restarts": False}).evaluate(baseline, canary, context)

    assert Outcome.FAIL == verdict.outcome, verdict.reason
    assert verdict.reason.endswith(
        "(strongest over the last 60 s: 42 of the 76 errors of both cohorts were the canary's)"
    )
    assert 600.0 == verdict.evidence["since"]
    assert Outcome.PASS == cumulative.outcome, cumulative.reason
