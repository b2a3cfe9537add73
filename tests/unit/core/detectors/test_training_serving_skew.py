"""training_serving_skew: serving features against the training profile, worst features first."""

from __future__ import annotations

import random

import pytest

from controller.core.detectors import EvaluationContext, TrainingServingSkew
from controller.core.stats import CohortStats, FeatureKind, FeatureProfile, js_divergence
from controller.core.stats.distance import sketch_on_edges
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


# ---- exact counting on the profile's own bins ------------------------------------------------


def exact_js(values: list[float], profile: FeatureProfile) -> float:
    """The exact JS divergence of `values` from the profile, binned by hand."""
    counts = [0] * (len(profile.bin_edges) + 1)
    for v in values:
        counts[sum(1 for e in profile.bin_edges if v >= e)] += 1
    return js_divergence(counts, profile.proportions)


def cohort_of(name: str, values: list[float]) -> CohortStats:
    return make_cohort(len(values), features=[{name: v} for v in values])


def test_a_binary_feature_is_judged_on_exact_counts_not_on_the_sketch() -> None:
    """0.32 of ones against 0.30 in training: exact JS 0.0007. Re-binned from the sketch, the
    ones (whose bucket's representative value is just below 1.0) land below the edge: JS 0.17,
    many times the exact value."""
    flag = FeatureProfile("flag", FeatureKind.BINARY, (1.0,), (0.7, 0.3))
    values = [1.0] * 320 + [0.0] * 680
    canary = cohort_of("flag", values)

    verdict = judge(canary, profile={"flag": flag})

    assert Outcome.PASS == verdict.outcome
    assert exact_js(values, flag) == pytest.approx(verdict.evidence["flag.js"], abs=1e-12)
    assert verdict.evidence["flag.js"] < 0.001  # type: ignore[operator]
    assert "exact" == verdict.evidence["flag.binned"]
    sketched = js_divergence(
        sketch_on_edges(canary.features["flag"].numbers, flag.bin_edges).counts, flag.proportions
    )
    assert sketched > 0.15  # what the detector reported before


def test_a_binary_feature_served_as_booleans_counts_false_as_0_and_true_as_1() -> None:
    flag = FeatureProfile("flag", FeatureKind.BINARY, (0.0, 1.0), (0.0, 0.7, 0.3))
    canary = make_cohort(1000, features=[{"flag": i % 10 < 3} for i in range(10)])

    verdict = judge(canary, profile={"flag": flag})

    assert Outcome.PASS == verdict.outcome
    assert 0.0 == pytest.approx(verdict.evidence["flag.js"], abs=1e-12)


def test_values_exactly_on_edges_fall_in_the_bin_that_starts_there() -> None:
    """Half-step values, a third of them on an edge: the exact JS, to rounding."""
    step = FeatureProfile("step", FeatureKind.CONTINUOUS, (1.0, 2.0, 3.0), (0.1, 0.3, 0.3, 0.3))
    rng = random.Random(7)
    values = [rng.choice([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]) for _ in range(700)]

    verdict = judge(cohort_of("step", values), profile={"step": step})

    assert exact_js(values, step) == pytest.approx(verdict.evidence["step.js"], abs=1e-12)
    assert "exact" == verdict.evidence["step.binned"]


def test_integer_features_above_50_are_counted_exactly_where_sketch_buckets_hold_several() -> None:
    """Integers 200-239 on edges 5 apart (2 % of 240: a sketch bucket holds about 4 integers
    there): the same distribution as training, exact JS 0.0005; re-binned from the sketch it
    was 0.011, twenty times that."""
    edges = tuple(float(e) for e in range(200, 241, 5))
    count = FeatureProfile("count", FeatureKind.INTEGER, edges, (0.0, *[0.125] * 8, 0.0))
    rng = random.Random(3)
    values = [float(rng.randrange(200, 240)) for _ in range(1000)]
    canary = cohort_of("count", values)

    verdict = judge(canary, profile={"count": count})

    assert Outcome.PASS == verdict.outcome
    assert exact_js(values, count) == pytest.approx(verdict.evidence["count.js"], abs=1e-12)
    sketched = js_divergence(
        sketch_on_edges(canary.features["count"].numbers, edges).counts, count.proportions
    )
    assert sketched > 10 * verdict.evidence["count.js"]  # type: ignore[operator]


