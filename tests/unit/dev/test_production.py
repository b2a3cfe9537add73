"""Production traffic for the monitor: the day, the scenarios, determinism, the log."""

from __future__ import annotations

import dataclasses
import functools
import statistics
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import schemas as s
from controller.commands.replay_cmd import simulate_cmd
from controller.core.monitor.cusum import js_bits
from controller.core.stats.cohort import CohortStats, Observation
from controller.dev.production import (
    EPOCH_S,
    HOUR_S,
    PRODUCTION_FAMILIES,
    PRODUCTION_SCENARIOS,
    RELEASE_VERSION,
    VERSION,
    DailyCycle,
    ProductionConfig,
    ProductionTraffic,
    drift_js,
    production_family,
    production_scenario,
)
from controller.dev.simulate import UnknownScenarioError


def around(name: str, before_s: float, after_s: float, seed: int = 1, **config: Any) -> Any:
    """The traffic of a scenario from `before_s` before its change to `after_s` after it."""
    sc = PRODUCTION_SCENARIOS[name].around_change(before_s, after_s)
    return ProductionTraffic(sc, seed=seed, config=ProductionConfig(**config))


@functools.cache
def split(
    name: str, before_s: float, after_s: float
) -> tuple[list[Observation], list[Observation]]:
    """The requests before and after a scenario's change (seed 1)."""
    traffic = around(name, before_s, after_s)
    before: list[Observation] = []
    after: list[Observation] = []
    for t, rows in traffic.rows():
        (after if t > traffic.change_at else before).extend(rows)
    return before, after


def error_share(rows: list[Observation]) -> float:
    return sum(not r.ok for r in rows) / len(rows)


