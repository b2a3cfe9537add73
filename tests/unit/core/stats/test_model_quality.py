"""Model quality accumulators agree with scikit-learn on real data, merge exactly, and stay small.

The models are trained on data sets that ship inside scikit-learn (breast cancer, wine, digits,
diabetes); every prediction is out of fold (`cross_val_predict`), as a served model's would be.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import reduce
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.calibration import calibration_curve
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from controller.core.stats.errors import IncompatibleStatsError
from controller.core.stats.model_quality import (
    MAX_PER_REQUEST_LOG_LOSS,
    OTHER,
    ClassifierQuality,
    LossKind,
    MulticlassQuality,
    RegressionQuality,
    per_request_loss,
)

Quality = TypeVar("Quality", ClassifierQuality, MulticlassQuality, RegressionQuality)

CLIP = 1e-15


# ---- real data, out-of-fold predictions ----------------------------------------------------


@dataclass(frozen=True)
class Binary:
    labels: list[int]
    scores: list[float]


@dataclass(frozen=True)
class Multiclass:
    names: list[str]  # class names, in the column order of `probabilities`
    labels: list[str]
    probabilities: NDArray[np.float64]

    def predictions(self) -> list[dict[str, float]]:
        return [dict(zip(self.names, row.tolist(), strict=True)) for row in self.probabilities]

    def top_classes(self) -> list[str]:
        return [self.names[i] for i in self.probabilities.argmax(axis=1)]


@dataclass(frozen=True)
class Regression:
    labels: list[float]
    predictions: list[float]


def classifier() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


@pytest.fixture(scope="module")
def breast_cancer() -> Binary:
    x, y = load_breast_cancer(return_X_y=True)
    proba = cross_val_predict(classifier(), x, y, cv=5, method="predict_proba")
    return Binary(labels=y.tolist(), scores=proba[:, 1].tolist())


def multiclass_of(data: Any) -> Multiclass:
    proba = cross_val_predict(classifier(), data.data, data.target, cv=5, method="predict_proba")
    names = [str(name) for name in data.target_names]
    return Multiclass(names, [names[t] for t in data.target], proba)


@pytest.fixture(scope="module")
def wine() -> Multiclass:
    return multiclass_of(load_wine())


@pytest.fixture(scope="module")
def digits() -> Multiclass:
    return multiclass_of(load_digits())


@pytest.fixture(scope="module")
def diabetes() -> Regression:
    x, y = load_diabetes(return_X_y=True)
    predicted = cross_val_predict(Ridge(alpha=0.1), x, y, cv=5)
    return Regression(labels=y.tolist(), predictions=predicted.tolist())


# ---- factories -----------------------------------------------------------------------------


def binary_quality(scores: list[float], labels: list[int], **settings: Any) -> ClassifierQuality:
    quality = ClassifierQuality(**settings)
    for score, label in zip(scores, labels, strict=True):
        quality.add(score, label)
    return quality


def multiclass_quality(
    predictions: list[Any], labels: list[str], max_classes: int = 20
) -> MulticlassQuality:
    quality = MulticlassQuality(max_classes=max_classes)
    for prediction, label in zip(predictions, labels, strict=True):
        quality.add(prediction, label)
    return quality


def regression_quality(predictions: list[float], labels: list[float]) -> RegressionQuality:
    quality = RegressionQuality()
    for prediction, label in zip(predictions, labels, strict=True):
        quality.add(prediction, label)
    return quality


def unzip(pairs: list[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """The predictions and the labels of some (prediction, label) pairs."""
    return [p for p, _ in pairs], [y for _, y in pairs]


def random_parts(n: int, parts: int, seed: int) -> list[list[int]]:
    """The indices 0..n-1 shuffled and cut into `parts` pieces at random points."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    cuts = sorted(rng.choice(np.arange(1, n), size=parts - 1, replace=False).tolist())
    return [piece.tolist() for piece in np.split(order, cuts)]


def json_round_trip(quality: Quality) -> Quality:
    data = json.loads(json.dumps(quality.to_dict(), allow_nan=False))
    result: Quality = type(quality).from_dict(data)
    return result


def reference_ece(labels: list[int], scores: list[float], n_bins: int) -> float:
    """ECE from scikit-learn's reliability curve: sum over bins of n_b / N |mean p - share|."""
    share, mean_score = calibration_curve(labels, scores, n_bins=n_bins, strategy="uniform")
    bins = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], scores)
    counts = np.bincount(bins, minlength=n_bins)
    counts = counts[counts > 0]
    return float(np.sum(counts / len(scores) * np.abs(mean_score - share)))


