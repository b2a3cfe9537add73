"""Fixtures the broker tests share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from controller.settings import Settings, load_settings
from controller.topics import create_topics
from tests.conftest import unique_topic_name


@pytest.fixture
def own_topics(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings whose topics are the test's own (a unique prefix, three partitions), created
    for it and deleted after it."""
    prefix = unique_topic_name(request.node.name) + "."
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, topic_partitions=3
    )
    create_topics(settings)
    yield settings
    with contextlib.suppress(KafkaError):  # the next session starts clean anyway
        kafka_admin.delete_topics([t for t in kafka_admin.list_topics() if t.startswith(prefix)])
