"""`rollout dev-kafka` against a real broker: the CLI lifecycle, and a message round trip."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from controller.cli import cli
from controller.dev.kafka import DevKafkaError, LocalKafka, require_java, resolve_distribution
from controller.settings import load_settings

pytestmark = pytest.mark.kafka


def free_port_pair() -> int:
    """A port p such that p and p + 1 (the controller) are both free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        with socket.socket() as probe, contextlib.suppress(OSError):
            probe.bind(("127.0.0.1", port + 1))
            return port
    raise AssertionError("no two adjacent free ports")


@pytest.fixture
def cli_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalKafka]:
    """A broker of its own on a free port (ROLLOUT_TEST_CLI_KAFKA_PORT to fix one), so that
    concurrent test sessions never share it; stopped and its data removed afterwards."""
    kafka_home = os.environ.get("KAFKA_HOME")
    port = int(os.environ.get("ROLLOUT_TEST_CLI_KAFKA_PORT") or free_port_pair())
    broker = LocalKafka(
        port,
        cache_dir=load_settings().cache_dir,  # the jars are shared with `rollout dev-kafka`
        kafka_home=Path(kafka_home) if kafka_home else None,
    )
    try:
        require_java()
        resolve_distribution(broker.cache_dir, broker.kafka_home)  # fetch the jars up front
    except DevKafkaError as exc:
        pytest.skip(f"the local broker cannot run here: {exc}")  # a failure under CI=true
    monkeypatch.delenv("ROLLOUT_KAFKA_CONTROLLER_PORT", raising=False)
    broker.stop()  # a leftover of an interrupted run
    yield broker
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)


def rollout(broker: LocalKafka, *args: str) -> Result:
    return CliRunner().invoke(cli, ["dev-kafka", *args, "--port", str(broker.port)])


def test_start_twice_status_stop_status(cli_broker: LocalKafka) -> None:
    address = cli_broker.bootstrap

    first = rollout(cli_broker, "start")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[-1] == address
    pid = cli_broker.status().pid
    assert pid is not None

    second = rollout(cli_broker, "start")
    assert second.exit_code == 0, second.output
    assert second.stdout.splitlines()[-1] == address
    assert "already runs" in second.stderr
    assert cli_broker.status().pid == pid

    running = rollout(cli_broker, "status")
    assert running.exit_code == 0, running.output
    assert f"running: pid {pid}, bootstrap {address}" in running.stdout
    assert str(cli_broker.log_file) in running.stdout

    stopped = rollout(cli_broker, "stop")
    assert stopped.exit_code == 0, stopped.output
    assert f"Stopped Kafka on {address} (pid {pid})" in stopped.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not cli_broker.pid_file.exists()

    after = rollout(cli_broker, "status")
    assert after.exit_code == 3, after.output
    assert after.stdout.startswith(f"not running on {address}")


def test_a_message_produced_is_consumed(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topic, key=b"deployment-1", value=b"canary p99 412 ms").get(timeout=30)
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            received += [(record.key, record.value) for record in records]
    consumer.close()

    assert received == [(b"deployment-1", b"canary p99 412 ms")]


def test_the_dev_broker_creates_no_topic_by_accident(cli_broker: LocalKafka) -> None:
    """auto.create.topics.enable=false: asking about an unknown topic leaves it unknown."""
    bootstrap = cli_broker.start(timeout=60)
    unknown = "test.no-such-topic.never-created"

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    consumer.partitions_for_topic(unknown)
    consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    topics = admin.list_topics()
    admin.close()

    assert unknown not in topics


def test_a_shared_broker_stops_when_its_last_user_leaves(cli_broker: LocalKafka) -> None:
    with cli_broker.shared(timeout=60) as first:
        with cli_broker.shared(timeout=60) as second:
            assert second == first
        assert cli_broker.is_running(), "stopped while a user was still inside"
    assert not cli_broker.is_running()


def test_a_broker_started_by_hand_outlives_its_shared_users(cli_broker: LocalKafka) -> None:
    cli_broker.start(timeout=60)

    with cli_broker.shared(timeout=60):
        pass

    assert cli_broker.is_running()


def test_kafka_home_runs_instead_of_the_maven_jars(
    cli_broker: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unpacked distribution, here made of the cached jars, is used as it is."""
    home = tmp_path / "kafka_2.13"
    home.mkdir()
    maven_jars = resolve_distribution(cli_broker.cache_dir).classpath.removesuffix("/*")
    (home / "libs").symlink_to(maven_jars)
    monkeypatch.setenv("KAFKA_HOME", str(home))

    started = rollout(cli_broker, "start")

    assert started.exit_code == 0, started.output
    assert f"# rollout dev-kafka: KAFKA_HOME {home}" in cli_broker.log_file.read_text()


def test_a_broker_that_dies_while_starting_shows_its_log(
    cli_broker: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "kafka_without_jars"
    (home / "libs").mkdir(parents=True)
    monkeypatch.setenv("KAFKA_HOME", str(home))
    cli_broker.log_dir.mkdir(parents=True)
    (cli_broker.log_dir / "meta.properties").write_text("")  # formatted: go straight to launch

    started = rollout(cli_broker, "start")

    assert started.exit_code == 2, started.output
    assert "The Kafka broker exited while starting" in started.stderr
    assert "kafka.Kafka" in started.stderr  # from the log: could not find the main class
    assert not cli_broker.pid_file.exists()