# ---- binary classifiers --------------------------------------------------------------------


def test_binary_metrics_match_scikit_learn_on_breast_cancer(breast_cancer: Binary) -> None:
    y, p = breast_cancer.labels, breast_cancer.scores

    summary = binary_quality(p, y).summary()

    assert 569.0 == summary["count"] == summary["scored"]
    assert accuracy_score(y, np.asarray(p) >= 0.5) == pytest.approx(summary["accuracy"], abs=0)
    assert float(np.mean(y)) == pytest.approx(summary["positive_rate"], rel=1e-12)
    assert float(np.mean(p)) == pytest.approx(summary["mean_score"], rel=1e-12)
    clipped = np.clip(p, CLIP, 1.0 - CLIP)  # the model gives scores below 1e-15
    assert min(p) < CLIP
    assert log_loss(y, y_proba=clipped) == pytest.approx(summary["log_loss"], rel=1e-12)
    assert brier_score_loss(y, p) == pytest.approx(summary["brier"], rel=1e-12)
    assert reference_ece(y, p, 10) == pytest.approx(summary["ece"], rel=1e-12)


def test_binned_auc_is_within_its_stated_bound_of_scikit_learns(breast_cancer: Binary) -> None:
    y, p = breast_cancer.labels, breast_cancer.scores

    summary = binary_quality(p, y).summary()

    auc, tie_share, max_error = summary["auc"], summary["auc_tie_share"], summary["auc_max_error"]
    assert auc is not None and tie_share is not None and max_error is not None
    assert tie_share / 2 == max_error
    assert 0.0 < tie_share < 1e-3  # scores spread over [0, 1]: few pairs share a bin
    assert abs(roc_auc_score(y, p) - auc) <= max_error + 1e-12


def test_a_coarser_grid_loses_accuracy_but_keeps_within_its_bound(breast_cancer: Binary) -> None:
    y, p = breast_cancer.labels, breast_cancer.scores

    summary = binary_quality(p, y, auc_bins=4).summary()

    max_error = summary["auc_max_error"]
    assert summary["auc"] is not None and max_error is not None
    assert max_error > 1e-3
    assert abs(roc_auc_score(y, p) - summary["auc"]) <= max_error + 1e-12


def test_auc_is_exact_when_no_positive_shares_a_bin_with_a_negative() -> None:
    scores = [0.05, 0.15, 0.35, 0.45, 0.55, 0.65, 0.85, 0.95]
    labels = [0, 1, 0, 0, 1, 0, 1, 1]

    summary = binary_quality(scores, labels).summary()

    assert 0.0 == summary["auc_tie_share"]
    assert roc_auc_score(labels, scores) == summary["auc"]


def test_pairs_all_in_one_bin_count_half_and_say_so() -> None:
    summary = binary_quality([0.5001, 0.5002, 0.5003], [1, 0, 1]).summary()

    assert 0.5 == summary["auc"]
    assert 1.0 == summary["auc_tie_share"]
    assert 0.5 == summary["auc_max_error"]


def test_the_threshold_decides_the_predicted_class(breast_cancer: Binary) -> None:
    y, p = breast_cancer.labels, breast_cancer.scores

    summary = binary_quality(p, y, threshold=0.9).summary()

    assert accuracy_score(y, np.asarray(p) >= 0.9) == summary["accuracy"]
    assert summary["accuracy"] != binary_quality(p, y).summary()["accuracy"]


def test_a_score_at_the_threshold_predicts_the_positive_class() -> None:
    assert 1.0 == binary_quality([0.5, 0.3], [1, 0]).summary()["accuracy"]
    assert 0.0 == per_request_loss("zero_one", 0.5, 1)


def test_calibration_error_follows_the_number_of_bins(breast_cancer: Binary) -> None:
    y, p = breast_cancer.labels, breast_cancer.scores

    summary = binary_quality(p, y, calibration_bins=5).summary()

    assert reference_ece(y, p, 5) == pytest.approx(summary["ece"], rel=1e-12)


