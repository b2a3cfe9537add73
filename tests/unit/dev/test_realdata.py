"""Rollouts over real data: profiles counted exactly, traffic a function of the seed, each
fault doing what it says, and a closed loop that runs to a decision."""

from __future__ import annotations

import importlib.util
import itertools
from typing import Any

import pytest

if importlib.util.find_spec("sklearn") is None:  # fail loudly: never skip real-data tests
    raise ImportError(
        "tests/unit/dev/test_realdata.py needs scikit-learn: install the dev extra, "
        "`pip install -e '.[dev]'`"
    )

import numpy as np

import schemas as s
from controller.dev import realdata as rd
from controller.dev.simulate import PLANS, UnknownScenarioError
from controller.policy_io import default_policy
from controller.replay.replay import Runner
from schemas.events import resolvable_gap

DURATION_S = 30.0


def predictions(events: list[s.Envelope[Any]]) -> list[s.Prediction]:
    out: list[s.Prediction] = []
    for event in events:
        if isinstance(event.data, s.PredictionBatch):
            out.extend(event.data.predictions)
    return out


def served(dataset: str, fault: str, seed: int = 5) -> list[s.Prediction]:
    """Both cohorts' predictions of a 30-second open-loop log at a 50 % share."""
    events = list(rd.records(dataset, fault, seed=seed, duration_s=DURATION_S, canary_percent=50.0))
    return predictions(events)


def cohort(items: list[s.Prediction], name: str) -> list[s.Prediction]:
    return [p for p in items if p.cohort == name]


def request_key(p: s.Prediction) -> tuple[Any, ...]:
    return (p.request_id, p.event_time, p.latency_ms, p.ok)


# ---- profiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", list(rd.DATASETS))
def test_each_feature_profile_counts_the_training_part_exactly(dataset: str) -> None:
    data = rd.prepare(dataset)
    profile = data.training_profile()

    assert list(data.feature_names) == [f.name for f in profile.features]
    for j, feature in enumerate(profile.features):
        column = data.x_train[:, j]
        edges = feature.bin_edges
        expected = [
            int(np.sum(column < edges[0])),
            *(int(np.sum((column >= a) & (column < b))) for a, b in itertools.pairwise(edges)),
            int(np.sum(column >= edges[-1])),
        ]
        assert expected == [round(p * len(column)) for p in feature.proportions]
        assert 1.0 == pytest.approx(sum(feature.proportions), abs=1e-12)
        assert len(column) == feature.count
        assert 0.0 == feature.missing_rate


def test_each_feature_states_its_kind_with_edges_the_decoder_accepts() -> None:
    digits = rd.prepare("digits").training_profile()
    by_name = {f.name: f for f in digits.features}
    # a pixel that is 0 in every training image: binary; the others: integers 0..16
    assert ("binary", (1.0,)) == (by_name["pixel_0_0"].kind, by_name["pixel_0_0"].bin_edges)
    pixel = by_name["pixel_3_3"]
    assert "integer" == pixel.kind
    assert all(e == round(e) for e in pixel.bin_edges)
    wine = {f.name: f.kind for f in rd.prepare("wine").training_profile().features}
    assert ("integer", "integer", "continuous") == (
        wine["magnesium"],
        wine["proline"],
        wine["alcohol"],
    )
    for profile in (digits, rd.prepare("wine").training_profile()):
        assert profile == s.TrainingProfile.model_validate_json(profile.model_dump_json())


def test_a_continuous_profile_drops_edges_the_serving_sketch_cannot_tell_apart() -> None:
    """The benign probability piles up against 1: its top deciles are 0.998, 0.999, ..."""
    data = rd.prepare("breast_cancer")
    profile = data.training_profile().prediction
    scores = data.model.predict_proba(data.x_train)[:, 1]
    deciles = {float(d) for d in np.unique(np.quantile(scores, rd.PROFILE_QUANTILES))}

    assert profile is not None and "continuous" == profile.kind
    assert len(profile.bin_edges) < len(deciles)
    assert set(profile.bin_edges) <= deciles
    assert all(resolvable_gap(a, b) for a, b in itertools.pairwise(profile.bin_edges))


def test_the_prediction_profile_is_the_models_output_on_the_training_part() -> None:
    cancer = rd.prepare("breast_cancer")
    scores = cancer.model.predict_proba(cancer.x_train)[:, 1]
    score_profile = cancer.training_profile().prediction
    assert score_profile is not None
    assert rd.numeric_profile("prediction", scores).proportions == score_profile.proportions

    wine = rd.prepare("wine")
    classes = wine.training_profile().prediction
    assert classes is not None and classes.kind == "categorical"
    shares = np.bincount(wine.model.predict(wine.x_train), minlength=3) / len(wine.x_train)
    assert list(shares) == [classes.categories[c] for c in wine.classes]


def test_the_deployment_request_carries_the_training_profile() -> None:
    deployment = rd.make_deployment("diabetes", "identical", seed=3)

    assert rd.prepare("diabetes").training_profile() == deployment.training_profile
    assert "real-diabetes-identical-3" == deployment.deployment_id


