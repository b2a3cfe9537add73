"""Labelled predictions of a cohort: quality, loss events, label delay and labels, merged."""

from __future__ import annotations

import contextlib
import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import brier_score_loss, log_loss, mean_absolute_error
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from controller.core.stats.labelled import (
    LabelFold,
    LabelledStats,
    kind_of,
    loss_event,
    quality_test,
)


@pytest.fixture(scope="module")
def cancer() -> tuple[list[float], list[int]]:
    x, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    scores = cross_val_predict(model, x, y, cv=5, method="predict_proba")[:, 1]
    return [float(p) for p in scores], [int(v) for v in y]


def test_a_classifier_s_pairs_give_its_quality_and_mean_loss(
    cancer: tuple[list[float], list[int]],
) -> None:
    scores, labels = cancer
    stats = LabelledStats()
    for i, (p, y) in enumerate(zip(scores, labels, strict=True)):
        assert stats.add(f"req-{i}", p, y, delay_s=60.0 + i)

    summary = stats.summary()
    assert "binary" == summary["kind"]
    assert summary["log_loss"] == pytest.approx(log_loss(labels, scores), rel=1e-9)
    assert summary["brier"] == pytest.approx(brier_score_loss(labels, scores), rel=1e-9)
    # the bounded loss of a score is its Brier term: the mean loss is the Brier score
    assert stats.mean_loss == pytest.approx(brier_score_loss(labels, scores), rel=1e-9)
    assert summary["delay_p50_s"] == pytest.approx(60 + len(scores) / 2, rel=0.03)


def test_loss_events_are_draws_at_the_mean_loss_the_same_on_every_replay() -> None:
    rng = random.Random(5)
    losses = [rng.random() ** 3 for _ in range(40_000)]
    events = [loss_event(f"r{i}", loss) for i, loss in enumerate(losses)]

    mean = sum(losses) / len(losses)
    assert abs(sum(events) / len(events) - mean) < 4 * math.sqrt(mean / len(events))
    assert events == [loss_event(f"r{i}", loss) for i, loss in enumerate(losses)]
    assert not loss_event("any", 0.0) and loss_event("any", 1.0)
    with pytest.raises(ValueError, match="loss in \\[0, 1\\]"):
        loss_event("r", 1.5)


def test_loss_events_do_not_follow_a_router_s_hash_of_the_request_id() -> None:
    """A router that sends ids whose plain hash is low to the canary: the events of both
    cohorts still come at their mean loss (the draw's hash is keyed)."""
    ids = [f"user-{i}" for i in range(40_000)]
    canary = [i for i in ids if hash_share(i) < 0.1]
    baseline = [i for i in ids if hash_share(i) >= 0.1]

    for cohort in (canary, baseline):
        share = sum(loss_event(i, 0.2) for i in cohort) / len(cohort)
        assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(cohort))


def hash_share(request_id: str) -> float:
    import hashlib

    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2.0**64


def test_a_regression_s_loss_is_its_scaled_absolute_error() -> None:
    x, y = load_diabetes(return_X_y=True)
    predictions = cross_val_predict(Ridge(alpha=1.0), x, y, cv=5)
    stats = LabelledStats(loss_scale=100.0)
    for i, (p, t) in enumerate(zip(predictions, y, strict=True)):
        stats.add(f"d{i}", float(p), float(t), delay_s=1.0)

    summary = stats.summary()
    assert "regression" == summary["kind"]
    assert summary["mae"] == pytest.approx(mean_absolute_error(y, predictions), rel=1e-9)
    expected = sum(min(abs(p - t) / 100.0, 1.0) for p, t in zip(predictions, y, strict=True))
    assert stats.mean_loss == pytest.approx(expected / len(y), rel=1e-9)


def test_the_first_pair_sets_the_kind_and_other_kinds_are_counted_not_folded() -> None:
    stats = LabelledStats()
    assert stats.add("a", 0.9, 1, 1.0)
    assert not stats.add("b", "fraud", "legit", 1.0)
    assert (1, 1) == (stats.pairs, stats.mismatched)
    assert "multiclass" == kind_of({"a": 0.4, "b": 0.6}, "a")
    assert "binary" == kind_of(True, False)
    assert "regression" == kind_of(3.5, 2.0)
    with pytest.raises(ValueError, match="not a pair any quality metric takes"):
        kind_of(None, 1)


def test_merging_the_parts_is_folding_the_whole_and_it_round_trips(
    cancer: tuple[list[float], list[int]],
) -> None:
    scores, labels = cancer
    whole, parts = LabelledStats(), [LabelledStats() for _ in range(3)]
    for i, (p, y) in enumerate(zip(scores, labels, strict=True)):
        whole.add(f"q{i}", p, y, float(i % 97))
        parts[i % 3].add(f"q{i}", p, y, float(i % 97))
    merged = LabelledStats()
    for part in reversed(parts):
        merged.merge_from(part)

    assert merged == whole
    again = LabelledStats.from_dict(json.loads(json.dumps(whole.to_dict())))
    assert again == whole
    assert again.loss_events == whole.loss_events > 0


def test_label_classes_are_bounded() -> None:
    stats = LabelledStats()
    for i in range(100):
        stats.add(f"c{i}", f"class-{i}", f"class-{i}", 1.0)
    assert len(stats.label_classes) == 21  # twenty kept and the rest together
    assert 80 == stats.label_classes["__other__"]