def test_bare_predicted_classes_give_accuracy_and_no_score_metrics(breast_cancer: Binary) -> None:
    y = breast_cancer.labels
    predicted = [int(s >= 0.5) for s in breast_cancer.scores]
    quality = ClassifierQuality()
    for guess, label in zip(predicted, y, strict=True):
        quality.add_class(guess, label)

    summary = quality.summary()

    assert accuracy_score(y, predicted) == summary["accuracy"]
    assert 0.0 == summary["scored"]
    for metric in ("log_loss", "brier", "ece", "auc", "auc_tie_share", "mean_score"):
        assert summary[metric] is None, metric


def test_accuracy_counts_classes_and_scores_together() -> None:
    quality = binary_quality([0.9, 0.2], [1, 1])
    quality.add_class(True, 1)
    quality.add_class(0, 1)

    summary = quality.summary()

    assert 4.0 == summary["count"]
    assert 2.0 == summary["scored"]
    assert 0.5 == summary["accuracy"]
    assert brier_score_loss([1, 1], [0.9, 0.2]) == pytest.approx(summary["brier"], rel=1e-12)


def test_an_empty_classifier_has_no_metrics_but_its_count() -> None:
    summary = ClassifierQuality().summary()

    assert 0.0 == summary.pop("count")
    assert 0.0 == summary.pop("scored")
    assert all(value is None for value in summary.values()), summary


def test_auc_needs_both_classes() -> None:
    summary = binary_quality([0.2, 0.7, 0.9], [1, 1, 1]).summary()

    assert summary["auc"] is None
    assert summary["brier"] is not None


# ---- multi-class classifiers ---------------------------------------------------------------


def test_multiclass_probabilities_match_scikit_learn_on_wine(wine: Multiclass) -> None:
    quality = multiclass_quality(wine.predictions(), wine.labels)

    summary = quality.summary()

    clipped = np.clip(wine.probabilities, CLIP, 1.0 - CLIP)
    assert 178.0 == summary["count"] == summary["scored"]
    assert accuracy_score(wine.labels, wine.top_classes()) == summary["accuracy"]
    assert log_loss(wine.labels, y_proba=clipped, labels=wine.names) == pytest.approx(
        summary["log_loss"], rel=1e-12
    )
    assert brier_score_loss(wine.labels, wine.probabilities, labels=wine.names) == pytest.approx(
        summary["brier"], rel=1e-12
    )


def test_per_class_counts_are_the_confusion_matrix_margins(wine: Multiclass) -> None:
    matrix = confusion_matrix(wine.labels, wine.top_classes(), labels=wine.names)

    per_class = multiclass_quality(wine.predictions(), wine.labels).per_class()

    assert wine.names == list(per_class)
    for i, name in enumerate(wine.names):
        row = per_class[name]
        assert float(matrix[i].sum()) == row["labels"]
        assert float(matrix[:, i].sum()) == row["predicted"]
        assert float(matrix[i, i]) == row["correct"]
        assert matrix[i, i] / matrix[i].sum() == pytest.approx(row["recall"], rel=1e-12)


def test_predicted_class_names_give_accuracy_only(digits: Multiclass) -> None:
    quality = multiclass_quality(digits.top_classes(), digits.labels)

    summary = quality.summary()

    assert accuracy_score(digits.labels, digits.top_classes()) == summary["accuracy"]
    assert 0.0 == summary["scored"]
    assert summary["log_loss"] is None and summary["brier"] is None


def test_classes_beyond_the_cap_fold_into_other(digits: Multiclass) -> None:
    guesses = digits.top_classes()
    matrix = confusion_matrix(digits.labels, guesses, labels=digits.names)

    per_class = multiclass_quality(guesses, digits.labels, max_classes=4).per_class()

    assert ["0", "1", "2", "3", OTHER] == list(per_class)
    folded = slice(4, None)
    assert float(matrix[folded].sum()) == per_class[OTHER]["labels"]
    assert float(matrix[:, folded].sum()) == per_class[OTHER]["predicted"]
    assert float(np.trace(matrix[folded, folded])) == per_class[OTHER]["correct"]
    assert float(matrix[2].sum()) == per_class["2"]["labels"]


def test_which_classes_fold_does_not_depend_on_the_order_of_the_pairs(digits: Multiclass) -> None:
    pairs = list(zip(digits.top_classes(), digits.labels, strict=True))
    order = np.random.default_rng(5).permutation(len(pairs)).tolist()

    forward = multiclass_quality(*unzip(pairs), max_classes=3)
    shuffled = multiclass_quality(*unzip([pairs[i] for i in order]), max_classes=3)
    backward = multiclass_quality(*unzip(pairs[::-1]), max_classes=3)

    assert forward == shuffled == backward


