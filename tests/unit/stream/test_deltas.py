"""The lane's fold: predictions collected record by record and folded in bulk, group after group,
come out exactly (`==`) as observing them one by one, whichever decoder typed them."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord

import schemas as s
from controller.core.stats import CohortStats, StatsConfig
from controller.stream import deltas
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


def test_a_delta_and_its_monitor_twin_are_encoded_together() -> None:
    folder = Folder(CONFIG)
    for p in predictions(20):
        folder.add(make_event(p))
    (fold,) = folder.drain()
    delta = StatsDelta.of(fold, "predictions:0:0:19:dep-1")

    value, twin = delta.encode_both()

    assert (delta, delta.for_monitor()) == (StatsDelta.from_json(value), StatsDelta.from_json(twin))
    watched = StatsDelta.from_json(twin)
    assert ("monitor", fold.model, "predictions:0:0:19:dep-1:monitor") == (
        watched.target,
        watched.key(),
        watched.delta_id,
    )


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


def _record(partition: int, offset: int, traced: bool) -> ConsumerRecord[bytes, bytes]:
    headers = [("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")] if traced else []
    return ConsumerRecord("t", partition, offset, 0, 0, b"k", b"v", None, 1, 1, headers)


def test_sources_keep_first_last_count_and_only_the_newest_traced_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deltas, "MAX_TRACED", 3)
    sources = deltas.Sources()
    records = [_record(0, offset, traced=offset % 2 == 0) for offset in range(10, 20)]
    for r in records:
        sources.add(r)

    assert (records[0], records[-1], 10) == (sources.first, sources.last, len(sources))
    assert [14, 16, 18] == [r.offset for r in sources.traced]


def test_sources_of_two_paths_merge_in_the_order_the_records_were_read() -> None:
    sources = deltas.Sources()
    for offset in (12, 15):
        sources.add(_record(0, offset, traced=True))
    other = [_record(0, offset, traced=True) for offset in (10, 13, 17)]

    sources.merge(other[0], other[-1], 3, other)

    assert (10, 17, 5) == (sources.first.offset, sources.last.offset, sources.count)
    assert [10, 12, 13, 15, 17] == [r.offset for r in sources.traced]


def test_a_labels_deltas_twin_encodes_to_the_monitors_copy_of_the_same_pairs() -> None:
    from controller.core.stats.labelled import LabelFold
    from controller.stream.deltas import LabelsDelta, decode_delta

    fold = LabelFold()
    fold.add("r-1", 0.9, 1, 100.0, 160.0)
    delta = LabelsDelta("labels:0:1:1:dep-1", "dep-1", "fraud", 1, (("canary", "v2", fold),))

    mine, twin = delta.encode_both()

    assert delta == decode_delta(mine) and delta.to_json() == mine
    assert delta.for_monitor() == decode_delta(twin)
    assert ("fraud", "monitor") == (delta.for_monitor().key(), decode_delta(twin).target)
