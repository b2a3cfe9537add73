"""The scenario generators, open loop: rates, shapes, fault onsets, determinism."""

from __future__ import annotations

import functools
import itertools
import statistics
from collections.abc import Iterable
from typing import Any

import pytest

import schemas as s
from controller.core.stats import QuantileSketch, common_bins, js_divergence
from controller.dev.simulate import (
    PLANS,
    SCENARIOS,
    FleetConfig,
    ServingFleet,
    UnknownScenarioError,
    generate,
    make_deployment,
    ms_of,
    scenario,
    training_profile,
)

DURATION_S = 90.0
ONSET_S = 30.0


def predictions(events: Iterable[s.Envelope[Any]]) -> list[s.Prediction]:
    out: list[s.Prediction] = []
    for event in events:
        data = event.data
        if isinstance(data, s.PredictionBatch):
            out.extend(data.predictions)
        elif isinstance(data, s.PredictionServed):
            out.append(data)
    return out


@functools.cache
def _run(name: str, seed: int, rate: float) -> tuple[list[s.Envelope[Any]], float, float]:
    config = FleetConfig(rate=rate, fault_onset_s=ONSET_S)
    events = list(generate(name, seed=seed, duration_s=DURATION_S, config=config))
    start = events[0].time.timestamp()
    return events, start, start + ONSET_S


def run(name: str, seed: int = 7, rate: float = 20.0) -> tuple[list[s.Envelope[Any]], float, float]:
    """A three-minute open-loop log (shared by the tests that read it, never changed by them);
    returns the events, the start and the fault's onset (epoch seconds)."""
    return _run(name, seed, rate)


def cohort(
    items: list[s.Prediction], name: str, *, before: float | None = None, after: float | None = None
) -> list[s.Prediction]:
    return [
        p
        for p in items
        if p.cohort == name
        and (before is None or p.event_time.timestamp() < before)
        and (after is None or p.event_time.timestamp() >= after)
    ]


def p99(items: list[s.Prediction]) -> float:
    return statistics.quantiles([p.latency_ms for p in items], n=100)[98]


def test_the_log_starts_with_the_deployment_request_and_is_in_time_order() -> None:
    events, _, _ = run("healthy")

    assert isinstance(events[0].data, s.DeploymentRequested)
    times = [e.time for e in events]
    assert sorted(times) == times


def test_the_canary_gets_the_requested_rate_and_the_baseline_four_times_as_much() -> None:
    events, _, _ = run("healthy", rate=20.0)
    items = predictions(events)

    canary_rate = len(cohort(items, "canary")) / DURATION_S
    baseline_rate = len(cohort(items, "baseline")) / DURATION_S
    assert 20.0 == pytest.approx(canary_rate, rel=0.15)
    assert 4.0 == pytest.approx(baseline_rate / canary_rate, rel=0.1)


def test_the_rate_wanders_slowly_around_the_configured_rate() -> None:
    fleet = ServingFleet(make_deployment("healthy", 3), scenario("healthy"), seed=3)
    begin = fleet.begin_ms

    rates = [fleet.rate_at(begin + 1000 * i) for i in range(0, 3600)]

    assert 100.0 == pytest.approx(statistics.fmean(rates), rel=0.3)
    assert max(rates) > min(rates)
    steps = [abs(b - a) / a for a, b in itertools.pairwise(rates)]
    assert max(steps) < 0.05  # slowly: no jump above 5 % from one second to the next


def test_canary_predictions_are_single_records_and_baseline_ones_come_in_batches() -> None:
    events, _, _ = run("healthy")

    singles = [e.data for e in events if isinstance(e.data, s.PredictionServed)]
    batches = [e.data for e in events if isinstance(e.data, s.PredictionBatch)]
    assert singles and batches
    assert {p.cohort for p in singles} == {s.Cohort.CANARY}
    assert {p.cohort for b in batches for p in b.predictions} == {s.Cohort.BASELINE}


def test_healthy_serving_looks_like_production() -> None:
    events, _, _ = run("healthy")
    base = cohort(predictions(events), "baseline")

    error_rate = sum(not p.ok for p in base) / len(base)
    assert 0.003 < error_rate < 0.012
    assert {p.error_type for p in base if not p.ok} == {"timeout", "internal", "bad_request"}
    latencies = sorted(p.latency_ms for p in base if p.ok)
    median = statistics.median(latencies)
    assert 35.0 < median < 55.0
    assert p99([p for p in base if p.ok]) > 3 * median  # a long tail
    scores = [p.prediction for p in base if p.ok and isinstance(p.prediction, float)]
    assert len(scores) == sum(p.ok for p in base)
    assert all(0.0 <= x <= 1.0 for x in scores)
    assert 0.2 == pytest.approx(statistics.fmean(scores), abs=0.02)  # Beta(2, 8)


