"""The session Kafka broker and fresh topics on it, for tests marked `kafka`.

`kafka_bootstrap` picks the first broker available, in this order:

1. KAFKA_BOOTSTRAP_SERVERS, when set (a broker someone already runs);
2. a testcontainers Kafka, when a Docker engine answers (image: ROLLOUT_TEST_KAFKA_IMAGE, else
   the testcontainers default, in KRaft mode);
3. the local broker of `rollout dev-kafka` on port ROLLOUT_TEST_KAFKA_PORT (default 19092),
   started if it is not running; the last session using it stops it, if a session started it
   (a broker started by hand with `rollout dev-kafka start --port 19092` stays up).

When none is available the kafka tests skip with the reasons, except under CI=true, where a
kafka test that does not run is a failure: the run must never pass by skipping them.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import NoReturn

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError

from controller.dev.kafka import DevKafkaError, LocalKafka
from controller.settings import load_settings

DEFAULT_TEST_KAFKA_PORT = 19092
LOCAL_START_TIMEOUT_S = 120.0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: kafka tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def require_compiled_lane() -> None:
    """Skip a test of the compiled lane (controller/stream/native.py) when it is not built;
    under CI=true fail instead: CI installs a Rust toolchain and must test it."""
    from controller.stream import native

    if native.available():
        return
    reason = "the compiled lane is not built (no Rust toolchain when the project was installed)"
    if in_ci():
        pytest.fail(f"{reason}; under CI=true it must be", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that need helm run last: .ci/run builds it in the background meanwhile."""
    needs_helm = [i for i in items if "helm" in getattr(i, "fixturenames", ())]
    if needs_helm:
        items[:] = [i for i in items if i not in needs_helm] + needs_helm


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI=true a skipped kafka test is a failure, whoever skipped it."""
    report: pytest.TestReport = yield
    if (
        in_ci()
        and report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("kafka") is not None
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"kafka test skipped under CI=true: {reason}"
    return report


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of the session's Kafka broker (see the module docstring for the order)."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        yield configured
        return
    reasons: list[str] = []
    with contextlib.ExitStack() as cleanup:
        bootstrap = _docker_kafka(cleanup, reasons) or _local_kafka(cleanup, reasons)
        if bootstrap is None:
            _unavailable("no Kafka broker for the tests: " + "; ".join(reasons))
        yield bootstrap


def _docker_kafka(cleanup: contextlib.ExitStack, reasons: list[str]) -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    # any failure here (no SDK, no socket, refused, timeout) means: no Docker engine to use
    except Exception as exc:
        reasons.append(f"no Docker engine answers ({type(exc).__name__})")
        return None
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.9 has no community package
        from testcontainers.kafka import KafkaContainer
    image = os.environ.get("ROLLOUT_TEST_KAFKA_IMAGE")
    container = (KafkaContainer(image) if image else KafkaContainer()).with_kraft()
    try:
        cleanup.enter_context(container)
    # a pull or start failure leaves the local broker as the next choice; the reason is kept
    except Exception as exc:
        reasons.append(f"the Kafka container did not start ({type(exc).__name__}: {exc})")
        return None
    return str(container.get_bootstrap_server())


def _local_kafka(cleanup: contextlib.ExitStack, reasons: list[str]) -> str | None:
    port = int(os.environ.get("ROLLOUT_TEST_KAFKA_PORT", DEFAULT_TEST_KAFKA_PORT))
    kafka_home = os.environ.get("KAFKA_HOME")
    broker = LocalKafka(
        port,
        cache_dir=load_settings().cache_dir,
        kafka_home=Path(kafka_home) if kafka_home else None,
    )
    try:
        # shared: concurrent sessions use one broker, and the last one out stops it
        return cleanup.enter_context(broker.shared(timeout=LOCAL_START_TIMEOUT_S))
    except DevKafkaError as exc:
        detail = f"\n{exc.details}" if exc.details else ""
        reasons.append(f"the local broker (rollout dev-kafka) did not start: {exc}{detail}")
        return None


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="rollout-tests")
    yield admin
    admin.close()


MakeTopic = Callable[..., str]


@pytest.fixture
def make_topic(
    kafka_admin: KafkaAdminClient, request: pytest.FixtureRequest
) -> Iterator[MakeTopic]:
    """A factory: `make_topic(partitions=1, config=None, *, prefix=None) -> name`.

    Each call creates a new topic with a unique name (test.<prefix or test name>.<random>),
    waits until it has leaders, and returns the name; the topics are deleted after the test.
    """
    created: list[str] = []

    def make(
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        *,
        prefix: str | None = None,
    ) -> str:
        name = unique_topic_name(prefix or request.node.name)
        topic = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            topic_configs=dict(config or {}),
        )
        kafka_admin.create_topics([topic], wait_for_metadata=True)
        created.append(name)
        return name

    yield make
    if created:
        with contextlib.suppress(KafkaError):  # the next session starts clean anyway
            kafka_admin.delete_topics(created)


def unique_topic_name(prefix: str) -> str:
    """test.<prefix>.<12 hex>: legal in Kafka (letters, digits, '.', '_', '-'), never reused."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-.")[:80] or "topic"
    return f"test.{slug}.{uuid.uuid4().hex[:12]}"
