"""Serving capacity from a predicted QPS, with its assumptions in words; and whether a traffic
step fits the serving pool."""

from __future__ import annotations

import math

import pytest

import schemas as s
from controller.core.pipelines.capacity import (
    CapacityInputs,
    ReplicaSize,
    ThroughputObservation,
    estimate,
    guard_step,
    observations_from_metrics,
)

REPLICA = ReplicaSize(cpu=4.0, gpu=1.0, memory_gb=16.0)


def test_replicas_carry_the_baseline_the_largest_canary_and_each_experiment() -> None:
    found = estimate(
        CapacityInputs(
            predicted_qps=1000.0,
            replica=REPLICA,
            per_replica_qps=50.0,
            target_utilisation=0.5,
            canary_share=0.5,
            experiment_shares=(0.1,),
        )
    )

    # 1,000 req/s at 25 req/s a replica: 40 for the baseline, 20 for a 50 % canary, 4 for 10 %
    assert "ok" == found.outcome
    assert {"baseline": 40, "canary": 20, "experiment 1": 4} == dict(found.breakdown)
    assert (64, {"cpu": 256.0, "gpu": 64.0, "memory_gb": 1024.0}) == (
        found.replicas,
        dict(found.resources),
    )
    assert any("rollback is instant" in a for a in found.assumptions)
    assert any("50 % of that throughput" in a for a in found.assumptions)
    assert "64 replicas" in found.reason


def test_throughput_is_measured_from_the_rates_that_held_the_slo() -> None:
    observations = [
        ThroughputObservation(qps=float(q), latency_ms=80.0) for q in range(10, 101, 10)
    ]
    observations.append(ThroughputObservation(qps=150.0, latency_ms=900.0))  # past saturation

    found = estimate(
        CapacityInputs(
            predicted_qps=900.0,
            replica=REPLICA,
            observations=observations,
            latency_slo_ms=200.0,
            target_utilisation=1.0,
        )
    )

    assert 90.0 == found.per_replica_qps  # the p90 of 10 within the SLO; 150 broke it
    assert 10 == found.replicas
    assert "10 of 11 observed rates within the 200 ms SLO" in found.assumptions[0]


def test_little_s_law_when_only_concurrency_and_latency_are_known() -> None:
    found = estimate(
        CapacityInputs(
            predicted_qps=100.0,
            replica=REPLICA,
            concurrency=4,
            latency_ms=200.0,
            target_utilisation=1.0,
        )
    )

    assert (20.0, 5) == (found.per_replica_qps, found.replicas)
    assert "Little's law" in found.assumptions[0]


def test_no_throughput_is_no_data_not_an_error() -> None:
    found = estimate(CapacityInputs(predicted_qps=100.0, replica=REPLICA))

    assert "no_data" == found.outcome
    assert "no throughput" in found.reason


def test_invalid_inputs_are_refused_with_what_is_wrong() -> None:
    found = estimate(
        CapacityInputs(
            predicted_qps=100.0, replica=REPLICA, per_replica_qps=10.0, target_utilisation=1.5
        )
    )

    assert ("invalid", "target_utilisation must be in (0, 1], got 1.5") == (
        found.outcome,
        found.reason,
    )


def test_observations_are_read_from_metric_events() -> None:
    def metric(name: str, value: float, replica: str) -> s.MetricReported:
        return s.MetricReported(
            deployment_id="fraud", name=name, value=value, attributes={"replica": replica}
        )

    events = [
        metric("replica_qps", 40.0, "a"),
        metric("latency_p99_ms", 120.0, "a"),
        metric("replica_qps", 55.0, "b"),
        metric("latency_p99_ms", 300.0, "b"),
        metric("gpu_util", 0.9, "a"),
    ]

    assert [
        ThroughputObservation(40.0, 120.0),
        ThroughputObservation(55.0, 300.0),
    ] == observations_from_metrics(events)


INPUTS = CapacityInputs(
    predicted_qps=1000.0, replica=REPLICA, per_replica_qps=50.0, target_utilisation=0.5
)


def test_a_step_the_pool_can_carry_fits() -> None:
    guard = guard_step(INPUTS, 10.0, 50.0, {"cpu": 100.0, "gpu": 20.0, "memory_gb": 400.0})

    # 10 %: 4 canary replicas; 50 %: 20; 16 more
    assert "fits" == guard.outcome
    assert {"cpu": 64.0, "gpu": 16.0, "memory_gb": 256.0} == dict(guard.needed)


def test_a_step_the_pool_cannot_carry_holds_and_says_what_is_missing() -> None:
    guard = guard_step(INPUTS, 10.0, 50.0, {"cpu": 100.0, "gpu": 6.0, "memory_gb": 400.0})

    assert "hold" == guard.outcome
    assert {"gpu": 10.0} == dict(guard.missing)
    assert "16 gpu where 6 are free" in guard.reason and "missing 10 gpu" in guard.reason


def test_a_step_whose_free_capacity_is_unknown_is_not_judged() -> None:
    guard = guard_step(INPUTS, 10.0, 50.0, {"cpu": 100.0})

    assert "no_data" == guard.outcome
    assert "gpu, memory_gb of the serving pool is not known" in guard.reason


@pytest.mark.parametrize("share", [0.01, 0.1, 0.33, 1.0])
def test_the_canary_never_gets_less_than_its_share_needs(share: float) -> None:
    found = estimate(
        CapacityInputs(
            predicted_qps=777.0, replica=REPLICA, per_replica_qps=13.0, canary_share=share
        )
    )

    canary = found.breakdown["canary"]
    assert canary * 13.0 * 0.7 >= share * 777.0 - 1e-9
    assert canary == max(1, math.ceil(share * 777.0 / (13.0 * 0.7) - 1e-9))