def test_a_label_missing_from_the_probabilities_has_probability_zero() -> None:
    quality = multiclass_quality([{"cat": 0.75, "dog": 0.25}], ["bird"])

    summary = quality.summary()

    assert -math.log(CLIP) == pytest.approx(summary["log_loss"], rel=1e-12)
    assert 0.75**2 + 0.25**2 + 1.0 == summary["brier"]
    assert 0.0 == summary["accuracy"]


def test_equal_probabilities_predict_the_first_name_in_sorted_order() -> None:
    quality = multiclass_quality([{"b": 0.5, "a": 0.5}], ["a"])

    assert 1.0 == quality.summary()["accuracy"]


# ---- regression ----------------------------------------------------------------------------


def test_regression_metrics_match_scikit_learn_on_diabetes(diabetes: Regression) -> None:
    y, predicted = diabetes.labels, diabetes.predictions

    summary = regression_quality(predicted, y).summary()

    assert 442.0 == summary["count"]
    assert mean_absolute_error(y, predicted) == pytest.approx(summary["mae"], rel=1e-12)
    assert mean_squared_error(y, predicted) == pytest.approx(summary["mse"], rel=1e-12)
    assert math.sqrt(mean_squared_error(y, predicted)) == pytest.approx(summary["rmse"], rel=1e-12)
    bias = float(np.mean(np.asarray(predicted) - np.asarray(y)))
    assert bias == pytest.approx(summary["bias"], rel=1e-9)


def test_an_empty_regression_has_no_metrics_but_its_count() -> None:
    assert {"count": 0.0, "mae": None, "mse": None, "rmse": None, "bias": None} == (
        RegressionQuality().summary()
    )


def test_regression_sums_are_exact_whatever_the_magnitudes() -> None:
    quality = regression_quality([1e100, 1.0, -1e100], [0.0, 0.0, 0.0])

    assert 1.0 / 3.0 == quality.summary()["bias"]


# ---- merging -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_merging_any_split_of_the_pairs_equals_adding_them_all(
    seed: int, breast_cancer: Binary, wine: Multiclass, diabetes: Regression
) -> None:
    def whole_and_parts(
        build: Any, predictions: list[Any], labels: list[Any]
    ) -> tuple[Any, list[Any]]:
        pieces = random_parts(len(labels), 4, seed)
        parts = [
            build([predictions[i] for i in piece], [labels[i] for i in piece]) for piece in pieces
        ]
        return build(predictions, labels), parts

    cases = [
        whole_and_parts(binary_quality, breast_cancer.scores, breast_cancer.labels),
        whole_and_parts(multiclass_quality, wine.predictions(), wine.labels),
        whole_and_parts(regression_quality, diabetes.predictions, diabetes.labels),
    ]
    for whole, parts in cases:
        assert whole == reduce(type(whole).merged, parts)
        assert whole == reduce(type(whole).merged, parts[::-1])
        assert whole.summary() == reduce(type(whole).merged, parts).summary()
        a, b, c = parts[0], parts[1], parts[2]
        assert a.merged(b).merged(c) == a.merged(b.merged(c))
        assert a.merged(b) == b.merge(a)


def test_merging_in_place_equals_the_pure_merge_and_leaves_the_other_alone(
    breast_cancer: Binary,
) -> None:
    left = binary_quality(breast_cancer.scores[:300], breast_cancer.labels[:300])
    right = binary_quality(breast_cancer.scores[300:], breast_cancer.labels[300:])
    right_before = right.copy()
    expected = left.merged(right)

    left.merge_from(right)

    assert expected == left
    assert right_before == right
    assert binary_quality(breast_cancer.scores, breast_cancer.labels) == left


def test_classes_folded_in_different_parts_merge_exactly(digits: Multiclass) -> None:
    guesses = digits.top_classes()
    whole = multiclass_quality(guesses, digits.labels, max_classes=4)

    for seed in (1, 2, 3):
        pieces = random_parts(len(guesses), 5, seed)
        parts = [
            multiclass_quality(
                [guesses[i] for i in piece], [digits.labels[i] for i in piece], max_classes=4
            )
            for piece in pieces
        ]
        assert whole == reduce(MulticlassQuality.merged, parts)


