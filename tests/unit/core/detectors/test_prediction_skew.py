"""prediction_skew: JS / PSI for scores, L-inf for classes, never failing on sampling noise."""

from __future__ import annotations

import random

from controller.core.detectors import EvaluationContext, PredictionSkew
from controller.core.stats import CohortStats
from controller.core.stats.cohort import PredictionValue
from controller.core.verdict import Outcome, Verdict

from ..factories import draw, make_cohort

NOW = EvaluationContext(now=0.0)


def judge(baseline: CohortStats, canary: CohortStats, **params: object) -> Verdict:
    return PredictionSkew.from_params(params).evaluate(baseline, canary, NOW)  # type: ignore[arg-type]


def predicting(values: list[float] | list[str]) -> CohortStats:
    predictions: list[PredictionValue | None] = list(values)
    return make_cohort(len(values), predictions=predictions)


def normal_scores(n: int, seed: int, mean: float = 0.0) -> list[float]:
    return draw(n, seed, lambda r: r.gauss(mean, 1.0))


def test_too_few_predictions_is_no_data() -> None:
    verdict = judge(predicting(normal_scores(5_000, 1)), predicting(normal_scores(299, 2)))

    assert Outcome.NO_DATA == verdict.outcome
    assert "prediction: 299 canary and 5000 baseline predictions, 300 needed each" == verdict.reason


def test_the_same_score_distribution_passes() -> None:
    verdict = judge(predicting(normal_scores(5_000, 1)), predicting(normal_scores(300, 2)))

    assert Outcome.PASS == verdict.outcome
    assert verdict.evidence["prediction.js"] < 0.03  # type: ignore[operator]


def test_a_shift_with_a_jensen_shannon_divergence_over_0_2_fails_at_300_samples() -> None:
    """N(0, 1) vs N(1.2, 1): JS = 0.221 bits (numerically integrated)."""
    verdict = judge(predicting(normal_scores(5_000, 1)), predicting(normal_scores(300, 2, 1.2)))

    assert Outcome.FAIL == verdict.outcome
    assert verdict.reason.startswith("prediction distribution shifted: JS 0.")
    assert "PSI" in verdict.reason
    assert verdict.evidence["prediction.js"] >= 0.1  # type: ignore[operator]


def test_a_small_shift_stays_below_the_thresholds() -> None:
    """N(0, 1) vs N(0.3, 1): JS ~ 0.016 bits."""
    verdict = judge(predicting(normal_scores(5_000, 1)), predicting(normal_scores(2_000, 2, 0.3)))

    assert Outcome.PASS == verdict.outcome


def test_a_distance_within_sampling_noise_does_not_fail() -> None:
    """With 30 predictions each, a visible difference is still explainable by chance."""
    baseline, canary = predicting(normal_scores(30, 1)), predicting(normal_scores(30, 2, 0.4))

    verdict = judge(baseline, canary, min_samples=30, bins=5, psi_threshold=0.1, js_threshold=0.02)

    assert Outcome.PASS == verdict.outcome
    assert "within sampling noise" in verdict.reason


def test_identical_distributions_stay_far_below_the_threshold_at_the_minimum_sample() -> None:
    """Equal cohorts of 300 (the noisiest case): the largest JS over 200 seeds."""
    largest = 0.0
    for seed in range(200):
        baseline = predicting(normal_scores(300, 2 * seed))
        canary = predicting(normal_scores(300, 2 * seed + 1))
        verdict = judge(baseline, canary)
        assert Outcome.PASS == verdict.outcome
        largest = max(largest, verdict.evidence["prediction.js"])  # type: ignore[type-var]

    assert largest < 0.05


def test_a_healthy_canary_checked_as_it_grows_never_fails() -> None:
    """50 rollouts, half the traffic each, judged every 10 canary predictions up to 800."""
    for seed in range(50):
        rng = random.Random(seed)
        baseline, canary = CohortStats(), CohortStats()
        while canary.requests < 800:
            cohort = canary if rng.random() < 0.5 else baseline
            score = rng.betavariate(2.0, 5.0)
            cohort.observe(ok=True, latency_ms=10.0, event_time=0.0, prediction=score)
            if canary.requests >= 300 and canary.requests % 10 == 0 and cohort is canary:
                assert Outcome.FAIL != judge(baseline, canary).outcome


def test_shifted_class_shares_fail_on_l_infinity() -> None:
    baseline = predicting(["cat"] * 700 + ["dog"] * 300)
    canary = predicting(["cat"] * 300 + ["dog"] * 700)

    verdict = judge(baseline, canary)

    assert Outcome.FAIL == verdict.outcome
    assert verdict.reason.startswith("prediction classes shifted: L-inf 0.400 >= 0.3")
    assert "class 'cat' 30.0% of canary vs 70.0% of baseline predictions" in verdict.reason


def test_similar_class_shares_pass() -> None:
    baseline = predicting(["cat"] * 700 + ["dog"] * 300)
    canary = predicting(["cat"] * 650 + ["dog"] * 350)

    assert Outcome.PASS == judge(baseline, canary).outcome


def test_a_canary_predicting_classes_where_the_baseline_predicts_scores_fails() -> None:
    verdict = judge(predicting(normal_scores(400, 1)), predicting(["cat"] * 400))

    assert Outcome.FAIL == verdict.outcome
    assert "canary predicts classes, baseline predicts numbers" in verdict.reason


def test_too_many_classes_to_compare_is_inconclusive() -> None:
    labels = [f"class-{i}" for i in range(400)]

    verdict = judge(predicting(labels), predicting(labels))

    assert Outcome.INCONCLUSIVE == verdict.outcome


def test_class_probabilities_are_compared_per_class_score_and_by_top_class() -> None:
    rng = random.Random(3)
    scores = [rng.random() for _ in range(400)]
    baseline = make_cohort(400, predictions=[{"yes": p, "no": 1 - p} for p in scores])
    canary = make_cohort(400, predictions=[{"yes": p / 3, "no": 1 - p / 3} for p in scores])

    verdict = judge(baseline, canary)

    assert Outcome.FAIL == verdict.outcome
    assert {"prediction.linf", "prediction.yes.js", "prediction.no.js"} <= set(verdict.evidence)
