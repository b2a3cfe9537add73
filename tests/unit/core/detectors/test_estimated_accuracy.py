"""The estimated accuracy rule: a likely drop seen from the scores, before the labels."""

from __future__ import annotations

import random

import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from controller.core.detectors.base import EvaluationContext
from controller.core.detectors.registry import build_detector
from controller.core.stats.cohort import CohortStats
from controller.core.stats.labelled import LabelledStats


@pytest.fixture(scope="module")
def scored() -> tuple[list[float], list[int]]:
    """A deliberately weak model (two features, 89 % accurate) on breast cancer."""
    x, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    found = cross_val_predict(model, x[:, [0, 1]], y, cv=5, method="predict_proba")[:, 1]
    return [float(s) for s in found], [int(v) for v in y]


def served(scores: list[float], rows: list[int], n: int, seed: int) -> CohortStats:
    rng = random.Random(seed)
    stats = CohortStats()
    for _ in range(n):
        stats.observe(ok=True, latency_ms=10.0, event_time=1.0, prediction=scores[rng.choice(rows)])
    return stats


def context(scores: list[float], labels: list[int], pairs: int) -> EvaluationContext:
    rng = random.Random(0)
    baseline = LabelledStats()
    for k in range(pairs):
        i = rng.randrange(len(labels))
        baseline.add(f"b{k}", scores[i], labels[i], 60.0)
    return EvaluationContext(now=100.0, labelled={"baseline": baseline})


def test_a_canary_sent_the_hard_cases_is_flagged_before_its_labels(
    scored: tuple[list[float], list[int]],
) -> None:
    scores, labels = scored
    rows = list(range(len(scores)))
    hard = [i for i in rows if abs(scores[i] - 0.5) < 0.35]
    rule = build_detector("estimated_accuracy")
    ctx = context(scores, labels, 2000)
    baseline = served(scores, rows, 4000, 1)

    shifted = rule.evaluate(baseline, served(scores, hard, 4000, 2), ctx)
    same = rule.evaluate(baseline, served(scores, rows, 4000, 3), ctx)

    assert "fail" == shifted.outcome.value
    assert "likely drop" in shifted.reason
    assert shifted.evidence["estimated_drop"] > 0.1
    assert "pass" == same.outcome.value


def test_without_labelled_baseline_scores_it_has_nothing_to_calibrate_on(
    scored: tuple[list[float], list[int]],
) -> None:
    scores, labels = scored
    rows = list(range(len(scores)))
    rule = build_detector("estimated_accuracy")
    stats = served(scores, rows, 500, 1)

    verdict = rule.evaluate(stats, stats, context(scores, labels, 50))

    assert "no_data" == verdict.outcome.value
    assert "need 200" in verdict.reason
    assert not rule.spends_alpha()
