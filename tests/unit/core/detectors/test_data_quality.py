"""data_quality: missing, invalid and out-of-domain values, against limits and the baseline."""

from __future__ import annotations

from collections.abc import Mapping

from controller.core.detectors import DataQuality, EvaluationContext
from controller.core.stats import CohortStats, FeatureKind, FeatureProfile
from controller.core.stats.cohort import FeatureValue, PredictionValue
from controller.core.verdict import Outcome, Verdict

from ..factories import make_cohort


def judge(
    baseline: CohortStats,
    canary: CohortStats,
    profile: Mapping[str, FeatureProfile] | None = None,
    **params: object,
) -> Verdict:
    context = EvaluationContext(now=0.0, training_profile=profile or {})
    return DataQuality.from_params(params).evaluate(baseline, canary, context)  # type: ignore[arg-type]


def rows(n: int, bad: int, bad_value: FeatureValue, good: FeatureValue = 35.0) -> CohortStats:
    """n requests with feature "age": the first `bad` have `bad_value`."""
    features: list[Mapping[str, FeatureValue]] = [{"age": bad_value}] * bad + [{"age": good}] * (
        n - bad
    )
    return make_cohort(n, features=features)


def test_too_few_observations_is_no_data() -> None:
    verdict = judge(rows(1_000, 0, None), rows(150, 50, None))

    assert Outcome.NO_DATA == verdict.outcome


def test_clean_data_passes() -> None:
    verdict = judge(rows(1_000, 0, None), rows(500, 0, None))

    assert Outcome.PASS == verdict.outcome
    assert verdict.reason.startswith("2 fields within limits (missing <= 5.0%")


def test_a_feature_the_canary_stopped_sending_fails() -> None:
    verdict = judge(rows(1_000, 10, None), rows(500, 100, None))

    assert Outcome.FAIL == verdict.outcome
    assert verdict.reason.startswith(
        "canary data quality: age missing in 20.0% (100/500) vs 1.0% baseline, limit 5.0%"
    )


def test_absent_keys_count_as_missing() -> None:
    canary = make_cohort(500, features=[{"age": 30.0}, {}, {"age": 31.0}, {}])

    verdict = judge(rows(1_000, 0, None), canary)

    assert Outcome.FAIL == verdict.outcome
    assert "age missing in 50.0% (250/500)" in verdict.reason


def test_a_feature_just_as_often_missing_in_the_baseline_does_not_block_the_canary() -> None:
    verdict = judge(rows(1_000, 300, None), rows(500, 150, None))

    assert Outcome.PASS == verdict.outcome


def test_a_rate_near_its_limit_is_not_evidence_of_exceeding_it() -> None:
    verdict = judge(rows(1_000, 0, None), rows(500, 30, None))  # 6% vs a 5% limit

    assert Outcome.PASS == verdict.outcome


def test_nan_features_are_invalid() -> None:
    verdict = judge(rows(1_000, 0, None), rows(500, 40, float("nan")))

    assert Outcome.FAIL == verdict.outcome
    assert "age invalid in 8.0% (40/500)" in verdict.reason


def test_values_outside_the_profiles_domain_are_out_of_domain() -> None:
    profile = {
        "age": FeatureProfile(
            "age",
            FeatureKind.NUMERIC,
            (0.0, 50.0),
            (0.0, 0.5, 0.5),
            domain_min=0.0,
            domain_max=120.0,
        )
    }

    verdict = judge(rows(1_000, 0, None), rows(500, 100, -1.0), profile)

    assert Outcome.FAIL == verdict.outcome
    assert "age out of domain in 20.0% (100/500)" in verdict.reason


def test_without_a_baseline_the_limit_alone_decides() -> None:
    verdict = judge(CohortStats(), rows(500, 100, None))

    assert Outcome.FAIL == verdict.outcome
    assert "vs" not in verdict.reason


def test_invalid_predictions_fail_too() -> None:
    predictions: list[PredictionValue | None] = [float("nan")] * 50 + [0.5] * 450
    canary = make_cohort(500, predictions=predictions)

    verdict = judge(make_cohort(1_000, predictions=[0.5]), canary)

    assert Outcome.FAIL == verdict.outcome
    assert "prediction invalid in 10.0% (50/500)" in verdict.reason
