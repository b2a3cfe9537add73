"""The notifier's state in a compacted topic: one record a group (key `GROUP_ID|g|<group>`)
and one a partition of the alerts topic (`GROUP_ID|applied|<p>`: the last offset whose alert
the stored groups include), the latest value of each key winning, a tombstone for a group that
emptied. Several notifier consumer groups can share the topic; each reads only its keys.

On start the notifier reads the topic to its end; records of the alerts topic at or below the
applied offset are skipped, so re-reading from the committed offset changes nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from controller.core.notify import NotifyState, from_plain, to_plain
from controller.errors import RolloutError
from controller.settings import Settings

STATE_TOPIC = "notify.state"


class StateStoreError(RolloutError):
    """The state topic could not be read or written; the message says which and why."""


def state_topic_name(settings: Settings) -> str:
    return settings.topic_prefix + STATE_TOPIC


@dataclass
class Stored:
    state: NotifyState = field(default_factory=NotifyState)
    applied: dict[int, int] = field(default_factory=dict)


def entries_of(stored: Stored) -> dict[str, bytes]:
    out = {
        f"g|{gid}": orjson.dumps(g, option=orjson.OPT_SORT_KEYS)
        for gid, g in to_plain(stored.state).items()
    }
    out.update({f"applied|{p}": str(o).encode() for p, o in stored.applied.items()})
    return out


def stored_of(entries: Mapping[str, bytes]) -> Stored:
    groups: dict[str, Any] = {}
    applied: dict[int, int] = {}
    for key, value in entries.items():
        kind, _, name = key.partition("|")
        if kind == "g":
            groups[name] = orjson.loads(value)
        elif kind == "applied":
            applied[int(name)] = int(value)
    return Stored(from_plain(groups), applied)


class StateStore:
    """Load once, then save the entries that changed since the last save."""

    def __init__(self, settings: Settings, group_id: str) -> None:
        self.settings = settings
        self.topic = state_topic_name(settings)
        self.prefix = f"{group_id}|"
        self.saved: dict[str, bytes] = {}
        self._producer: Any = None

    def ensure_topic(self) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(**self.settings.kafka_client_options())
        try:
            if self.topic in admin.list_topics():
                return
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(
                            self.topic,
                            1,
                            self.settings.replication_factor,
                            topic_configs={"cleanup.policy": "compact"},
                        )
                    ]
                )
        finally:
            admin.close()

    def load(self, timeout_s: float = 30.0) -> Stored:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(
            group_id=None, enable_auto_commit=False, **self.settings.kafka_client_options()
        )
        entries: dict[str, bytes] = {}
        try:
            deadline = time.monotonic() + timeout_s
            while not consumer.partitions_for_topic(self.topic):
                if time.monotonic() > deadline:
                    raise StateStoreError(f"the state topic {self.topic} has no partitions")
                time.sleep(0.2)
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            end = consumer.end_offsets([tp])[tp]
            while consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise StateStoreError(
                        f"the state topic {self.topic} was not read to its end in {timeout_s:g} s"
                    )
                for records in consumer.poll(timeout_ms=500).values():
                    for r in records:
                        key = (r.key or b"").decode()
                        if not key.startswith(self.prefix):
                            continue
                        name = key.removeprefix(self.prefix)
                        if r.value is None:
                            entries.pop(name, None)
                        else:
                            entries[name] = r.value
        finally:
            consumer.close()
        self.saved = dict(entries)
        return stored_of(entries)

    def save(self, stored: Stored, timeout_s: float = 30.0) -> int:
        """Write what changed since the last save (tombstones for what went) and wait for the
        broker; raises StateStoreError. Returns how many records it wrote."""
        entries = entries_of(stored)
        changed = {k: v for k, v in entries.items() if self.saved.get(k) != v}
        gone = [k for k in self.saved if k not in entries]
        if not changed and not gone:
            return 0
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(acks="all", **self.settings.kafka_client_options())
        futures = [
            self._producer.send(self.topic, key=(self.prefix + k).encode(), value=v)
            for k, v in changed.items()
        ] + [
            self._producer.send(self.topic, key=(self.prefix + k).encode(), value=None)
            for k in gone
        ]
        self._producer.flush(timeout=timeout_s)
        failed = [f for f in futures if not f.succeeded()]
        if failed:
            raise StateStoreError(
                f"{len(failed)} of {len(futures)} state records were not stored in {self.topic}: "
                f"{failed[0].exception}"
            )
        self.saved = entries
        return len(futures)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None
