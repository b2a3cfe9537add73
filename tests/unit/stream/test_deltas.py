"""The lane's fold: predictions collected record by record and folded in bulk, group after group,
come out exactly (`==`) as observing them one by one, whichever decoder typed them."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import schemas as s
from controller.core.stats import CohortStats, StatsConfig
from controller.stream.deltas import Folder, StatsDelta
from schemas.fast import decode_predictions
from tests.factories import T0, make_event, make_prediction, observe_one_by_one

CONFIG = StatsConfig(max_buckets=64, max_categories=4)


def predictions(n: int, seed: int = 3) -> list[s.PredictionServed]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        canary = rng.random() < 0.3
        ok = rng.random() > 0.1
        out.append(
            make_prediction(
                request_id=f"req-{i}",
                cohort="canary" if canary else "baseline",
                version="v2" if canary else "v1",
                event_time=T0 + timedelta(milliseconds=rng.randrange(10_000)),
                latency_ms=round(rng.lognormvariate(3.0, 1.0), 3),
                ok=ok,
                error_type=None if ok else rng.choice(["timeout", "oom"]),
                prediction=rng.choice([None, round(rng.random(), 3), "fraud", "ok"]),
                features=rng.choice(
                    [
                        None,
                        {"amount": round(rng.expovariate(0.1), 2), "country": "DE"},
                        {"amount": None, "is_new": rng.random() < 0.5},
                        {"country": rng.choice(["FR", "US", "x", "y", "z"])},
                    ]
                ),
            )
        )
    return out


def one_by_one(items: list[s.PredictionServed]) -> dict[tuple[str, str], CohortStats]:
    return observe_one_by_one(items, CONFIG)


def test_folding_group_after_group_equals_observing_one_by_one() -> None:
    items = predictions(600)
    folder = Folder(CONFIG)
    for start in range(0, len(items), 250):  # three groups, folded after each
        for p in items[start : start + 250]:
            if int(p.request_id.removeprefix("req-")) % 2:  # half through the fast path
                fast = decode_predictions(make_event(p).to_json())
                assert fast is not None
                folder.add_items(fast.deployment_id, fast.model, fast.items)
            else:  # half as the full decoder's models (a StrEnum cohort)
                folder.add(make_event(p))
        folder.fold()

    (fold,) = folder.drain()

    assert one_by_one(items) == fold.cohorts
    assert len(items) == fold.count
    assert not folder


def test_a_delta_survives_the_stats_topic() -> None:
    folder = Folder(CONFIG)
    for p in predictions(50):
        folder.add(make_event(p))
    (fold,) = folder.drain()
    delta = StatsDelta.of(fold, "predictions:0:0:49:dep-1")

    assert delta == StatsDelta.from_json(delta.to_json())
    assert [("baseline", "v1"), ("canary", "v2")] == [(c, v) for c, v, _ in delta.cohorts]


def test_events_without_predictions_are_not_collected() -> None:
    folder = Folder(CONFIG)
    payload: Any = s.DeploymentRequested(
        deployment_id="dep-1",
        model="fraud",
        candidate_version="v2",
        baseline_version="v1",
        plan=s.RolloutPlan(steps=(s.TrafficStep(canary_percent=10),)),
    )

    assert folder.add(make_event(payload)) is None
    assert not folder