@given(
    st.lists(
        st.tuples(st.floats(0.0, 1.0), st.integers(0, 1)),
        min_size=2,
        max_size=120,
    ),
    st.integers(1, 119),
)
def test_any_scores_merge_exactly(pairs: list[tuple[float, int]], cut: int) -> None:
    scores, labels = [p for p, _ in pairs], [y for _, y in pairs]
    cut = cut % len(pairs)
    left = binary_quality(scores[:cut], labels[:cut])
    right = binary_quality(scores[cut:], labels[cut:])

    assert binary_quality(scores, labels) == right.merged(left)


@given(
    st.lists(
        st.tuples(st.floats(-1e140, 1e140), st.floats(-1e140, 1e140)),
        min_size=2,
        max_size=120,
    ),
    st.integers(1, 119),
)
def test_any_regression_errors_merge_exactly(pairs: list[tuple[float, float]], cut: int) -> None:
    predictions, labels = [p for p, _ in pairs], [y for _, y in pairs]
    cut = cut % len(pairs)
    left = regression_quality(predictions[:cut], labels[:cut])
    right = regression_quality(predictions[cut:], labels[cut:])

    assert regression_quality(predictions, labels) == right.merged(left)


def test_accumulators_built_differently_do_not_merge() -> None:
    with pytest.raises(IncompatibleStatsError, match="auc_bins"):
        ClassifierQuality(auc_bins=100).merged(ClassifierQuality())
    with pytest.raises(IncompatibleStatsError, match="threshold"):
        ClassifierQuality(threshold=0.3).merge_from(ClassifierQuality())
    with pytest.raises(IncompatibleStatsError, match="max_classes"):
        MulticlassQuality(max_classes=3).merged(MulticlassQuality())


# ---- plain values --------------------------------------------------------------------------


def test_every_accumulator_survives_json(
    breast_cancer: Binary, digits: Multiclass, diabetes: Regression
) -> None:
    binary = binary_quality(breast_cancer.scores, breast_cancer.labels, calibration_bins=7)
    binary.add_class(1, 0)
    multiclass = multiclass_quality(digits.predictions(), digits.labels, max_classes=6)
    regression = regression_quality(diabetes.predictions, diabetes.labels)
    qualities: list[Any] = [
        binary,
        multiclass,
        regression,
        ClassifierQuality(),
        MulticlassQuality(),
        RegressionQuality(),
    ]

    for quality in qualities:
        restored = json_round_trip(quality)
        assert quality == restored
        assert quality.to_dict() == restored.to_dict()
        assert quality.summary() == restored.summary()
        assert quality == type(quality).from_dict(quality.to_dict())


def test_a_restored_accumulator_keeps_accumulating(breast_cancer: Binary) -> None:
    scores, labels = breast_cancer.scores, breast_cancer.labels
    restored = json_round_trip(binary_quality(scores[:200], labels[:200]))

    for score, label in zip(scores[200:], labels[200:], strict=True):
        restored.add(score, label)

    assert binary_quality(scores, labels) == restored


# ---- bounded state -------------------------------------------------------------------------


def json_size(quality: Any) -> int:
    return len(json.dumps(quality.to_dict()))


def test_classifier_state_does_not_grow_with_the_number_of_pairs() -> None:
    rng = np.random.default_rng(11)
    scores = rng.uniform(0.0, 1.0, 100_000).tolist()
    labels = (rng.uniform(0.0, 1.0, 100_000) < np.asarray(scores)).astype(int).tolist()
    small = binary_quality(scores[:10_000], labels[:10_000])  # every AUC bin already occupied
    large = binary_quality(scores, labels)

    assert 1000 == len(large.auc_positives) == len(large.auc_negatives)
    assert json_size(large) < 1.2 * json_size(small)
    assert json_size(large) < 40_000
    sums = [large.log_loss_sum, large.brier_sum, *large.bin_scores]
    assert max(len(s.parts) for s in sums) <= 33


def test_multiclass_state_is_capped_whatever_the_number_of_classes() -> None:
    rng = np.random.default_rng(12)
    names = [f"class-{i:04d}" for i in rng.integers(0, 5000, 50_000)]
    guesses = [f"class-{i:04d}" for i in rng.integers(0, 5000, 50_000)]

    quality = multiclass_quality(guesses, names)

    assert 20 == len(quality.classes)
    assert json_size(quality) < 2_000
    assert 50_000.0 == sum(row["labels"] or 0.0 for row in quality.per_class().values())


