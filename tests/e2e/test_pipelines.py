"""Quota pools through the live worker: a pool configured by event, its pipelines' usage on the
metrics topic, no rollout anywhere; the worker's timer judges the pool every minute and names
the pipeline that takes it near its limit (its throttle command waits for five minutes above
its fair share: tests/unit/replay/test_replay_pipelines.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from schemas import (
    Alert,
    PipelineDecision,
    PoolMember,
    QuotaPoolConfigured,
    ResourceUsage,
    Topic,
)
from tests.e2e.harness import Rollouts

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_pool_near_its_limit_is_alerted_for_the_pipeline_that_fills_it(world: Rollouts) -> None:
    world.start_worker()
    world.send(
        QuotaPoolConfigured(
            pool="gpu-pool",
            resource="gpu",
            unit="gpus",
            limit=64.0,
            pipelines=(PoolMember(pipeline="serving"), PoolMember(pipeline="training")),
            throttle=True,
            by="alice",
        )
    )
    stop = threading.Event()

    def report() -> None:  # each pipeline's gauge every 2 s: serving waits for GPUs it lacks
        while not stop.is_set():
            world.send(
                *(
                    ResourceUsage(
                        deployment_id=pipeline,
                        resource="gpu",
                        used=used,
                        unit="gpus",
                        pipeline=pipeline,
                        pool="gpu-pool",
                        requested=requested,
                    )
                    for pipeline, used, requested in (
                        ("serving", 4.0, 12.0),
                        ("training", 60.0, None),
                    )
                )
            )
            stop.wait(2.0)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    critical = "gpu-pool/training/quota.near_limit.critical"

    def firing() -> list[Alert]:
        return [
            s.event.data
            for s in world.observer.records(Topic.ALERTS, "gpu-pool")
            if isinstance(s.event.data, Alert) and s.event.data.status == "firing"
        ]

    try:
        world.wait_for(
            lambda: critical in {a.dedup_key for a in firing()},
            timeout=150,  # the pool is checked on the minute
            what="the critical alert of gpu-pool",
        )
    finally:
        stop.set()
        reporter.join(10)

    assert all(a.dedup_key.startswith("gpu-pool/training/") for a in firing())
    decisions = [
        s.event.data
        for s in world.observer.records(Topic.DECISIONS, "gpu-pool")
        if isinstance(s.event.data, PipelineDecision)
    ]
    assert decisions and decisions[0].action == "configured"
    assert [] == world.observer.dead_letters()
    assert datetime.now(UTC) > firing()[0].at