def served(name: str, cohort: str, *, after_onset: bool, n: int = 10_000) -> list[s.Prediction]:
    """n requests served by one cohort of a fleet, all before or all after the fault's onset."""
    fleet = ServingFleet(make_deployment(name, 1), scenario(name), seed=1)
    fleet.canary_started_ms = fleet.begin_ms
    assert fleet.onset_ms is not None
    when = fleet.onset_ms + 1000 if after_onset else fleet.onset_ms - 1000
    items = [fleet.serve(cohort, when) for _ in range(n)]  # type: ignore[arg-type]
    return [p for p in items if p is not None]


def test_latency_p99_x2_doubles_the_canary_p99_after_the_onset() -> None:
    before = p99(served("latency_p99_x2", "canary", after_onset=False))
    after = p99(served("latency_p99_x2", "canary", after_onset=True))
    baseline = p99(served("latency_p99_x2", "baseline", after_onset=True))

    assert 2.0 == pytest.approx(after / before, rel=0.1)
    assert 2.0 == pytest.approx(after / baseline, rel=0.1)


def test_the_latency_regression_shows_in_the_log_from_the_onset() -> None:
    events, _, onset = run("latency_p99_x2", rate=50.0)
    items = predictions(events)

    before = p99(cohort(items, "canary", before=onset)) / p99(
        cohort(items, "baseline", before=onset)
    )
    after = p99(cohort(items, "canary", after=onset)) / p99(cohort(items, "baseline", after=onset))

    assert 1.0 == pytest.approx(before, rel=0.3)
    assert 2.0 == pytest.approx(after, rel=0.3)


def test_latency_p99_x1_5_raises_the_canary_p99_by_half() -> None:
    events, _, onset = run("latency_p99_x1_5")
    items = predictions(events)

    ratio = p99(cohort(items, "canary", after=onset)) / p99(cohort(items, "baseline", after=onset))

    assert 1.5 == pytest.approx(ratio, rel=0.25)


def test_an_error_burst_multiplies_the_canary_error_rate_by_five() -> None:
    events, _, onset = run("error_burst_x5")
    items = predictions(events)

    canary = cohort(items, "canary", after=onset)
    rate = sum(not p.ok for p in canary) / len(canary)

    assert 0.035 == pytest.approx(rate, abs=0.015)


def test_a_total_outage_leaves_no_canary_event_after_the_onset() -> None:
    events, _, onset = run("total_outage")
    items = predictions(events)

    assert cohort(items, "canary", before=onset)
    assert [] == cohort(items, "canary", after=onset)
    assert cohort(items, "baseline", after=onset)


def test_a_partial_outage_fails_a_quarter_of_canary_requests_with_timeouts() -> None:
    events, _, onset = run("partial_outage")
    canary = cohort(predictions(events), "canary", after=onset)

    failed = [p for p in canary if not p.ok]
    assert 0.25 == pytest.approx(len(failed) / len(canary), abs=0.05)
    timeouts = [p for p in failed if p.error_type == "timeout"]
    assert min(p.latency_ms for p in timeouts) >= 1000.0


def _score_sketch(items: list[s.Prediction]) -> QuantileSketch:
    sketch = QuantileSketch()
    for p in items:
        if p.ok:
            assert isinstance(p.prediction, float)
            sketch.add(p.prediction)
    return sketch


def test_prediction_skew_moves_the_canary_scores_by_at_least_js_0_2() -> None:
    events, _, onset = run("prediction_skew")
    items = predictions(events)

    before = common_bins(
        _score_sketch(cohort(items, "canary", before=onset)),
        _score_sketch(cohort(items, "baseline")),
    )
    after = common_bins(
        _score_sketch(cohort(items, "canary", after=onset)),
        _score_sketch(cohort(items, "baseline", after=onset)),
    )

    assert js_divergence(before.a, before.b) < 0.05
    assert js_divergence(after.a, after.b) >= 0.2


