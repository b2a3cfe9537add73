"""The label join on a real broker: predictions and labels of many deployments meet in one
worker's store (range assignment of both topics), the pairs reach the stats topic as labels
deltas, and a worker that starts on an empty store rebuilds it from the predictions topic
before it joins the labels that came while it was away."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import schemas as s
from controller.sdk import emit
from controller.settings import Settings, load_settings
from controller.stream.deltas import LabelsDelta, decode_delta
from controller.stream.join import JoinLane
from controller.stream.pending import PendingStore
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


def fresh_settings(kafka_bootstrap: str) -> Settings:
    """Settings with topics of their own, created."""
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"join.{uuid.uuid4().hex[:8]}."
    )
    create_topics(settings)
    return settings


def join_lane(settings: Settings, group: str, store: Path, **options: Any) -> JoinLane:
    return JoinLane(
        settings,
        predictions_topic=topic_name(settings, Topic.PREDICTIONS),
        labels_topic=topic_name(settings, Topic.LABELS),
        stats_topic=stats_topic_name(settings),
        group_id=group,
        store_path=store,
        clock=lambda: NOW,
        **options,
    )


def test_labels_join_across_partitions_and_an_empty_store_rebuilds(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = fresh_settings(kafka_bootstrap)
    group = f"join-{uuid.uuid4().hex[:8]}"

    def lane(store: Path) -> JoinLane:
        return join_lane(settings, group, store)

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


def test_a_poll_whose_store_work_fails_is_read_again_and_no_label_is_lost(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = fresh_settings(kafka_bootstrap)
    # several polls, so that a failed one sits between others
    lane = join_lane(settings, f"join-{uuid.uuid4().hex[:8]}", tmp_path / "store", max_records=10)
    assert N == emit(settings, predictions(0, N))
    assert N == emit(settings, labels(0, N))
    failures: list[str] = []

    async def run() -> None:
        await lane.start()
        assert lane.joiner is not None
        store = lane.joiner.store
        add_labels = store.add_labels

        def failing_once(*args: object, **kwargs: object) -> object:
            if not failures:
                failures.append("the disk is full")
                raise OSError("the disk is full")
            return add_labels(*args, **kwargs)  # type: ignore[arg-type]

        store.add_labels = failing_once  # type: ignore[method-assign]
        try:
            async with asyncio.timeout(60):
                while lane.joiner.counters.pairs < N:
                    # as the worker does: a failed step is logged and the next one runs
                    with contextlib.suppress(OSError):
                        await lane.step()
            await lane.commit()
        finally:
            await lane.stop()

    asyncio.run(run())

    assert ["the disk is full"] == failures
    assert 1 == lane.rewinds
    # every label joined, those of the failed poll too: they were read again
    with PendingStore(tmp_path / "store") as store:
        entries = [store.get(f"dep-{i % 8}", f"r{i}") for i in range(N)]
    assert all(entry is not None and entry.joined_by is not None for entry in entries)
    # and their pairs reached the stats topic (at least once)
    records = read_topic(
        kafka_bootstrap,
        stats_topic_name(settings),
        lambda rs: sum(d.pairs for d in _labels(rs) if d.target == "rollout") >= N,
        timeout_s=20,
    )
    assert N <= sum(d.pairs for d in _labels(records) if d.target == "rollout")