def quantile_bins(reference: list[float], values: list[float], bins: int = 10) -> list[int]:
    ordered = sorted(reference)
    edges = [ordered[len(ordered) * k // bins] for k in range(1, bins)]
    counts = [0] * bins
    for v in values:
        counts[sum(v > e for e in edges)] += 1
    return counts


# ---- determinism ----------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic() -> None:
    def second_by_second(seed: int) -> list[tuple[int, list[Observation]]]:
        return list(around("errors_x3", 30, 30, seed=seed, family=FAMILY_BURSTS).rows())

    assert second_by_second(4) == second_by_second(4)
    assert second_by_second(4) != second_by_second(5)


FAMILY_BURSTS = production_family("bursts")


def test_before_the_change_every_scenario_of_a_seed_serves_the_same_requests() -> None:
    errors = [rows for t, rows in around("errors_x3", 60, 60, seed=2).rows()]
    slower = [rows for t, rows in around("latency_x1.5", 60, 60, seed=2).rows()]

    assert errors[:60] == slower[:60]
    assert errors[60:] != slower[60:]


def test_the_fast_path_folds_exactly_what_the_log_carries() -> None:
    sc = PRODUCTION_SCENARIOS["missing_10pct"].around_change(20, 20)
    fast = list(ProductionTraffic(sc, seed=3).seconds())
    records = list(ProductionTraffic(sc, seed=3).envelopes())
    batches = {
        round(r.time.timestamp()): r.data for r in records if isinstance(r.data, s.PredictionBatch)
    }

    for t, stats in fast:
        folded = CohortStats(stats.config)
        folded.observe_many(list(batches[t].predictions))
        assert stats == folded
    assert len(fast) == len(batches)  # every second had requests at 11:00


# ---- the day --------------------------------------------------------------------------------


def test_the_daily_cycle_is_lowest_at_night_and_highest_in_the_afternoon() -> None:
    cycle = DailyCycle(peak=20.0, night=3.0)
    rates = {hour: cycle.rate(EPOCH_S + hour * HOUR_S) for hour in range(24)}

    assert 3 == min(rates, key=rates.__getitem__) == cycle.minimum_hour
    assert 15 == max(rates, key=rates.__getitem__)
    assert pytest.approx(3.0) == rates[3]
    assert pytest.approx(20.0) == rates[15]


def test_the_traffic_follows_the_day_from_a_few_requests_a_second_at_night() -> None:
    def per_second(hour: float) -> float:
        sc = dataclasses.replace(
            PRODUCTION_SCENARIOS["diurnal_week"], start_h=hour, end_h=hour + 600 / HOUR_S
        )
        counts = [len(rows) for _, rows in ProductionTraffic(sc, seed=1).rows()]
        return statistics.fmean(counts)

    night, afternoon = per_second(3.0), per_second(15.0)

    assert 2.0 < night < 4.0
    assert 15.0 < afternoon < 25.0


def test_a_day_of_independent_traffic_fails_about_one_percent_of_requests() -> None:
    before, _ = split("errors_x3", 1800, 1)

    assert 0.007 < error_share(before) < 0.013


# ---- the scenarios --------------------------------------------------------------------------


def test_errors_x3_triples_the_error_share_after_the_change() -> None:
    before, after = split("errors_x3", 1800, 1800)

    assert 2.5 < error_share(after) / error_share(before) < 3.5


def test_latency_x1_5_makes_every_request_half_as_slow_again() -> None:
    before, after = split("latency_x1.5", 600, 600)

    ratio = statistics.median(r.latency_ms for r in after) / statistics.median(
        r.latency_ms for r in before
    )
    assert 1.4 < ratio < 1.6


def test_missing_10pct_leaves_a_tenth_of_the_amounts_out_and_none_before() -> None:
    before, after = split("missing_10pct", 600, 600)

    def missing(rows: list[Observation]) -> float:
        return sum((r.features or {})["amount"] is None for r in rows) / len(rows)

    assert 0.0 == missing(before)
    assert 0.08 < missing(after) < 0.12


def test_drift_js_0_1_moves_the_scores_about_a_tenth_of_a_bit_from_the_reference() -> None:
    continuous, on_ten_bins = drift_js()
    before, after = split("drift_js_0.1", 1200, 1200)
    reference = [float(r.prediction) for r in before if r.ok]  # type: ignore[arg-type]
    drifted = [float(r.prediction) for r in after if r.ok]  # type: ignore[arg-type]
    unchanged = reference[: len(reference) // 2]

    measured = js_bits(quantile_bins(reference, drifted), quantile_bins(reference, reference))
    noise = js_bits(quantile_bins(reference, unchanged), quantile_bins(reference, reference))

    assert 0.08 < continuous < 0.12
    assert 0.08 < on_ten_bins < 0.12
    assert 0.08 < measured < 0.12
    assert noise < 0.005


def test_the_night_outage_serves_nothing_for_ten_minutes_at_the_daily_minimum() -> None:
    traffic = around("night_outage", 300, 900)
    counts = {t: len(rows) for t, rows in traffic.rows()}
    change = traffic.change_at

    assert 3 * HOUR_S == (change - EPOCH_S) % 86400  # 03:00, the minimum of the day
    assert 0 == sum(counts[t] for t in range(change + 1, change + 601))
    assert sum(counts[t] for t in range(change - 299, change + 1)) > 600  # 3 req/s before
    assert sum(counts[t] for t in range(change + 601, change + 901)) > 600  # and after


def test_the_pipeline_break_sticks_the_amount_at_zero() -> None:
    before, after = split("pipeline_break", 60, 60)

    assert {0.0} == {(r.features or {})["amount"] for r in after}
    assert len({(r.features or {})["amount"] for r in before}) > 100


def test_an_aa_release_serves_the_new_version_from_the_change_and_configures_it() -> None:
    traffic = around("aa", 5, 5)
    records = list(traffic.envelopes())
    kinds = [type(r.data).__name__ for r in records]
    configured = [r for r in records if isinstance(r.data, s.MonitorConfigured)]
    versions = [
        {p.version for p in r.data.predictions}
        for r in records
        if isinstance(r.data, s.PredictionBatch)
    ]

    assert [VERSION, RELEASE_VERSION] == [r.data.version for r in configured]
    assert traffic.change_at == configured[1].time.timestamp()
    assert "MonitorConfigured" == kinds[6]  # after the five batches of the old version
    assert [{VERSION}] * 5 + [{RELEASE_VERSION}] * 5 == versions


def test_gradual_changes_are_halfway_after_half_their_ramp() -> None:
    creep = around("latency_creep", 1, 1)
    drift = around("gradual_drift", 1, 1)
    assert creep.change_at is not None and drift.change_at is not None
    halfway = 3 * HOUR_S

    assert pytest.approx(1.25) == creep.behaviour_at(creep.change_at + halfway).latency_scale
    assert pytest.approx(1.5) == drift.behaviour_at(drift.change_at + halfway).amount_scale
    assert 1.0 == creep.behaviour_at(creep.change_at - 1).latency_scale


def test_unknown_scenarios_and_families_name_the_known_ones() -> None:
    with pytest.raises(UnknownScenarioError, match="known: diurnal_week, aa"):
        production_scenario("quiet_week")
    with pytest.raises(UnknownScenarioError, match="known: " + ", ".join(PRODUCTION_FAMILIES)):
        production_family("shared_outage")


# ---- the log --------------------------------------------------------------------------------


def test_rollout_simulate_production_writes_a_log_that_decodes_and_starts_configured(
    tmp_path: Path,
) -> None:
    out = tmp_path / "prod.jsonl"
    args = ["--production", "errors_x3", "--days", "0.002", "--seed", "2", "--out", str(out)]
    result = CliRunner().invoke(simulate_cmd, [*args, "--family", "errors_in_runs"])

    assert 0 == result.exit_code, result.output
    decoded = [s.decode(line) for line in out.read_bytes().splitlines()]
    events = [e for e in decoded if isinstance(e, s.Envelope)]
    assert decoded == events  # no rejection
    assert isinstance(events[0].data, s.MonitorConfigured)
    assert events[0].data.training_profile is not None
    assert {s.PredictionBatch} == {type(e.data) for e in events[1:]}
    times = [e.time for e in events]
    assert times == sorted(times)
    assert 1 + 173 == len(events)  # 0.002 days: 173 seconds, every one with requests at 08:00
    assert {"fraud-prod"} == {e.data.deployment_id for e in events[1:]}


def test_rollout_simulate_refuses_an_unknown_production_scenario_in_one_sentence(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(
        simulate_cmd, ["--production", "quiet_week", "--out", str(tmp_path / "x.jsonl")]
    )

    assert 2 == result.exit_code
    assert result.exception is None or isinstance(result.exception, SystemExit)
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert 1 == len(error)
    assert "unknown production scenario 'quiet_week'" in error[0]
    assert all(name in error[0] for name in PRODUCTION_SCENARIOS)
    assert "Traceback" not in result.output


def test_rollout_simulate_takes_a_rollout_scenario_or_a_production_one_not_both(
    tmp_path: Path,
) -> None:
    out = str(tmp_path / "x.jsonl")
    both = ["--scenario", "healthy", "--production", "aa", "--seed", "1", "--out", out]

    assert 2 == CliRunner().invoke(simulate_cmd, both).exit_code
    assert 2 == CliRunner().invoke(simulate_cmd, ["--out", out]).exit_code
    assert 2 == CliRunner().invoke(simulate_cmd, ["--scenario", "healthy", "--out", out]).exit_code
    rollout_only = ["--production", "aa", "--plan", "quick", "--out", out]
    assert "--plan" in CliRunner().invoke(simulate_cmd, rollout_only).output
