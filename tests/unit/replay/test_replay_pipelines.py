"""Replay judges quota pools and pipelines as the worker does: the same log gives the same
alerts, decisions and throttle commands, byte for byte."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import schemas as s
from controller.policy_io import default_policy
from controller.replay.replay import replay
from tests.factories import T0


def log() -> list[bytes]:
    """A GPU pool of 64 shared by serving and training; training's gauge climbs from 20 to 60
    after 30 minutes (the pool at 97 %), while serving asks for more than it holds."""
    pool = s.QuotaPoolConfigured(
        pool="gpu-pool",
        resource="gpu",
        unit="gpus",
        limit=64.0,
        pipelines=(s.PoolMember(pipeline="serving"), s.PoolMember(pipeline="training")),
        throttle=True,
        by="alice",
    )
    events: list[s.Envelope[Any]] = [s.make_event(pool, source="ops", time=T0, id="pool")]
    for minute in range(60):
        at = T0 + timedelta(minutes=minute, seconds=30)
        training = 20.0 if minute < 30 else 60.0
        for pipeline, used, requested in (("serving", 4.0, 12.0), ("training", training, None)):
            usage = s.ResourceUsage(
                deployment_id=pipeline,
                resource="gpu",
                used=used,
                unit="gpus",
                pipeline=pipeline,
                pool="gpu-pool",
                requested=requested,
            )
            events.append(s.make_event(usage, source="agent", time=at, id=f"{pipeline}-{minute}"))
    return [e.to_json() for e in events]


def test_a_pool_replays_to_the_same_alerts_and_throttles_every_time() -> None:
    first: list[bytes] = []
    replay(log(), default_policy(), emit=lambda e: first.append(e.to_json()))
    again: list[bytes] = []
    replay(log(), default_policy(), emit=lambda e: again.append(e.to_json()))

    assert first == again
    outputs = [s.decode(raw) for raw in first]
    firing = [
        o.data.dedup_key
        for o in outputs
        if isinstance(o, s.Envelope) and isinstance(o.data, s.Alert) and o.data.status == "firing"
    ]
    assert "gpu-pool/training/quota.near_limit.critical" in firing
    assert all(key.startswith("gpu-pool/training/") for key in firing)
    throttles = [
        o.data
        for o in outputs
        if isinstance(o, s.Envelope) and isinstance(o.data, s.PipelineThrottle)
    ]
    assert throttles and {"training"} == {t.pipeline for t in throttles}
