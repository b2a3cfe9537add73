"""The scenario generators, open loop: rates, shapes, fault onsets, determinism."""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import schemas as s
from controller.commands.replay_cmd import simulate_cmd
from controller.core.stats import QuantileSketch, common_bins, js_divergence
from controller.dev.simulate import (
    FAMILIES,
    PLANS,
    SCENARIOS,
    ErrorRuns,
    FleetConfig,
    ServingFleet,
    SharedDependency,
    UnknownScenarioError,
    generate,
    make_deployment,
    ms_of,
    scenario,
    traffic_family,
    training_profile,
    with_first_step,
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


def test_tail_only_x3_slows_the_slow_requests_three_times_and_keeps_the_median() -> None:
    canary = [p.latency_ms for p in served("tail_only_x3", "canary", after_onset=True)]
    baseline = [p.latency_ms for p in served("tail_only_x3", "baseline", after_onset=True)]

    assert 1.0 == pytest.approx(statistics.median(canary) / statistics.median(baseline), rel=0.03)
    assert 3.0 == pytest.approx(
        statistics.quantiles(canary, n=1000)[990] / statistics.quantiles(baseline, n=1000)[990],
        rel=0.15,
    )


def test_timeouts_x10_times_out_ten_times_as_many_canary_requests() -> None:
    def timeouts(cohort: str) -> float:
        items = served("timeouts_x10", cohort, after_onset=True, n=40_000)
        return sum(p.error_type == "timeout" for p in items) / len(items)

    assert 0.0021 == pytest.approx(timeouts("baseline"), rel=0.25)
    assert 0.021 == pytest.approx(timeouts("canary"), rel=0.1)


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
        "tail_only_x3",
        "timeouts_x10",
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


# ---------------------------------------------------------------------------------------------
# Traffic families
# ---------------------------------------------------------------------------------------------

#: sha256 of the log bytes of `generate("error_burst_x5", seed=7, duration_s=120)` with the
#: fault 30 s in, computed before traffic families existed: the independent family must keep it.
#: (Since feature profiles carry `invalid_rate`, the request's training profile writes
#: `"invalid_rate":0.0` after each `missing_rate`; without those bytes the log is the one
#: hashed before families, 028f9ef5...)
ERROR_BURST_SEED_7_SHA256 = "04c031f49d1e4ee588e360a010daa476c3d6d3d84d8750c4853f0f959d1ad478"


def log_digest(config: FleetConfig) -> str:
    digest = hashlib.sha256()
    for event in generate("error_burst_x5", seed=7, duration_s=120, config=config):
        digest.update(event.to_json() + b"\n")
    return digest.hexdigest()


def test_the_independent_family_gives_the_log_of_the_simulator_before_families() -> None:
    assert ERROR_BURST_SEED_7_SHA256 == log_digest(FleetConfig(fault_onset_s=30))
    assert ERROR_BURST_SEED_7_SHA256 == log_digest(
        FleetConfig(fault_onset_s=30, family=traffic_family("independent"))
    )


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_gives_the_same_log_for_the_same_seed(name: str) -> None:
    config = FleetConfig(family=traffic_family(name), fault_onset_s=5)

    first = [e.to_json() for e in generate("error_burst_x5", seed=11, duration_s=20, config=config)]
    again = [e.to_json() for e in generate("error_burst_x5", seed=11, duration_s=20, config=config)]

    assert first == again


@pytest.mark.parametrize("family_name", list(FAMILIES))
@pytest.mark.parametrize("scenario_name", list(SCENARIOS))
def test_every_scenario_runs_on_every_family(scenario_name: str, family_name: str) -> None:
    config = FleetConfig(family=traffic_family(family_name), fault_onset_s=5)

    events = list(generate(scenario_name, seed=3, duration_s=15, config=config))

    assert isinstance(events[0].data, s.DeploymentRequested)
    assert cohort(predictions(events), "baseline")
    assert sorted(e.time for e in events) == [e.time for e in events]


def test_an_unknown_family_is_named_with_the_known_ones() -> None:
    with pytest.raises(UnknownScenarioError, match="known: independent, errors_in_runs"):
        traffic_family("cosmic_rays")


def error_runs(failures: list[bool]) -> list[int]:
    """The lengths of the runs of consecutive failures."""
    return [len(list(run)) for failed, run in itertools.groupby(failures) if failed]


@pytest.mark.parametrize("run_length", [5.0, 20.0])
def test_a_shared_dependency_keeps_the_error_rate_and_fails_in_runs_of_the_set_length(
    run_length: float,
) -> None:
    dependency = SharedDependency(ErrorRuns(run_length=run_length), random.Random(1))

    failures = [dependency.fails(0.007) for _ in range(2_000_000)]

    assert 0.007 == pytest.approx(sum(failures) / len(failures), rel=0.15)
    assert run_length == pytest.approx(statistics.fmean(error_runs(failures)), rel=0.15)


def test_a_canary_fault_still_multiplies_the_error_rate_of_a_shared_dependency() -> None:
    dependency = SharedDependency(ErrorRuns(run_length=20.0), random.Random(2))

    failures = [dependency.fails(0.035) for _ in range(500_000)]

    assert 0.035 == pytest.approx(sum(failures) / len(failures), rel=0.1)


def test_errors_in_runs_land_on_whichever_cohort_the_router_sends_requests_to() -> None:
    config = FleetConfig(family=traffic_family("errors_in_runs").with_run_length(20.0))
    fleet = ServingFleet(make_deployment("healthy", 1), scenario("healthy"), seed=1, config=config)
    router = random.Random(5)

    served = []
    for i in range(150_000):
        p = fleet.serve("canary" if router.random() < 0.2 else "baseline", fleet.begin_ms + i)
        assert p is not None
        served.append(p)

    assert 0.007 == pytest.approx(sum(not p.ok for p in served) / len(served), rel=0.35)
    runs = [
        list(run) for failed, run in itertools.groupby(served, key=lambda p: not p.ok) if failed
    ]
    assert statistics.fmean(len(run) for run in runs) > 10.0
    long_runs = [run for run in runs if len(run) >= 10]
    assert long_runs
    assert all({p.cohort for p in run} == {s.Cohort.BASELINE, s.Cohort.CANARY} for run in long_runs)


def per_second_counts(events: Iterable[s.Envelope[Any]]) -> list[int]:
    counts = Counter(int(p.event_time.timestamp()) for p in predictions(events))
    first, last = min(counts), max(counts)
    return [counts[t] for t in range(first + 1, last)]  # whole seconds only


def dispersion(counts: list[int]) -> float:
    """The index of dispersion: variance over mean (1 for a Poisson process)."""
    return statistics.pvariance(counts) / statistics.fmean(counts)


def test_bursts_keep_the_mean_rate_and_overdisperse_arrivals() -> None:
    def fleet(name: str) -> ServingFleet:
        config = FleetConfig(family=traffic_family(name))
        return ServingFleet(
            make_deployment("healthy", 4), scenario("healthy"), seed=4, config=config
        )

    bursty, steady = fleet("bursts"), fleet("independent")
    slots = range(0, 3 * 3_600_000, 1000)
    bursty_rates = [bursty.rate_at(bursty.begin_ms + t) for t in slots]
    steady_rates = [steady.rate_at(steady.begin_ms + t) for t in slots]
    assert 1.0 == pytest.approx(
        statistics.fmean(bursty_rates) / statistics.fmean(steady_rates), rel=0.05
    )

    def counts(name: str) -> list[int]:
        config = FleetConfig(family=traffic_family(name))
        return per_second_counts(generate("healthy", seed=4, duration_s=120, config=config))

    assert dispersion(counts("bursts")) > 1.5
    assert dispersion(counts("independent")) < 1.5


def test_heavy_tails_time_out_at_exactly_the_client_timeout() -> None:
    def served_by(name: str) -> list[s.Prediction]:
        config = FleetConfig(family=traffic_family(name), timeout_ms=800.0)
        fleet = ServingFleet(
            make_deployment("healthy", 1), scenario("healthy"), seed=1, config=config
        )
        return [p for p in (fleet.serve("baseline", fleet.begin_ms) for _ in range(20_000)) if p]

    heavy = served_by("heavy_tails")

    timeouts = [p for p in heavy if p.error_type == "timeout"]
    assert len(timeouts) > 0.003 * len(heavy)  # the slow tail times out, not only the errors
    assert {(800.0, False, None)} == {(p.latency_ms, p.ok, p.prediction) for p in timeouts}
    assert max(p.latency_ms for p in heavy if p.ok) <= 800.0
    light = served_by("independent")
    assert p99([p for p in heavy if p.ok]) > 1.5 * p99([p for p in light if p.ok])


def test_a_shared_outage_fails_and_slows_both_cohorts_alike() -> None:
    config = FleetConfig(family=traffic_family("shared_outage"), fault_onset_s=30)
    events = list(generate("healthy", seed=6, duration_s=600, config=config))
    fleet = ServingFleet(make_deployment("healthy", 6), scenario("healthy"), seed=6, config=config)
    windows = fleet.outage_windows(fleet.begin_ms + 600_000)
    assert windows

    def inside(p: s.Prediction) -> bool:
        return any(start <= ms_of(p.event_time) < end for start, end in windows)

    items = predictions(events)
    for name in ("baseline", "canary"):
        hit = [p for p in cohort(items, name) if inside(p)]
        spared = [p for p in cohort(items, name) if not inside(p)]
        assert 0.8 == pytest.approx(sum(not p.ok for p in hit) / len(hit), abs=0.1)
        assert sum(not p.ok for p in spared) / len(spared) < 0.02
        assert statistics.median(p.latency_ms for p in hit if p.ok) > 3 * statistics.median(
            p.latency_ms for p in spared if p.ok
        )


def test_the_diurnal_family_moves_the_rate_a_lot_within_ten_minutes_around_the_mean() -> None:
    config = FleetConfig(family=traffic_family("diurnal"))
    for seed in (1, 2, 3):
        fleet = ServingFleet(
            make_deployment("healthy", seed), scenario("healthy"), seed=seed, config=config
        )
        ten_minutes = [fleet.rate_at(fleet.begin_ms + 1000 * i) for i in range(600)]
        assert max(ten_minutes) > 1.5 * min(ten_minutes)
        cycle = [fleet.rate_at(fleet.begin_ms + 1000 * i) for i in range(3 * 1200)]
        assert 100.0 == pytest.approx(statistics.fmean(cycle), rel=0.15)


def test_a_plan_with_another_first_step_keeps_the_later_steps_above_it() -> None:
    short = PLANS["short"]

    assert [5.0, 50.0, 100.0] == [x.canary_percent for x in with_first_step(short, 5).steps]
    assert [50.0, 100.0] == [x.canary_percent for x in with_first_step(short, 50).steps]
    assert short.steps[0].min_bake_s == with_first_step(short, 50).steps[0].min_bake_s


def test_rollout_simulate_takes_a_family_and_a_run_length_only_for_error_runs(
    tmp_path: Path,
) -> None:
    def simulate(*options: str) -> Result:
        out = tmp_path / "log.jsonl"
        args = ["--scenario", "healthy", "--seed", "3", "--open-loop", "20", "--out", str(out)]
        return CliRunner().invoke(simulate_cmd, [*args, *options])

    runs = simulate("--family", "errors_in_runs", "--run-length", "5")
    assert 0 == runs.exit_code, runs.output
    assert 0 != simulate("--family", "bursts", "--run-length", "5").exit_code
    assert 0 != simulate("--family", "gremlins").exit_code
