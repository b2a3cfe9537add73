"""Two prediction lanes in one consumer group on a real broker: when the second joins, the
first flushes what it folded and commits before it gives up its partitions, so every
prediction is counted exactly once across the hand-over."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from controller.sdk import emit
from controller.settings import load_settings
from controller.stream.deltas import StatsDelta
from controller.stream.lane import PredictionLane
from controller.topics import create_topics, stats_topic_name, topic_name
from schemas import Topic
from tests.factories import T0, make_event, make_prediction
from tests.kafka_read import read_topic

pytestmark = pytest.mark.kafka

PREDICTIONS = 60


def test_a_lane_hands_its_partitions_over_without_counting_anything_twice(
    kafka_bootstrap: str,
) -> None:
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"handover.{uuid.uuid4().hex[:8]}."
    )
    create_topics(settings)
    events = [
        make_event(
            make_prediction(
                deployment_id=f"dep-{i % 12}",
                request_id=f"r{i}",
                event_time=T0 + timedelta(milliseconds=i),
            ),
            id=f"e{i}",
        )
        for i in range(PREDICTIONS)
    ]
    assert PREDICTIONS == emit(settings, events)
    group = f"handover-{uuid.uuid4().hex[:8]}"

    def lane() -> PredictionLane:
        made = PredictionLane(
            settings,
            topic=topic_name(settings, Topic.PREDICTIONS),
            stats_topic=stats_topic_name(settings),
            dead_letter_topic=topic_name(settings, Topic.DEAD_LETTER),
            group_id=group,
            clock=lambda: (T0 + timedelta(minutes=1)).timestamp(),
            # nothing is flushed or committed unless the hand-over does it
            flush_interval_s=3600,
            commit_interval_s=3600,
        )
        made.caught_up = lambda *_: False  # type: ignore[method-assign]
        return made

    async def run() -> None:
        first, second = lane(), lane()
        await first.start()
        try:
            while first.counters.records < PREDICTIONS:
                await first.step()
            assert 0 == first.counters.deltas  # all of it folded, none of it sent
            await second.start()
            try:
                # both poll (the group rebalances on their polls) until the second has its share
                async with asyncio.timeout(60):
                    while len(second.consumer.assignment()) < 2:
                        await asyncio.gather(first.step(), second.step())
                for _ in range(10):
                    await asyncio.gather(first.step(), second.step())
            finally:
                await second.stop()
        finally:
            await first.stop()

    asyncio.run(run())

    records = read_topic(
        kafka_bootstrap,
        stats_topic_name(settings),
        lambda rs: sum(StatsDelta.from_json(r.value).count for r in rs) >= 2 * PREDICTIONS,
        timeout_s=20,
    )
    sent = [StatsDelta.from_json(r.value) for r in records]
    deltas = [d for d in sent if d.target == "rollout"]
    # the models' monitors get the same statistics, once each too
    assert sorted(d.for_monitor().delta_id for d in deltas) == sorted(
        d.delta_id for d in sent if d.target == "monitor"
    )
    assert PREDICTIONS == sum(d.count for d in deltas)
    assert len(deltas) == len({d.delta_id for d in deltas})