def test_a_pair_no_metric_takes_changes_nothing() -> None:
    stats = LabelledStats()
    with pytest.raises(ValueError):
        stats.add("x", float("nan"), 1, 1.0)  # no number
    assert (None, 0) == (stats.kind, stats.pairs)
    assert stats == LabelledStats()


def _rollout(
    scores: list[float],
    labels: list[int],
    candidate: list[float],
    seed: int,
    pairs: int = 4000,
) -> list[tuple[LabelledStats, LabelledStats]]:
    """Two steps (20 % then 50 % to the canary) of requests drawn from the dataset, each
    routed at random; the baseline serves `scores`, the canary `candidate`."""
    rng = random.Random(seed)
    strata = []
    for share in (0.2, 0.5):
        baseline, canary = LabelledStats(), LabelledStats()
        for k in range(pairs // 2):
            i = rng.randrange(len(labels))
            to_canary = rng.random() < share
            cohort, served = (canary, candidate) if to_canary else (baseline, scores)
            cohort.add(f"{seed}-{share}-{k}", served[i], labels[i], 60.0)
        strata.append((baseline, canary))
    return strata


def test_the_quality_test_rolls_back_a_worse_model_whose_outputs_look_the_same(
    cancer: tuple[list[float], list[int]],
) -> None:
    """A candidate that serves the baseline's score for 90 % of the requests and, for the
    rest, the score of another random request: the same output distribution, a Brier score
    of 0.061 against 0.021. In 4,000 labelled requests the quality test finds it; an equal
    candidate (A/A) is not rolled back."""
    scores, labels = cancer
    rng = random.Random(1)
    worse = [p if rng.random() < 0.9 else rng.choice(scores) for p in scores]

    found = sum(
        quality_test(_rollout(scores, labels, worse, s), 0.1, 0.01).rejects for s in range(10)
    )
    false = sum(
        quality_test(_rollout(scores, labels, scores, 100 + s), 0.1, 0.01).rejects
        for s in range(60)
    )

    assert found >= 8  # 9 of 10 as measured
    assert false <= 2  # alpha 0.01 in each of 60 A/A rollouts: 0.6 expected at most


# ---- LabelFold.add_many: the join's bulk path is `add` pair by pair ---------------------------

_score = st.floats(0.0, 1.0, allow_nan=False)
_pair_value = st.one_of(
    st.tuples(_score, st.sampled_from([0.0, 1.0])),  # the inline path
    st.tuples(_score, st.sampled_from([0, 1, True, 2.0, -1.0])),  # binary-ish, other types
    st.tuples(st.sampled_from([0, 1, True]), st.sampled_from([0.0, 1.0])),  # a bare class
    st.tuples(st.floats(-5.0, 5.0, allow_nan=False), st.floats(-5.0, 5.0, allow_nan=False)),
    st.tuples(st.sampled_from(["cat", "dog"]), st.sampled_from(["cat", "dog", "bird"])),
    st.tuples(st.just({"cat": 0.25, "dog": 0.75}), st.sampled_from(["cat", "dog"])),
    st.tuples(st.sampled_from([1.5, -0.1, float("nan"), float("inf")]), st.just(1.0)),
    st.tuples(_score, st.sampled_from([float("nan"), "x"])),
)
_pairs = st.lists(
    st.tuples(
        st.text("abcdef0123456789", min_size=1, max_size=12),
        _pair_value,
        st.floats(1.7e9, 1.7e9 + 3600, allow_nan=False),
        st.floats(-100.0, 86_400.0, allow_nan=False),
    ).map(lambda t: (t[0], t[1][0], t[1][1], t[2], t[2] + t[3])),
    max_size=80,
)


def _one_by_one(fold: LabelFold, pairs: list[tuple[str, Any, Any, float, float]]) -> int:
    folded = 0
    for pair in pairs:
        with contextlib.suppress(ValueError):
            folded += fold.add(*pair)
    return folded


@settings(max_examples=300, deadline=None)
@given(first=_pairs, second=_pairs)
def test_folding_pairs_in_bulk_is_folding_them_one_by_one(
    first: list[tuple[str, Any, Any, float, float]],
    second: list[tuple[str, Any, Any, float, float]],
) -> None:
    bulk, single = LabelFold(), LabelFold()

    folded = bulk.add_many(first), bulk.add_many(second)

    assert folded == (_one_by_one(single, first), _one_by_one(single, second))
    assert single.to_dict() == bulk.to_dict()
    assert single.stats.summary() == bulk.stats.summary()
    assert single == LabelFold.from_dict(json.loads(json.dumps(bulk.to_dict())))


def test_a_real_classifier_s_pairs_fold_in_bulk_as_one_by_one() -> None:
    data = load_breast_cancer()
    scores = cross_val_predict(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        data.data,
        data.target,
        cv=5,
        method="predict_proba",
    )[:, 1]
    pairs = [
        (f"r-{i}", float(p), float(y), 1.7e9 + i, 1.7e9 + i + 60.0 * (i % 7))
        for i, (p, y) in enumerate(zip(scores, data.target, strict=True))
    ]
    bulk, single = LabelFold(), LabelFold()

    assert len(pairs) == bulk.add_many(pairs) == _one_by_one(single, pairs)
    assert single.to_dict() == bulk.to_dict()
    assert bulk.stats.binary is not None and bulk.stats.binary.scored == len(pairs)