# ---- traffic -------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_records() -> None:
    def log(seed: int) -> list[bytes]:
        return [e.model_dump_json().encode() for e in rd.records("wine", "identical", seed=seed)]

    assert log(11) == log(11)
    assert log(11) != log(12)


def test_requests_carry_real_rows_and_the_models_real_outputs() -> None:
    data = rd.prepare("breast_cancer")
    items = [p for p in served("breast_cancer", "identical") if p.ok]
    rows = {tuple(r) for r in data.x_serve.tolist()}

    for p in items[:50]:
        assert p.features is not None
        row = [p.features[name] for name in data.feature_names]
        assert tuple(row) in rows
        expected = data.model.predict_proba(np.asarray([row]))[0, 1]
        assert expected == pytest.approx(p.prediction)


def test_integer_features_are_served_as_integers() -> None:
    p = served("digits", "identical")[0]

    assert p.features is not None
    assert all(type(v) is int for v in p.features.values())


def test_multiclass_predictions_are_class_probabilities() -> None:
    p = next(p for p in served("wine", "identical") if p.ok)

    assert isinstance(p.prediction, dict)
    assert set(rd.prepare("wine").classes) == set(p.prediction)
    assert 1.0 == pytest.approx(sum(p.prediction.values()))


# ---- faults --------------------------------------------------------------------------------


def test_identical_canaries_serve_what_the_baseline_serves() -> None:
    both = rd.cohorts("diabetes", "identical")

    assert both["baseline"] == both["canary"]


def test_a_unit_bug_multiplies_one_feature_by_1000_on_the_canary_only() -> None:
    data = rd.prepare("breast_cancer")
    feature = data.spec.fault_feature
    both = rd.cohorts("breast_cancer", "unit_bug")
    healthy = rd.cohorts("breast_cancer", "identical")["baseline"]

    assert healthy == both["baseline"]
    for good, bad in zip(healthy.features, both["canary"].features, strict=True):
        value = good[feature]
        assert isinstance(value, float)
        assert value * 1000 == pytest.approx(bad[feature])
        assert {k: v for k, v in good.items() if k != feature} == {
            k: v for k, v in bad.items() if k != feature
        }
    assert healthy.outputs != both["canary"].outputs  # the model saw the bad value


def test_a_standardization_bug_serves_standardized_features_to_the_canary() -> None:
    data = rd.prepare("wine")
    canary = rd.cohorts("wine", "standardization_bug")["canary"]
    values = np.asarray([[row[n] for n in data.feature_names] for row in canary.features])

    assert np.allclose(data.model[0].transform(data.x_serve), values)


def test_a_skipped_scaler_keeps_the_features_and_changes_the_outputs() -> None:
    both = rd.cohorts("diabetes", "scaler_skipped")

    assert both["baseline"].features == both["canary"].features
    assert both["baseline"].outputs != both["canary"].outputs


def test_missing_values_leave_30_percent_of_one_feature_empty_on_the_canary() -> None:
    feature = rd.prepare("digits").spec.fault_feature
    items = served("digits", "missing_values")

    def missing(name: str) -> float:
        values = [p.features[feature] for p in cohort(items, name) if p.features is not None]
        return sum(v is None for v in values) / len(values)

    assert 0.0 == missing("baseline")
    assert 0.25 < missing("canary") < 0.35


def test_a_degraded_model_is_worse_with_outputs_of_the_same_form() -> None:
    data = rd.prepare("breast_cancer")
    both = rd.cohorts("breast_cancer", "degraded_model")

    assert data.score(rd.degraded_model("breast_cancer")) < data.score(data.model) - 0.1
    assert both["baseline"].features == both["canary"].features
    assert all(0.0 <= float(o) <= 1.0 for o in both["canary"].outputs)  # type: ignore[arg-type]


def test_unknown_datasets_and_faults_name_the_known_ones() -> None:
    with pytest.raises(UnknownScenarioError, match="breast_cancer, wine"):
        rd.prepare("iris")
    with pytest.raises(UnknownScenarioError, match="unit_bug"):
        rd.cohorts("wine", "typo")


# ---- the closed loop -----------------------------------------------------------------------


def test_an_identical_canary_runs_closed_loop_to_a_decision() -> None:
    """No assertion on the verdict: only that the loop drives the controller to an end."""
    loop = rd.RealDataLoop(
        "breast_cancer", "identical", Runner(default_policy()), seed=2, rollout_plan=PLANS["quick"]
    )
    log = list(loop)
    result = loop.result

    assert isinstance(log[0].data, s.DeploymentRequested)
    assert result.decisions
    assert result.canary_started_ms is not None
    assert any(isinstance(e.data, s.TrafficApplied) for e in log)
    assert result.terminal_action in ("promote", "rollback", None)
    if result.terminal_action is not None:
        assert result.time_to_decision_s is not None and result.time_to_decision_s > 0
    assert [e.time for e in log] == sorted(e.time for e in log)


def test_the_closed_loop_is_a_function_of_the_seed() -> None:
    def run() -> tuple[Any, ...]:
        r = rd.rollout("diabetes", "unit_bug", Runner(default_policy()), seed=4)
        return (r.terminal_action, r.terminal_ms, r.failed_rules, r.records)

    assert run() == run()