def test_regression_state_does_not_grow_with_the_number_of_pairs() -> None:
    rng = np.random.default_rng(13)
    labels = rng.normal(100.0, 30.0, 100_000).tolist()
    predictions = (np.asarray(labels) + rng.normal(0.0, 5.0, 100_000)).tolist()

    small = regression_quality(predictions[:1000], labels[:1000])
    large = regression_quality(predictions, labels)

    assert json_size(large) < 1_000
    assert json_size(large) < 1.5 * json_size(small)


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "label", "message"),
    [
        (0.5, 2, "binary label must be 0 or 1"),
        (0.5, "1", "binary label must be 0 or 1"),
        (0.5, math.nan, "binary label must be 0 or 1"),
        (0.5, 0.5, "binary label must be 0 or 1"),
        (1.5, 1, r"score must be a number in \[0, 1\]"),
        (-0.1, 0, r"score must be a number in \[0, 1\]"),
        (math.nan, 1, r"score must be a number in \[0, 1\]"),
        (math.inf, 1, r"score must be a number in \[0, 1\]"),
        ("0.5", 1, "string"),
        (None, 1, r"score must be a number in \[0, 1\]"),
    ],
)
def test_bad_binary_pairs_are_refused_and_record_nothing(
    score: Any, label: Any, message: str
) -> None:
    quality = ClassifierQuality()

    with pytest.raises(ValueError, match=message):
        quality.add(score, label)

    assert ClassifierQuality() == quality


def test_a_bare_predicted_class_must_be_0_or_1() -> None:
    with pytest.raises(ValueError, match="predicted class must be 0 or 1"):
        ClassifierQuality().add_class(0.7, 1)


@pytest.mark.parametrize(
    ("prediction", "label", "message"),
    [
        ({"a": 0.6, "b": 0.6}, "a", "must sum to 1"),
        ({"a": 1.2, "b": -0.2}, "a", r"probability of class 'a' must be a number in \[0, 1\]"),
        ({"a": math.nan, "b": 1.0}, "a", r"must be a number in \[0, 1\]"),
        ({}, "a", "at least one class"),
        ("a", None, "label must be a class name"),
        ("a", 1.5, "label must be a class name"),
        (3.5, "a", "predicted class must be a class name"),
        ("a", OTHER, "reserved"),
    ],
)
def test_bad_multiclass_pairs_are_refused_and_record_nothing(
    prediction: Any, label: Any, message: str
) -> None:
    quality = MulticlassQuality()

    with pytest.raises(ValueError, match=message):
        quality.add(prediction, label)

    assert MulticlassQuality() == quality


@pytest.mark.parametrize(
    ("prediction", "label", "message"),
    [
        (math.nan, 1.0, "finite"),
        (1.0, math.inf, "finite"),
        ("3", 1.0, "must be a number"),
        (1e300, -1e300, "2\\*\\*480"),
    ],
)
def test_bad_regression_pairs_are_refused_and_record_nothing(
    prediction: Any, label: Any, message: str
) -> None:
    quality = RegressionQuality()

    with pytest.raises(ValueError, match=message):
        quality.add(prediction, label)

    assert RegressionQuality() == quality


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"auc_bins": 0}, "auc_bins"),
        ({"calibration_bins": 2.5}, "calibration_bins"),
    ],
)
def test_bad_classifier_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClassifierQuality(**settings)


# ---- per-request losses --------------------------------------------------------------------


def losses(kind: str, predictions: list[Any], labels: list[Any]) -> NDArray[np.float64]:
    return np.asarray(
        [per_request_loss(kind, p, y) for p, y in zip(predictions, labels, strict=True)]
    )


def test_binary_per_request_losses_average_to_the_metrics(breast_cancer: Binary) -> None:
    y, p = breast_cancer.labels, breast_cancer.scores

    brier = losses("brier", p, y)
    zero_one = losses(LossKind.ZERO_ONE, p, y)
    logs = losses("log_loss", p, y)

    assert brier_score_loss(y, p) == pytest.approx(float(brier.mean()), rel=1e-12)
    assert 1.0 - accuracy_score(y, np.asarray(p) >= 0.5) == pytest.approx(zero_one.mean())
    truth = np.where(np.asarray(y) == 1, p, 1.0 - np.asarray(p))
    capped = np.minimum(-np.log(truth), math.log(1e4)) / math.log(1e4)
    np.testing.assert_allclose(logs, capped, rtol=1e-12, atol=1e-15)
    for values in (brier, zero_one, logs):
        assert 0.0 <= values.min() and values.max() <= 1.0


