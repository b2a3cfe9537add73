"""Reading a topic back in tests: every partition from the start, without a consumer group.

A group subscription to a topic created a moment ago can be assigned nothing (the group's
first metadata lacks the topic) and then waits for the next metadata refresh, minutes away.
Assigning the partitions by hand, once the topic's metadata names them, has no such window.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord


def read_topic(
    bootstrap: str,
    topic: str,
    enough: Callable[[list[ConsumerRecord]], bool],
    timeout_s: float = 30.0,
) -> list[ConsumerRecord]:
    """Records of `topic` from the start, until `enough` says so or the time is up."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.1)
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return records
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        while not enough(records) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records
