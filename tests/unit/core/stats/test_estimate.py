"""Accuracy before the labels: estimated from the scores, calibrated on the baseline's labels."""

from __future__ import annotations

import random

import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from controller.core.stats.estimate import (
    calibration_table,
    estimate_accuracy,
    score_histogram,
)
from controller.core.stats.model_quality import ClassifierQuality
from controller.core.stats.sketch import QuantileSketch


@pytest.fixture(scope="module")
def scored() -> tuple[list[float], list[int]]:
    """Out-of-fold scores of a deliberately weak model (two features) on breast cancer:
    89 % accurate, so there is something to estimate."""
    x, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    scores = cross_val_predict(model, x[:, [0, 1]], y, cv=5, method="predict_proba")[:, 1]
    return [float(s) for s in scores], [int(v) for v in y]


def _draws(
    scores: list[float], labels: list[int], rows: list[int], n: int, seed: int
) -> tuple[QuantileSketch, ClassifierQuality]:
    """`n` requests drawn from `rows`: their score sketch, and their quality once labelled."""
    rng = random.Random(seed)
    sketch, quality = QuantileSketch(), ClassifierQuality()
    for _ in range(n):
        i = rng.choice(rows)
        sketch.add(scores[i])
        quality.add(scores[i], labels[i])
    return sketch, quality


def test_the_estimate_covers_the_accuracy_and_follows_a_shift_towards_the_threshold(
    scored: tuple[list[float], list[int]],
) -> None:
    """The baseline's 2,000 labelled requests calibrate; a canary served the same population,
    and one sent the hard cases (scores near the threshold), are estimated from their scores
    alone and checked against the accuracy their labels then show."""
    scores, labels = scored
    rows = list(range(len(scores)))
    _, baseline = _draws(scores, labels, rows, 2000, 0)
    table = calibration_table(baseline)
    hard = [i for i in rows if abs(scores[i] - 0.5) < 0.35]

    same, same_labelled = _draws(scores, labels, rows, 5000, 1)
    shifted, shifted_labelled = _draws(scores, labels, hard, 5000, 2)
    as_served = estimate_accuracy(score_histogram(same), table)
    as_shifted = estimate_accuracy(score_histogram(shifted), table)
    same_truth = same_labelled.summary()["accuracy"]
    shifted_truth = shifted_labelled.summary()["accuracy"]

    assert as_served is not None and as_shifted is not None
    assert same_truth is not None and shifted_truth is not None
    assert shifted_truth < same_truth - 0.1  # the shift costs accuracy
    assert as_served.low <= same_truth <= as_served.high
    assert as_shifted.low <= shifted_truth <= as_shifted.high
    assert as_shifted.high < as_served.low  # and the estimate shows it before any label
    assert 2000 == as_served.calibration_pairs


def test_without_scores_there_is_no_estimate_and_bins_must_agree() -> None:
    table = calibration_table(ClassifierQuality())
    assert estimate_accuracy([0.0] * len(table), table) is None
    with pytest.raises(ValueError, match="same bins"):
        estimate_accuracy([1.0, 2.0], table)


def test_with_no_labels_the_scores_are_taken_at_their_word_and_the_interval_is_wide() -> None:
    table = calibration_table(ClassifierQuality())
    estimate = estimate_accuracy([10.0] * len(table), table)
    assert estimate is not None
    # scores spread evenly over [0, 1], taken as calibrated: right three times in four
    assert estimate.accuracy == pytest.approx(0.75)
    assert estimate.high - estimate.low > 0.2
