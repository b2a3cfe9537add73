"""training_serving_skew: serving features against the training profile, worst features first."""

from __future__ import annotations

import random

from controller.core.detectors import EvaluationContext, TrainingServingSkew
from controller.core.stats import CohortStats, FeatureKind, FeatureProfile
from controller.core.verdict import Outcome, Verdict

from ..factories import make_cohort

#: Age in training: uniform over 20-60, a quarter in each decade.
AGE = FeatureProfile(
    "age", FeatureKind.NUMERIC, (20.0, 30.0, 40.0, 50.0, 60.0), (0.0, 0.25, 0.25, 0.25, 0.25, 0.0)
)
PLAN = FeatureProfile("plan", FeatureKind.CATEGORICAL, categories={"free": 0.8, "pro": 0.2})
PROFILE = {"age": AGE, "plan": PLAN}


def judge(
    canary: CohortStats,
    baseline: CohortStats | None = None,
    profile: dict[str, FeatureProfile] | None = None,
    **params: object,
) -> Verdict:
    context = EvaluationContext(now=0.0, training_profile=PROFILE if profile is None else profile)
    detector = TrainingServingSkew.from_params(params)  # type: ignore[arg-type]
    return detector.evaluate(baseline or CohortStats(), canary, context)


def serving(
    n: int, seed: int, low: float = 20.0, high: float = 60.0, pro: float = 0.2
) -> CohortStats:
    rng = random.Random(seed)
    rows = [
        {"age": rng.uniform(low, high), "plan": "pro" if rng.random() < pro else "free"}
        for _ in range(n)
    ]
    return make_cohort(n, features=rows)


def test_without_a_training_profile_there_is_nothing_to_compare() -> None:
    verdict = judge(serving(500, 1), profile={})

    assert Outcome.NO_DATA == verdict.outcome
    assert "no training profile to compare with" == verdict.reason


def test_too_few_serving_values_is_no_data() -> None:
    verdict = judge(serving(299, 1))

    assert Outcome.NO_DATA == verdict.outcome


def test_serving_traffic_like_the_training_data_passes() -> None:
    verdict = judge(serving(500, 1))

    assert Outcome.PASS == verdict.outcome
    assert verdict.reason.startswith("2 fields within their thresholds (closest: ")


def test_a_drifted_numeric_feature_fails_and_is_named() -> None:
    verdict = judge(serving(500, 1, low=45.0, high=85.0))

    assert Outcome.FAIL == verdict.outcome
    assert verdict.reason.startswith("training-serving skew in 1 of 2 fields: age JS 0.")
    assert verdict.evidence["age.js"] >= 0.1  # type: ignore[operator]


def test_a_drifted_category_fails_on_l_infinity() -> None:
    verdict = judge(serving(500, 1, pro=0.7))

    assert Outcome.FAIL == verdict.outcome
    assert "plan L-inf 0.476 >= 0.3" in verdict.reason


def test_the_feature_furthest_beyond_its_threshold_is_listed_first() -> None:
    """age JS 0.58 is 5.8 times its threshold, plan L-inf 0.75 only 2.5 times."""
    verdict = judge(serving(500, 1, low=45.0, high=85.0, pro=0.95))

    assert verdict.reason.startswith(
        "training-serving skew in 2 of 2 fields: age JS 0.581 >= 0.1, plan L-inf 0.748 >= 0.3"
    )


def test_a_per_feature_threshold_overrides_the_default() -> None:
    verdict = judge(serving(500, 1, low=45.0, high=85.0), **{"threshold.age": 0.9})

    assert Outcome.PASS == verdict.outcome


def test_strings_served_for_a_numeric_feature_fail() -> None:
    canary = make_cohort(400, features=[{"age": "forty", "plan": "free"}])

    verdict = judge(canary)

    assert Outcome.FAIL == verdict.outcome
    assert "age serves values of the wrong kind for its profile" in verdict.reason


def test_the_baseline_distance_is_reported_as_context() -> None:
    verdict = judge(
        serving(500, 1, low=45.0, high=85.0), baseline=serving(500, 2, low=45.0, high=85.0)
    )

    assert "age.baseline_js" in verdict.evidence


def test_the_prediction_is_compared_with_its_training_profile() -> None:
    scores = FeatureProfile("prediction", FeatureKind.NUMERIC, (0.5,), (0.5, 0.5))
    canary = make_cohort(400, predictions=[0.9, 0.8, 0.7, 0.95])
    context = EvaluationContext(now=0.0, prediction_profile=scores)

    verdict = TrainingServingSkew().evaluate(CohortStats(), canary, context)

    assert Outcome.FAIL == verdict.outcome
    assert "prediction JS" in verdict.reason
