"""Every event type travels through a real broker and comes back as the same typed event."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

import schemas as s
from controller.settings import load_settings
from controller.topics import create_topics, topic_specs
from tests.factories import make_event, sample_payloads
from tests.kafka_read import read_topic

pytestmark = pytest.mark.kafka


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[ConsumerRecord]:
    return read_topic(bootstrap, topic, lambda records: len(records) >= expected)


def test_every_event_type_round_trips_through_the_broker(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=3)
    events = [make_event(p) for p in sample_payloads()]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for event in events:
        producer.send(topic, key=event.key().encode(), value=event.to_json())
    producer.flush(30)
    producer.close()

    records = _consume_all(kafka_bootstrap, topic, len(events))

    decoded = {}
    for record in records:
        event = s.decode(record.value)
        assert isinstance(event, s.Envelope), event
        assert event.key() == record.key.decode()
        decoded[event.type] = event
    assert {e.type: e for e in events} == decoded
    assert len(s.PAYLOADS) == len(decoded)


def test_one_rollouts_records_share_a_partition(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=6)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    # a usage event that names a quota pool is keyed by the pool (its pool's worker judges it)
    payloads = [
        p
        for p in sample_payloads()
        if getattr(p, "deployment_id", None) == "dep-1" and getattr(p, "pool", None) is None
    ]
    assert len(payloads) >= 5
    for p in payloads:
        event = make_event(p)
        producer.send(topic, key=event.key().encode(), value=event.to_json())
    producer.flush(30)
    producer.close()

    records = _consume_all(kafka_bootstrap, topic, len(payloads))

    assert len(payloads) == len(records)
    assert len({r.partition for r in records}) == 1


def test_topics_are_created_idempotently_with_their_cleanup_policies(kafka_bootstrap: str) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    settings = load_settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        topic_partitions=2,
    )

    first = create_topics(settings)
    second = create_topics(settings)

    specs = topic_specs(settings)
    assert {spec.name: "created" for spec in specs} == first
    assert {spec.name: "exists" for spec in specs} == second
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics([spec.name for spec in specs])}
        for spec in specs:
            assert spec.partitions == len(described[spec.name]["partitions"])
        commands = next(spec for spec in specs if spec.topic is s.Topic.COMMANDS)
        result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, commands.name)])
        configs = _config_map(result)
        assert configs["cleanup.policy"] == "compact,delete"
    finally:
        admin.close()


def _config_map(result: object) -> dict[str, str]:
    """kafka-python 3 answers describe_configs with {"topic": {name: {config: {"value": ...}}}}."""
    assert isinstance(result, dict), f"unexpected describe_configs answer: {result!r}"
    (configs,) = result["topic"].values()
    return {name: entry["value"] for name, entry in configs.items()}
