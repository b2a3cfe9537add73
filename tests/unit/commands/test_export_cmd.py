"""`rollout export` chooses and orders the records it read: the plain part, without a broker
(tests/integration/test_export.py reads real topics)."""

from __future__ import annotations

from datetime import timedelta

import schemas as s
from controller.commands.export_cmd import InputRecord, Skipped, select
from tests.factories import T0, make_deployment, make_event, make_prediction


class Offsets:
    """Records as the input topics would hold them: offsets counted per topic and partition."""

    def __init__(self) -> None:
        self.next: dict[tuple[s.Topic, int], int] = {}

    def record(
        self, value: bytes | None, *, topic: s.Topic, key: str | None, partition: int = 0
    ) -> InputRecord:
        offset = self.next.get((topic, partition), 0)
        self.next[(topic, partition)] = offset + 1
        return InputRecord(topic, partition, offset, None if key is None else key.encode(), value)

    def event(self, event: s.Envelope[object], partition: int = 0) -> InputRecord:
        return self.record(event.to_json(), topic=event.topic, key=event.key(), partition=partition)


def prediction(deployment_id: str, seconds: float, n: int) -> s.Envelope[object]:
    return make_event(
        make_prediction(deployment_id=deployment_id, request_id=f"r{n}"),
        time=T0 + timedelta(seconds=seconds),
        id=f"{deployment_id}-p{n}",
    )


def deployment(deployment_id: str, seconds: float) -> s.Envelope[object]:
    return make_event(
        make_deployment(deployment_id=deployment_id),
        time=T0 + timedelta(seconds=seconds),
        id=f"{deployment_id}-d",
    )


def ids(lines: list[bytes]) -> list[str]:
    events = [s.decode(line) for line in lines]
    return [e.id for e in events if isinstance(e, s.Envelope)]


def test_records_of_the_chosen_deployment_come_out_in_event_time_order() -> None:
    topics = Offsets()
    records = [
        topics.event(prediction("dep-a", 3, 1)),
        topics.event(prediction("dep-b", 1, 1)),
        topics.event(prediction("dep-a", 2, 2)),
        topics.event(deployment("dep-a", 1)),
        topics.event(deployment("dep-b", 0)),
    ]

    export = select(records, {"dep-a"})

    assert ["dep-a-d", "dep-a-p2", "dep-a-p1"] == ids(export.lines)


def test_lines_are_the_record_values_byte_for_byte() -> None:
    topics = Offsets()
    value = deployment("dep-a", 0).to_json().replace(b'"id"', b' "id"')  # spacing of its own
    records = [topics.record(value, topic=s.Topic.DEPLOYMENTS, key="dep-a")]

    assert [value] == select(records, {"dep-a"}).lines


def test_ties_in_time_go_by_topic_then_partition_then_offset() -> None:
    topics = Offsets()
    p1, p2, p3 = (prediction("dep-a", 5, n) for n in (1, 2, 3))
    records = [
        topics.event(p1, partition=1),
        topics.event(p2, partition=0),
        topics.event(p3, partition=0),
        topics.event(deployment("dep-a", 5)),
    ]

    export = select(reversed(records), {"dep-a"})

    assert ["dep-a-d", "dep-a-p2", "dep-a-p3", "dep-a-p1"] == ids(export.lines)


def test_every_deployment_is_kept_without_a_choice() -> None:
    topics = Offsets()
    records = [topics.event(prediction("dep-a", 1, 1)), topics.event(prediction("dep-b", 0, 1))]

    assert ["dep-b-p1", "dep-a-p1"] == ids(select(records, None).lines)


def test_records_that_are_not_events_are_skipped_and_counted() -> None:
    topics = Offsets()
    records = [
        topics.event(deployment("dep-a", 0)),
        topics.record(b'{"not": "an event"}', topic=s.Topic.PREDICTIONS, key="dep-a"),
        topics.record(None, topic=s.Topic.PREDICTIONS, key="dep-a"),
        topics.record(b"{\n}", topic=s.Topic.LABELS, key="dep-a"),
        topics.record(b"garbage", topic=s.Topic.METRICS, key="dep-b"),  # not chosen: not looked at
    ]

    export = select(records, {"dep-a"})

    assert ["dep-a-d"] == ids(export.lines)
    assert [
        Skipped("predictions[0]@0", "not an event: missing event type (the CloudEvents 'type' "
                "attribute)"),
        Skipped("predictions[0]@1", "not an event: empty record: no value (a tombstone is not an "
                "event)"),
        Skipped("labels[0]@0", "the value holds a line break"),
    ] == export.skipped  # fmt: skip


def test_the_summary_counts_records_per_topic_and_the_skipped() -> None:
    topics = Offsets()
    records = [
        topics.event(deployment("dep-a", 0)),
        topics.event(prediction("dep-a", 1, 1)),
        topics.event(prediction("dep-a", 2, 2)),
        topics.record(b"[]", topic=s.Topic.METRICS, key="dep-a"),
    ]

    export = select(records, {"dep-a"})

    assert (
        "exported 3 records (deployments 1, predictions 2, labels 0, metrics 0); skipped 1"
        == export.summary()
    )


def test_records_without_a_key_belong_to_no_deployment() -> None:
    topics = Offsets()
    event = deployment("dep-a", 0)
    records = [topics.record(event.to_json(), topic=s.Topic.DEPLOYMENTS, key=None)]

    assert [] == select(records, {"dep-a"}).lines
    assert 1 == len(select(records, None).lines)
