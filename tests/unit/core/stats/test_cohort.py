"""CohortStats records one cohort's requests, latency, predictions, features and data quality."""

from __future__ import annotations

import json

import pytest

from controller.core.stats import (
    CohortStats,
    FeatureKind,
    FeatureProfile,
    FieldQuality,
    IncompatibleStatsError,
    Observation,
    StatsConfig,
)

from ..factories import make_cohort


def test_requests_errors_and_error_types_are_counted() -> None:
    stats = CohortStats()
    stats.observe(ok=True, latency_ms=10.0, event_time=1.0)
    stats.observe(ok=False, latency_ms=30.0, event_time=2.0, error_type="timeout")
    stats.observe(ok=False, latency_ms=5.0, event_time=3.0)

    assert (3, 2) == (stats.requests, stats.errors)
    assert {"timeout": 1, "unknown": 1} == stats.errors_by_type.counts
    assert 2 / 3 == stats.error_rate


def test_latency_is_recorded_for_every_request_unless_it_is_not_a_valid_duration() -> None:
    stats = CohortStats()
    for latency in (12.0, 15.0, -1.0, float("nan")):
        stats.observe(ok=True, latency_ms=latency, event_time=0.0)

    assert 2 == stats.latency.count
    assert 2 == stats.invalid_latency


def test_first_and_last_event_times_are_the_extremes_in_any_order() -> None:
    stats = CohortStats()
    for t in (50.0, 10.0, 70.0, 30.0):
        stats.observe(ok=True, latency_ms=1.0, event_time=t)

    assert (10.0, 70.0) == (stats.first_event_time, stats.last_event_time)
    assert 60.0 == stats.duration()


def test_a_numeric_prediction_goes_to_a_sketch_and_a_class_to_category_counts() -> None:
    scores = make_cohort(3, predictions=[0.2, 0.4, 0.9])
    labels = make_cohort(3, predictions=["spam", "ham", "spam"])

    assert 3 == scores.predictions["prediction"].numbers.count
    assert {"spam": 2, "ham": 1} == labels.predictions["prediction"].categories.counts


def test_class_probabilities_record_the_top_class_and_each_class_score() -> None:
    stats = make_cohort(2, predictions=[{"cat": 0.75, "dog": 0.25}, {"cat": 0.125, "dog": 0.875}])

    assert {"cat": 1, "dog": 1} == stats.predictions["prediction"].categories.counts
    assert 0.875 == stats.predictions["prediction.cat"].numbers.sum
    assert 1.125 == stats.predictions["prediction.dog"].numbers.sum


def test_prediction_quality_counts_missing_only_on_successful_requests() -> None:
    stats = CohortStats()
    stats.observe(ok=True, latency_ms=1.0, event_time=0.0, prediction=0.5)
    stats.observe(ok=True, latency_ms=1.0, event_time=0.0, prediction=None)
    stats.observe(ok=True, latency_ms=1.0, event_time=0.0, prediction=float("nan"))
    stats.observe(ok=True, latency_ms=1.0, event_time=0.0, prediction={"a": float("inf")})
    stats.observe(ok=False, latency_ms=1.0, event_time=0.0, error_type="oom")

    assert FieldQuality(present=1, missing=1, invalid=2) == stats.prediction_quality


def test_feature_values_are_sorted_into_numbers_categories_missing_and_invalid() -> None:
    stats = make_cohort(
        6,
        features=[
            {"age": 31, "plan": "pro", "vip": True},
            {"age": 45.5, "plan": None, "vip": False},
            {"age": float("nan"), "plan": "free"},
            {"age": [1, 2], "plan": "pro"},  # type: ignore[dict-item]  # a wrong type on purpose
            {"age": None, "plan": 3},
            {"plan": "pro"},
        ],
    )

    age, plan = stats.features["age"], stats.features["plan"]
    assert 2 == age.numbers.count
    assert {"pro": 3, "free": 1} == plan.categories.counts
    assert 1 == plan.numbers.count
    assert {"true": 1, "false": 1} == stats.features["vip"].categories.counts
    assert FieldQuality(present=2, missing=1, invalid=2) == stats.quality["age"]


def test_field_quality_counts_an_absent_feature_as_missing() -> None:
    stats = make_cohort(4, features=[{"age": 30}, {"age": 31}, {}, {"other": 1}])

    assert FieldQuality(present=2, missing=2) == stats.field_quality("age")