def test_multiclass_per_request_losses_average_to_the_metrics(wine: Multiclass) -> None:
    predictions = wine.predictions()

    brier = losses("brier", predictions, wine.labels)
    zero_one = losses("zero_one", predictions, wine.labels)

    multi_brier = brier_score_loss(wine.labels, wine.probabilities, labels=wine.names)
    assert multi_brier / 2 == pytest.approx(float(brier.mean()), rel=1e-12)
    assert 1.0 - accuracy_score(wine.labels, wine.top_classes()) == pytest.approx(zero_one.mean())


def test_regression_per_request_loss_is_the_absolute_error(diabetes: Regression) -> None:
    errors = losses("absolute_error", diabetes.predictions, diabetes.labels)

    assert mean_absolute_error(diabetes.labels, diabetes.predictions) == pytest.approx(
        float(errors.mean()), rel=1e-12
    )


def test_the_log_loss_of_one_request_is_capped_at_one() -> None:
    assert 1.0 == per_request_loss("log_loss", 0.0, 1)
    assert 1.0 == per_request_loss("log_loss", {"a": 1.0}, "b")
    assert 0.0 == per_request_loss("log_loss", 1.0, 1)
    assert 0.5 == pytest.approx(per_request_loss("log_loss", 0.01, 1))
    assert math.log(1e4) == MAX_PER_REQUEST_LOG_LOSS


def test_class_names_have_a_zero_one_loss_only() -> None:
    assert 0.0 == per_request_loss("zero_one", "cat", "cat")
    assert 1.0 == per_request_loss("zero_one", "cat", "dog")
    with pytest.raises(ValueError, match="brier needs probabilities"):
        per_request_loss("brier", "cat", "cat")


def test_the_threshold_decides_the_zero_one_loss() -> None:
    assert 1.0 == per_request_loss("zero_one", 0.6, 1, threshold=0.7)
    assert 0.0 == per_request_loss("zero_one", 0.6, 1)


def test_loss_kinds_state_their_bounds() -> None:
    assert {(0.0, 1.0)} == {k.bounds for k in LossKind if k is not LossKind.ABSOLUTE_ERROR}
    assert (0.0, math.inf) == LossKind.ABSOLUTE_ERROR.bounds
    assert not LossKind.ABSOLUTE_ERROR.is_bounded
    assert LossKind.BRIER.is_bounded


def test_an_unknown_loss_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known kinds: zero_one, brier, log_loss, absolute_error"):
        per_request_loss("hinge", 0.5, 1)


def test_bad_per_request_pairs_are_refused() -> None:
    with pytest.raises(ValueError, match="binary label must be 0 or 1"):
        per_request_loss("brier", 0.5, 3)
    with pytest.raises(ValueError, match=r"score must be a number in \[0, 1\]"):
        per_request_loss("zero_one", math.nan, 1)
    with pytest.raises(ValueError, match="must be a number"):
        per_request_loss("absolute_error", {"a": 1.0}, 1.0)


@given(
    st.lists(st.tuples(st.floats(0.0, 1.0), st.sampled_from([0, 1])), max_size=60),
    st.sampled_from([(0.5, 10, 1000), (0.3, 7, 13)]),
)
def test_scores_added_in_bulk_are_added_one_by_one(
    pairs: list[tuple[float, int]], settings: tuple[float, int, int]
) -> None:
    threshold, calibration_bins, auc_bins = settings
    bulk = ClassifierQuality(threshold, calibration_bins, auc_bins)
    single = ClassifierQuality(threshold, calibration_bins, auc_bins)
    bulk.add(0.25, 1)  # onto a state that has pairs already

    single.add(0.25, 1)
    for p, y in pairs:
        single.add(p, y)
    bulk.add_scores(*unzip(pairs))

    assert single == bulk
    assert single.to_dict() == bulk.to_dict()
    assert single.summary() == bulk.summary()


def test_a_real_classifier_s_scores_added_in_bulk_give_its_quality(breast_cancer: Binary) -> None:
    bulk = ClassifierQuality()

    bulk.add_scores(breast_cancer.scores, breast_cancer.labels)

    assert binary_quality(breast_cancer.scores, breast_cancer.labels) == bulk