def test_a_continuous_feature_with_many_distinct_values_falls_back_to_the_sketch() -> None:
    verdict = judge(serving(500, 1))

    assert "sketch" == verdict.evidence["age.binned"]
    assert Outcome.PASS == verdict.outcome


def test_a_first_version_numeric_profile_too_close_for_the_sketch_is_not_judged_past_the_cap() -> (
    None
):
    """Edges 1 % apart and 500 distinct values: neither exact counts nor the sketch can bin
    them, and the reason says so instead of reporting a wrong divergence."""
    close = FeatureProfile("x", FeatureKind.NUMERIC, (100.0, 101.0, 102.0), (0.2, 0.3, 0.3, 0.2))
    values = [99.0 + i * 0.008 for i in range(500)]

    verdict = judge(cohort_of("x", values), profile={"x": close})

    assert Outcome.NO_DATA == verdict.outcome
    assert "x (more than 256 distinct values to count exactly and bin_edges closer" in (
        verdict.reason
    )


def test_a_binary_feature_with_hundreds_of_distinct_values_fails() -> None:
    flag = FeatureProfile("flag", FeatureKind.BINARY, (1.0,), (0.7, 0.3))
    values = [i / 400 for i in range(400)]

    verdict = judge(cohort_of("flag", values), profile={"flag": flag})

    assert Outcome.FAIL == verdict.outcome
    assert "flag serves more than 256 distinct numbers for a binary feature" in verdict.reason


# ---- both cohorts drifting alike ----------------------------------------------------------------


def test_drift_shared_by_both_cohorts_is_inconclusive_and_names_both_divergences() -> None:
    verdict = judge(
        serving(500, 1, low=45.0, high=85.0), baseline=serving(5000, 2, low=45.0, high=85.0)
    )

    assert Outcome.INCONCLUSIVE == verdict.outcome
    assert verdict.reason.startswith(
        "serving traffic drifted alike in both cohorts (the baseline is just as far off) in 1 "
        "of 2 fields: age JS 0."
    )
    assert ", baseline JS 0." in verdict.reason
    assert "age" == verdict.evidence["shared_drift"]
    assert verdict.evidence["age.baseline_js"] >= 0.1  # type: ignore[operator]
    assert verdict.evidence["age.canary_vs_baseline_js"] < 0.05  # type: ignore[operator]


def test_a_canary_further_off_than_its_drifted_baseline_fails() -> None:
    """The baseline has drifted a little (45-85), the canary far (70-110)."""
    verdict = judge(
        serving(500, 1, low=70.0, high=110.0), baseline=serving(5000, 2, low=45.0, high=85.0)
    )

    assert Outcome.FAIL == verdict.outcome
    assert verdict.reason.startswith("training-serving skew in 1 of 2 fields: age JS")


def test_a_canary_drifted_the_other_way_as_far_as_its_baseline_fails() -> None:
    """As far from training as the baseline, but on the other side: not the same drift."""
    verdict = judge(serving(500, 1, low=0.0, high=35.0), baseline=serving(5000, 2, 45.0, 80.0))

    assert Outcome.FAIL == verdict.outcome
    assert verdict.evidence["age.canary_vs_baseline_js"] >= 0.1  # type: ignore[operator]


def test_a_feature_only_the_canary_moved_fails_beside_shared_drift_and_the_reason_says_both() -> (
    None
):
    canary = serving(500, 1, low=45.0, high=85.0, pro=0.9)
    baseline = serving(5000, 2, low=45.0, high=85.0, pro=0.2)

    verdict = judge(canary, baseline=baseline)

    assert Outcome.FAIL == verdict.outcome
    assert verdict.reason.startswith("training-serving skew in 1 of 2 fields: plan L-inf")
    assert "; also drifted alike in both cohorts" in verdict.reason
    assert "age" == verdict.evidence["shared_drift"]


def test_strings_served_by_both_cohorts_for_a_numeric_feature_are_shared() -> None:
    rows = [{"age": "forty", "plan": "free"}]

    verdict = judge(make_cohort(400, features=rows), baseline=make_cohort(400, features=rows))

    assert Outcome.INCONCLUSIVE == verdict.outcome
    assert "age (values of the wrong kind in both cohorts)" in verdict.reason