def test_field_quality_counts_values_outside_the_profiles_domain() -> None:
    profile = FeatureProfile(
        "age", FeatureKind.NUMERIC, (0.0, 100.0), (0.0, 1.0, 0.0), domain_min=0.0, domain_max=120.0
    )
    stats = make_cohort(5, features=[{"age": a} for a in (-5, 0, 30, 119, 500)])

    assert 2 == stats.field_quality("age", profile).out_of_domain


def test_field_quality_counts_categories_outside_the_allowed_ones() -> None:
    profile = FeatureProfile(
        "plan",
        FeatureKind.CATEGORICAL,
        categories={"free": 0.5, "pro": 0.5},
        allowed=("free", "pro"),
    )
    stats = make_cohort(4, features=[{"plan": p} for p in ("free", "pro", "gold", "gold")])

    assert 2 == stats.field_quality("plan", profile).out_of_domain


def test_the_batch_path_equals_observing_one_by_one() -> None:
    items = [
        Observation(ok=True, latency_ms=12.0, event_time=1.0, prediction=0.3, features={"x": 1}),
        Observation(ok=False, latency_ms=99.0, event_time=2.0, error_type="timeout"),
    ]
    one_by_one = CohortStats()
    for item in items:
        one_by_one.observe(**item._asdict())

    assert one_by_one == CohortStats.of(items)


def test_merging_two_partitions_equals_observing_everything() -> None:
    features = [{"x": 1.5, "c": "a"}, {"x": None, "c": "b"}, {"x": 2.5}]
    whole = make_cohort(
        30, 4, latencies=[10.0, 20.0, 35.0], predictions=[0.1, "x"], features=features
    )
    first = make_cohort(
        10, 4, latencies=[10.0, 20.0, 35.0], predictions=[0.1, "x"], features=features
    )
    rest = CohortStats()
    for i in range(10, 30):
        rest.observe(
            ok=True,
            latency_ms=[10.0, 20.0, 35.0][i % 3],
            event_time=i / 10.0,
            prediction=[0.1, "x"][i % 2],
            features=features[i % 3],
        )

    assert whole == first.merged(rest)
    assert whole == rest.merged(first)


def test_merged_does_not_change_its_inputs() -> None:
    left, right = make_cohort(5, 1), make_cohort(7, 2, start=100.0)
    before = (left.to_dict(), right.to_dict())

    left.merged(right)

    assert before == (left.to_dict(), right.to_dict())


def test_stats_with_other_settings_do_not_merge() -> None:
    with pytest.raises(IncompatibleStatsError, match="settings"):
        CohortStats().merged(CohortStats(StatsConfig(latency_alpha=0.02)))


def test_a_cohort_survives_a_json_round_trip() -> None:
    stats = make_cohort(
        20,
        3,
        latencies=[5.0, 50.0, 500.0],
        predictions=[{"a": 0.2, "b": 0.8}, "a", 0.5, None],
        features=[{"x": 1, "y": "u"}, {"x": float("nan"), "y": None}],
    )

    restored = CohortStats.from_dict(json.loads(json.dumps(stats.to_dict(), allow_nan=False)))

    assert stats == restored


def test_an_event_time_must_be_a_number() -> None:
    with pytest.raises(ValueError, match="event_time"):
        CohortStats().observe(ok=True, latency_ms=1.0, event_time=float("nan"))


def test_numeric_features_and_predictions_are_counted_exactly_while_they_are_few() -> None:
    config = StatsConfig(max_exact_values=3)
    rows = [
        Observation(
            ok=True,
            latency_ms=1.0,
            event_time=0.0,
            prediction=float(i % 2),
            features={"flag": i % 2, "amount": 10.0 + i},
        )
        for i in range(6)
    ]

    stats = CohortStats.of(rows, config)

    assert {0.0: 3, 1.0: 3} == stats.features["flag"].exact.counts
    assert {0.0: 3, 1.0: 3} == stats.predictions["prediction"].exact.counts
    assert (True, 6) == (
        stats.features["amount"].exact.overflowed,
        stats.features["amount"].exact.total,
    )


def test_stats_stored_before_exact_counts_existed_load_with_numbers_of_unknown_detail() -> None:
    stats = make_cohort(20, features=[{"flag": 0.0, "plan": "free"}, {"flag": 1.0, "plan": "pro"}])
    stored = stats.to_dict()
    for distribution in stored["features"].values():
        del distribution["exact"]

    loaded = CohortStats.from_dict(stored)

    assert (True, 20) == (
        loaded.features["flag"].exact.overflowed,
        loaded.features["flag"].exact.total,
    )
    assert not loaded.features["plan"].exact.overflowed  # it had no numbers: nothing unknown
    assert loaded.features["flag"].numbers == stats.features["flag"].numbers
