"""The label join on a real broker: predictions and labels of many deployments meet in one
worker's store (range assignment of both topics), the pairs reach the stats topic as labels
deltas, and a worker that starts on an empty store rebuilds it from the predictions topic
before it joins the labels that came while it was away."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

import schemas as s
from controller.sdk import emit
from controller.settings import load_settings
from controller.stream.deltas import LabelsDelta, decode_delta
from controller.stream.join import JoinLane
from controller.topics import create_topics, stats_topic_name, topic_name
from schemas import Topic
from tests.factories import T0, make_event, make_prediction
from tests.kafka_read import read_topic

pytestmark = pytest.mark.kafka

N = 40
NOW = (T0 + timedelta(hours=2)).timestamp()


def predictions(first: int, n: int) -> list[s.Envelope[s.PredictionServed]]:
    return [
        make_event(
            make_prediction(
                deployment_id=f"dep-{i % 8}",
                request_id=f"r{i}",
                cohort="canary" if i % 3 == 0 else "baseline",
                version="v2" if i % 3 == 0 else "v1",
                prediction=(i % 10) / 10,
                event_time=T0 + timedelta(seconds=i),
            ),
            id=f"p{i}",
        )
        for i in range(first, first + n)
    ]


def labels(first: int, n: int) -> list[s.Envelope[s.LabelReported]]:
    return [
        make_event(
            s.LabelReported(
                deployment_id=f"dep-{i % 8}",
                request_id=f"r{i}",
                label=float(i % 2),
                event_time=T0 + timedelta(minutes=30),
            ),
            id=f"l{i}",
        )
        for i in range(first, first + n)
    ]


def test_labels_join_across_partitions_and_an_empty_store_rebuilds(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"join.{uuid.uuid4().hex[:8]}."
    )
    create_topics(settings)
    group = f"join-{uuid.uuid4().hex[:8]}"

    def lane(store: Path) -> JoinLane:
        return JoinLane(
            settings,
            predictions_topic=topic_name(settings, Topic.PREDICTIONS),
            labels_topic=topic_name(settings, Topic.LABELS),
            stats_topic=stats_topic_name(settings),
            group_id=group,
            store_path=store,
            clock=lambda: NOW,
        )

    async def run_until(joining: JoinLane, pairs: int) -> None:
        await joining.start()
        try:
            async with asyncio.timeout(60):
                while joining.joiner is None or joining.joiner.counters.pairs < pairs:
                    await joining.step()
            await joining.commit()
        finally:
            await joining.stop()

    assert N == emit(settings, predictions(0, N))
    assert N // 2 == emit(settings, labels(0, N // 2))
    asyncio.run(run_until(lane(tmp_path / "first"), N // 2))

    # a new worker with an empty store: the labels of the other half come while it is away
    assert N // 2 == emit(settings, labels(N // 2, N // 2))
    again = lane(tmp_path / "second")
    asyncio.run(run_until(again, N // 2))

    records = read_topic(
        kafka_bootstrap,
        stats_topic_name(settings),
        lambda rs: sum(d.pairs for d in _labels(rs)) >= 2 * N,
        timeout_s=20,
    )
    deltas = [d for d in _labels(records) if d.target == "rollout"]
    assert N == sum(d.pairs for d in deltas)
    assert {f"dep-{i}" for i in range(8)} == {d.deployment_id for d in deltas}
    # each delta has its twin for the model's monitor, keyed by the model
    twins = {d.delta_id: d for d in _labels(records) if d.target == "monitor"}
    assert {d.delta_id + ":monitor" for d in deltas} == set(twins)
    assert all(twins[d.delta_id + ":monitor"].folds == d.folds for d in deltas)
    keys = {decode_delta(r.value).delta_id: r.key for r in records}  # type: ignore[attr-defined]
    assert all(keys[t.delta_id] == t.model.encode() for t in twins.values())
    assert again.rebuilding == {}


def _labels(records: list[object]) -> list[LabelsDelta]:
    found = [decode_delta(r.value) for r in records]  # type: ignore[attr-defined]
    return [d for d in found if isinstance(d, LabelsDelta)]
