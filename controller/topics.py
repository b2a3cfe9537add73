"""The project's topics: names, partition counts and cleanup policies, created in code.

Source topics are never auto-created (the local broker turns that off); the worker and
`rollout topics create` create them idempotently. Faust creates only its own internal topics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from controller.settings import Settings
from schemas import Topic

WEEK_MS = 7 * 24 * 3600 * 1000


#: The worker's internal topic: statistics deltas from the prediction lane to the rollout agent.
STATS = "internal.stats"


@dataclass(frozen=True)
class TopicSpec:
    topic: Topic | str
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""

    @property
    def compacted(self) -> bool:
        return "compact" in self.config.get("cleanup.policy", "")


def topic_name(settings: Settings, topic: Topic) -> str:
    return settings.topic_prefix + topic.value


def stats_topic_name(settings: Settings) -> str:
    return settings.topic_prefix + STATS


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the controller reads or writes.

    Inputs and the audit trail are keyed by deployment id and share one partition count, so a
    rollout's events land on the same partition number everywhere (Faust co-partitioning).
    Commands are compacted with deletion (the latest command per deployment survives for
    routers that start late); dead letters are kept longest, for people to inspect.
    """
    n = settings.topic_partitions
    keep = {"cleanup.policy": "delete", "retention.ms": str(WEEK_MS)}

    def spec(topic: Topic, purpose: str, **config: str) -> TopicSpec:
        return TopicSpec(topic, topic_name(settings, topic), n, {**keep, **config}, purpose)

    return [
        spec(Topic.DEPLOYMENTS, "deployment requests, approvals, manual actions, router acks"),
        spec(
            Topic.PREDICTIONS,
            "served predictions, single and batched",
            **{"retention.ms": str(2 * 24 * 3600 * 1000)},
        ),
        spec(Topic.LABELS, "ground truth arriving later"),
        spec(Topic.METRICS, "metrics, resource and quota use, training runs, data profiles"),
        spec(
            Topic.COMMANDS,
            "set-traffic / promote / rollback / pause for serving routers",
            **{"cleanup.policy": "compact,delete"},
        ),
        spec(Topic.ALERTS, "firing and resolved alerts for SREs"),
        spec(
            Topic.DECISIONS,
            "every rollout transition with its reason: the audit trail",
            **{"retention.ms": str(90 * 24 * 3600 * 1000)},
        ),
        TopicSpec(
            STATS,
            stats_topic_name(settings),
            n,
            {"cleanup.policy": "delete", "retention.ms": str(24 * 3600 * 1000)},
            "internal: statistics deltas from the prediction lane to the rollout agent",
        ),
        spec(
            Topic.DEAD_LETTER,
            "records that failed to decode or validate, with why",
            **{"retention.ms": str(30 * 24 * 3600 * 1000)},
        ),
    ]


def create_topics(settings: Settings, *, timeout_s: float = 30.0) -> dict[str, str]:
    """Create every missing topic; return name -> "created" | "exists". Idempotent."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from controller import kafka_clients

    specs = topic_specs(settings)
    admin = kafka_clients.admin(
        settings, client_id="rollout-topics", request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        existing = set(admin.list_topics())
        result = {s.name: "exists" for s in specs if s.name in existing}
        missing = [s for s in specs if s.name not in existing]
        for s in missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            s.name,
                            s.partitions,
                            settings.replication_factor,
                            topic_configs=s.config,
                        )
                    ],
                    timeout_ms=int(timeout_s * 1000),
                )
                result[s.name] = "created"
            except TopicAlreadyExistsError:
                result[s.name] = "exists"  # another worker won the race
        if missing:
            _wait_for_leaders(admin, {s.name: s.partitions for s in missing}, timeout_s)
        return result
    finally:
        admin.close()


def _wait_for_leaders(admin: Any, partitions: dict[str, int], timeout_s: float) -> None:
    """Until the broker's metadata shows every new topic with a leader for each partition (or
    `timeout_s`): a consumer group that joins before then is assigned none of the topic's
    partitions, and its clients learn of them only at their next metadata refresh (five
    minutes by default)."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            described = admin.describe_topics(list(partitions))
        except KafkaError:  # not known to the broker's metadata yet
            described = []
        ready = {
            d.get("name")
            for d in described
            if d.get("error_code", 0) == 0
            and len(d.get("partitions") or ()) == partitions.get(d.get("name", ""), -1)
            and all(p.get("leader_id", -1) >= 0 for p in d["partitions"])
        }
        if ready >= set(partitions):
            return
        time.sleep(0.1)