def test_feature_skew_moves_canary_amounts_away_from_the_training_profile() -> None:
    events, _, onset = run("feature_skew")
    items = predictions(events)

    def median_amount(xs: list[s.Prediction]) -> float:
        return statistics.median(
            float(p.features["amount"])
            for p in xs
            if p.features and p.features["amount"] is not None
        )

    assert 40.0 == pytest.approx(median_amount(cohort(items, "baseline")), rel=0.1)
    assert 100.0 == pytest.approx(median_amount(cohort(items, "canary", after=onset)), rel=0.1)


def test_missing_values_go_missing_on_the_canary_only() -> None:
    events, _, onset = run("missing_values")
    items = predictions(events)

    def missing(xs: list[s.Prediction], name: str) -> float:
        return sum(1 for p in xs if p.features and p.features[name] is None) / len(xs)

    canary = cohort(items, "canary", after=onset)
    assert 0.3 == pytest.approx(missing(canary, "amount"), abs=0.05)
    assert 0.4 == pytest.approx(missing(canary, "age"), abs=0.05)
    assert 0.0 == missing(cohort(items, "baseline"), "amount")


def test_slow_drift_grows_over_ten_minutes() -> None:
    fleet = ServingFleet(make_deployment("slow_drift", 1), scenario("slow_drift"), seed=1)
    fleet.canary_started_ms = fleet.begin_ms
    onset = fleet.onset_ms
    assert onset is not None

    def score_a(seconds_after_onset: float) -> float:
        return fleet.behaviour("canary", onset + seconds_after_onset * 1000).score_a

    assert [2.0, 2.0, 2.15, 2.75, 3.5, 3.5] == [
        pytest.approx(score_a(x)) for x in (-1, 0, 60, 300, 600, 900)
    ]
    assert 2.0 == fleet.behaviour("baseline", onset + 900_000).score_a


def test_the_same_seed_gives_the_same_log_and_another_seed_another() -> None:
    first = [e.to_json() for e in generate("error_burst_x5", seed=11, duration_s=20)]
    again = [e.to_json() for e in generate("error_burst_x5", seed=11, duration_s=20)]
    other = [e.to_json() for e in generate("error_burst_x5", seed=12, duration_s=20)]

    assert first == again
    assert first != other


def test_every_record_is_a_valid_cloudevent_on_the_wire() -> None:
    for event in generate("partial_outage", seed=5, duration_s=70):
        decoded = s.decode(event.to_json())
        assert not isinstance(decoded, s.Rejection), decoded
        assert event == decoded


@pytest.mark.parametrize("kind", ["class", "probabilities"])
def test_predictions_may_be_classes_or_class_probabilities(kind: str) -> None:
    events = list(
        generate("healthy", seed=2, duration_s=20, config=FleetConfig(prediction_kind=kind))  # type: ignore[arg-type]
    )
    values = [p.prediction for p in predictions(events) if p.ok]

    if kind == "class":
        assert set(values) <= {"fraud", "legit"}
    else:
        assert all(isinstance(v, dict) and set(v) == {"fraud", "legit"} for v in values)
    profile = events[0].data.training_profile
    assert "categorical" == profile.prediction.kind  # probabilities are judged by arg-max class


def test_the_training_profile_matches_healthy_serving() -> None:
    profile = {f.name: f for f in training_profile().features}
    amounts = [
        float(p.features["amount"])  # type: ignore[arg-type]  # healthy amounts are numbers
        for p in predictions(generate("healthy", seed=9, duration_s=60))
        if p.features
    ]
    edges = profile["amount"].bin_edges

    below_first = sum(1 for a in amounts if a < edges[0]) / len(amounts)
    assert profile["amount"].proportions[0] == pytest.approx(below_first, abs=0.02)


def test_every_scenario_and_plan_is_listed_and_an_unknown_one_is_named() -> None:
    assert {
        "healthy",
        "latency_p99_x1_5",
        "latency_p99_x2",
        "error_burst_x5",
        "total_outage",
        "partial_outage",
        "prediction_skew",
        "feature_skew",
        "missing_values",
        "slow_drift",
    } == set(SCENARIOS)
    assert {"standard", "short", "quick", "gated"} <= set(PLANS)
    with pytest.raises(UnknownScenarioError, match="known scenarios: healthy"):
        scenario("meteor_strike")


def test_ms_of_inverts_the_simulation_clock() -> None:
    events = list(generate("healthy", seed=4, duration_s=2))
    assert ms_of(events[1].time) > ms_of(events[0].time)
