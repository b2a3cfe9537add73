"""Fixtures the broker tests share."""

from __future__ import annotations

import contextlib
import shutil
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from controller.dev.kafka import DevKafkaError, LocalKafka, SecureAccess
from controller.sdk import PredictionReporter
from controller.settings import Settings, load_settings
from controller.topics import create_topics
from schemas import Prediction
from tests.conftest import unique_topic_name
from tests.integration.test_devkafka_cli import free_port_pair


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


@pytest.fixture
def worker_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings of a worker run in the test: topics and a group of its own (two partitions),
    a half-second tick, its folder in the test's, its metrics on any free port of loopback."""
    run = uuid.uuid4().hex[:8]
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"test.{run}.",
        topic_partitions=2,
        consumer_group=f"test-worker-{run}",
        tick_interval_s=0.5,
        data_dir=tmp_path,  # the worker's folder, not the working directory's
        metrics_port=0,
        metrics_host="127.0.0.1",
    )
    create_topics(settings)
    return settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="session")
def secure_broker() -> Iterator[SecureAccess]:
    """`rollout dev-kafka start --secure` for the session: SASL_SSL with SCRAM users, an mTLS
    listener, the StandardAuthorizer (controller.dev.kafka); under CI=true a broker that does
    not start fails the tests that need it (tests/conftest.py)."""
    broker = LocalKafka(
        free_port_pair(), cache_dir=load_settings().cache_dir, secure=True, mtls_port=free_port()
    )
    try:
        broker.start(timeout=120)
    except DevKafkaError as exc:
        pytest.skip(f"the secure broker did not start: {exc}\n{exc.details}")  # fails in CI
    try:
        yield broker.access()
    finally:
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)


def report_baseline(settings: Settings, deployment_id: str, count: int) -> None:
    """`count` baseline predictions of model ranker v1 through the SDK's reporter, flushed."""
    reporter = PredictionReporter(
        settings, deployment_id=deployment_id, model="ranker", source="tests", linger_ms=5
    )
    for n in range(count):
        reporter.report(
            Prediction(
                version="v1",
                cohort="baseline",
                request_id=f"r{n}",
                event_time=datetime.now(UTC),
                latency_ms=20.0,
                prediction=0.5,
            )
        )
    reporter.close()
