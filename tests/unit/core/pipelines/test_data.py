"""Data and validation pipelines on real datasets (scikit-learn's wine): a test set from
another distribution is found, a random split is not; a training set that drifted is not
accepted; labels are compared as well as features; missing and corrupt values."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.datasets import load_wine

import schemas as s
from controller.core.pipelines import PipelinesPolicy, PipelineState, pipeline
from controller.core.pipelines.policy import DataSettings
from controller.core.pipelines.state import ProfileRef
from controller.dev.realdata import numeric_profile

T0 = 1_790_000_040.0
POLICY = PipelinesPolicy.default()
WINE = load_wine()


def make_profile(
    rows: np.ndarray,
    split: str,
    dataset: str,
    *,
    missing: dict[str, float] | None = None,
    invalid: dict[str, float] | None = None,
) -> s.DataProfile:
    """A profile of wine rows (indices): every feature and the class label."""
    x, y = WINE.data[rows], WINE.target[rows]
    features = []
    for j, name in enumerate(WINE.feature_names):
        profile = column_profile(name, x[:, j])
        extra = {
            "missing_rate": (missing or {}).get(name, 0.0),
            "invalid_rate": (invalid or {}).get(name, 0.0),
        }
        features.append(profile.model_copy(update=extra))
    return s.DataProfile(
        deployment_id="wine",
        dataset=dataset,
        split=split,  # type: ignore[arg-type]
        row_count=len(rows),
        features=tuple(features),
        label=numeric_profile("class", y),
        pipeline="wine-data",
    )


def column_profile(name: str, values: np.ndarray) -> s.FeatureProfile:
    """`numeric_profile`, except for whole numbers spanning more integers than the wire's
    integer rule allows (proline: 278 to 1680): those are profiled as continuous, half a unit
    added to every value of every profile alike."""
    try:
        return numeric_profile(name, values)
    except ValidationError:
        return numeric_profile(name, values + 0.5)


def split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(WINE.target))
    return order[:106], order[106:142], order[142:]


def judge(
    *profiles: s.DataProfile, state: PipelineState | None = None
) -> tuple[PipelineState, list[Any]]:
    outputs: list[Any] = []
    for i, profile in enumerate(profiles):
        result = pipeline.observe_profile(state, profile, POLICY, T0 + 3600 * i)
        state = result.state
        outputs += result.outputs
    assert state is not None
    return state, outputs


def firing(outputs: list[Any]) -> list[s.Alert]:
    return [o for o in outputs if isinstance(o, s.Alert) and o.status == "firing"]


@pytest.mark.parametrize("seed", range(10))
def test_a_random_split_of_one_dataset_raises_nothing(seed: int) -> None:
    train, validation, test = split(seed)

    _, outputs = judge(
        make_profile(train, "training", "wine-train"),
        make_profile(validation, "validation", "wine-val"),
        make_profile(test, "test", "wine-test"),
    )

    assert [] == [a.summary for a in firing(outputs)]


def test_a_test_set_from_another_distribution_is_found_with_its_label() -> None:
    classes = WINE.target
    train = np.flatnonzero(classes != 2)
    other = np.flatnonzero(classes == 2)  # a cultivar the training set has never seen

    _, outputs = judge(
        make_profile(train, "training", "wine-train"),
        make_profile(other, "test", "wine-test-2"),
    )

    [alarm] = firing(outputs)
    assert "wine-data/pipeline.data.skew/test/wine-test-2" == alarm.dedup_key
    assert "wine-data" == alarm.deployment_id
    columns = alarm.evidence["columns"]
    assert "label:distribution" in columns
    assert len(columns) >= 5  # flavanoids, proline, colour intensity, ... and the label
    assert "the label: JS" in alarm.summary


def test_a_training_set_that_drifted_is_not_accepted_and_the_next_good_one_resolves() -> None:
    first, _, _ = split(1)
    second, _, _ = split(2)
    alcohol = WINE.data[:, 0]
    strong = np.flatnonzero(alcohol > np.median(alcohol))  # only the stronger wines

    state, outputs = judge(
        make_profile(first, "training", "wine-train-1"),
        make_profile(strong, "training", "wine-train-2"),
    )

    [alarm] = firing(outputs)
    assert "wine-data/pipeline.data.drift/training/wine-train-2" == alarm.dedup_key
    assert "alcohol:distribution" in alarm.evidence["columns"]
    assert state.accepted is not None and "wine-train-1" == state.accepted.dataset
    assert state.latest_training is not None and "wine-train-2" == state.latest_training.dataset

    state, later = judge(make_profile(second, "training", "wine-train-3"), state=state)

    resolved = [o for o in later if isinstance(o, s.Alert) and o.status == "resolved"]
    assert ["wine-data/pipeline.data.drift/training/wine-train-2"] == [
        a.dedup_key for a in resolved
    ]
    assert state.accepted is not None and "wine-train-3" == state.accepted.dataset


def test_missing_and_corrupt_values_are_found_per_column() -> None:
    train, validation, _ = split(3)

    _, outputs = judge(
        make_profile(train, "training", "wine-train"),
        make_profile(
            validation,
            "validation",
            "wine-val",
            missing={"proline": 0.3},
            invalid={"magnesium": 0.25},
        ),
    )

    [alarm] = firing(outputs)
    assert "wine-data/pipeline.data.quality/validation/wine-val" == alarm.dedup_key
    assert {"proline:missing", "magnesium:invalid"} == set(alarm.evidence["columns"])
    assert "30.0 % missing" in alarm.summary and "invalid (corrupt)" in alarm.summary


def test_a_profile_with_too_few_rows_is_not_judged_and_says_so() -> None:
    train, _, _ = split(4)

    _, outputs = judge(
        make_profile(train, "training", "wine-train"), make_profile(train[:10], "test", "tiny")
    )

    assert [] == firing(outputs)
    assert "fewer than 30: not judged" in outputs[-1].reason


def test_every_judgement_is_a_decision_with_reason_and_evidence() -> None:
    train, validation, _ = split(5)

    _, outputs = judge(
        make_profile(train, "training", "wine-train"),
        make_profile(validation, "validation", "wine-val"),
    )

    decisions = [o for o in outputs if isinstance(o, s.PipelineDecision)]
    assert ["profile_judged", "profile_judged"] == [d.action for d in decisions]
    assert "accepted as the reference" in decisions[0].reason
    assert "no column differs (14 compared)" in decisions[1].reason
    assert {"dataset": "wine-val", "reference": "wine-train"}.items() <= decisions[
        1
    ].evidence.items()


def test_a_categorical_column_is_compared_by_its_shares() -> None:
    def column(shares: dict[str, float], rows: int) -> ProfileRef:
        feature = s.FeatureProfile(name="country", kind="categorical", categories=shares)
        return ProfileRef(
            dataset="d",
            split="training",
            row_count=rows,
            at=T0,
            features={"country": feature.model_dump(mode="json")},
        )

    same = pipeline.compare_profiles(
        column({"DE": 0.6, "FR": 0.4}, 1000),
        column({"DE": 0.58, "FR": 0.42}, 1000),
        DataSettings(),
        1e-4,
    )
    moved = pipeline.compare_profiles(
        column({"DE": 0.6, "FR": 0.4}, 1000),
        column({"DE": 0.2, "FR": 0.3, "IT": 0.5}, 1000),
        DataSettings(),
        1e-4,
    )

    assert [] == same
    assert ["country"] == [f.column for f in moved]
    assert "L-inf 0.500" in moved[0].reason


def test_a_profile_on_other_edges_is_spread_within_its_bins() -> None:
    column = {"bin_edges": [0.0, 10.0], "proportions": [0.1, 0.8, 0.1]}

    assert [0.1, 0.8, 0.1] == pipeline.on_edges(column, [0.0, 10.0])
    assert pytest.approx([0.1, 0.4, 0.4, 0.1]) == pipeline.on_edges(column, [0.0, 5.0, 10.0])


def test_the_state_round_trips_through_json() -> None:
    train, validation, _ = split(6)
    state, _ = judge(
        make_profile(train, "training", "wine-train"),
        make_profile(validation, "validation", "wine-val", missing={"proline": 0.3}),
    )

    assert state == PipelineState.from_dict(json.loads(json.dumps(state.to_dict())))
