"""The prediction lane without a broker: a group of records in, deltas and dead letters out.

The producer is the one narrow edge replaced here (a recorder of sends); the real broker path is
covered by the e2e and integration tests.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition

import schemas as s
from controller.core.stats import CohortStats
from controller.stream import lane as lane_module
from controller.stream.deltas import StatsDelta
from controller.stream.lane import PredictionLane
from tests.conftest import require_compiled_lane
from tests.factories import T0, make_deployment, make_event, make_prediction, observe_one_by_one

TOPIC = "rollout.predictions"


class RecordingProducer:
    """Keeps what the lane sends; every send is acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(
        self, topic: str, *, key: bytes | None = None, value: bytes, headers: Any = None
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def record(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TOPIC, 0, offset, 0, 0, b"dep-1", value, None, 5, len(value), [])


@pytest.fixture(params=[False, True], ids=["python", "compiled"])
def compiled(request: pytest.FixtureRequest) -> bool:
    """Each lane test runs on the Python path and on the compiled one (controller/stream/
    native.py); the compiled one must be built under CI=true."""
    if request.param:
        require_compiled_lane()
    return bool(request.param)


def make_lane(compiled: bool) -> tuple[PredictionLane, RecordingProducer]:
    lane = PredictionLane(
        None,
        topic=TOPIC,
        stats_topic="rollout.stats",
        dead_letter_topic="rollout.dead-letter",
        group_id="test",
        clock=lambda: (T0 + timedelta(minutes=1)).timestamp(),
        native=compiled,
    )
    assert compiled == (lane._folder.native is not None)
    producer = RecordingProducer()
    lane._producer = producer  # type: ignore[assignment]  # the narrow edge: no broker here
    return lane, producer


def predictions(n: int) -> list[s.PredictionServed]:
    return [
        make_prediction(
            request_id=f"req-{i}",
            cohort="canary" if i % 3 == 0 else "baseline",
            version="v2" if i % 3 == 0 else "v1",
            latency_ms=10.0 + i,
            event_time=T0 + timedelta(milliseconds=i),
        )
        for i in range(n)
    ]


def batch(items: list[s.PredictionServed]) -> bytes:
    fields = ("deployment_id", "model")
    rows = tuple(s.Prediction(**p.model_dump(exclude=set(fields))) for p in items)
    return make_event(
        s.PredictionBatch(deployment_id="dep-1", model="fraud", predictions=rows)
    ).to_json()


def one_by_one(items: list[s.PredictionServed]) -> dict[tuple[str, str], CohortStats]:
    return observe_one_by_one(items)


def test_bad_records_go_to_dead_letters_and_the_records_around_them_are_folded(
    compiled: bool,
) -> None:
    lane, producer = make_lane(compiled)
    items = predictions(4)
    # valid for the full decoder, refused by the fast path (stricter about blanks at the ends)
    odd = make_prediction(request_id="req-\x1f")
    records = [
        record(10, make_event(items[0]).to_json()),
        record(11, b"{not json"),
        record(12, make_event(items[1]).to_json()),
        record(13, make_event(odd).to_json()),
        record(14, make_event(make_deployment()).to_json()),
        record(15, batch(items[2:])),
    ]

    async def run() -> None:
        await lane.collect(records)
        await lane.flush()

    asyncio.run(run())

    sent = [StatsDelta.from_json(v) for t, _, v in producer.sent if t == "rollout.stats"]
    deltas = [d for d in sent if d.target == "rollout"]
    # every delta goes to the model's monitor too: the same statistics, keyed by the model
    assert [d.for_monitor() for d in deltas] == [d for d in sent if d.target == "monitor"]
    letters = [orjson.loads(v) for t, _, v in producer.sent if t == "rollout.dead-letter"]
    assert ["dlq:rollout.predictions:0:11", "dlq:rollout.predictions:0:14"] == [
        letter["id"] for letter in letters
    ]
    assert "does not belong on the predictions topic" in letters[1]["data"]["reason"]
    (delta,) = deltas
    assert "rollout.predictions:0:10:15:dep-1" == delta.delta_id
    assert one_by_one([*items[:2], odd, *items[2:]]) == {
        (c, v): stats for c, v, stats in delta.cohorts
    }
    assert 5 == delta.count


def test_large_groups_of_batches_are_folded_in_slices_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    monkeypatch.setattr(lane_module, "FOLD_EVERY", 7)
    lane, producer = make_lane(compiled)
    items = predictions(60)
    records = [record(i, batch(items[i * 10 : i * 10 + 10])) for i in range(6)]

    async def run() -> None:
        await lane.collect(records[:4])
        await lane.collect(records[4:])
        await lane.flush()

    asyncio.run(run())

    (delta, watched) = [StatsDelta.from_json(v) for _, _, v in producer.sent]
    assert delta.for_monitor() == watched
    assert one_by_one(items) == {(c, v): stats for c, v, stats in delta.cohorts}
    assert "rollout.predictions:0:0:5:dep-1" == delta.delta_id


class Watermarks:
    """The consumer's assignment and last known high watermarks: what `caught_up` asks it."""

    def __init__(self, highwaters: dict[TopicPartition, int]) -> None:
        self.highwaters = highwaters

    def assignment(self) -> set[TopicPartition]:
        return set(self.highwaters)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)


def test_the_lane_is_caught_up_only_when_every_partition_reached_its_high_watermark() -> None:
    lane, _ = make_lane(False)
    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    watermarks = Watermarks({tp0: 11, tp1: 50})
    lane._consumer = watermarks  # type: ignore[assignment]  # the narrow edge: no broker here

    assert not lane.caught_up({tp0: [record(10, b"x")], tp1: [record(20, b"y")]}, 2)
    # a group with records of partition 0 only: partition 1 still has 29 records waiting
    assert not lane.caught_up({tp0: [record(10, b"x")]}, 1)
    watermarks.highwaters[tp1] = 21
    assert lane.caught_up({tp0: [record(10, b"x")]}, 1)
    assert not lane.caught_up({tp0: [record(10, b"x")]}, lane.max_records)  # more may wait
    watermarks.highwaters[tp0] = 30  # the last fetch saw more on partition 0
    assert not lane.caught_up({}, 0)
