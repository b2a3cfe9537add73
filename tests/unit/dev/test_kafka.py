"""The local development broker, without a broker: files, versions, processes and messages."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli import cli
from controller.dev import kafka as devkafka
from controller.dev.kafka import (
    DevKafkaError,
    LocalKafka,
    State,
    find_deploy_dir,
    is_broker_command,
    java_major_version,
    kafka_version_from_pom,
    render_server_properties,
)
from controller.errors import RolloutError
from controller.settings import load_settings

POM_NS = "http://maven.apache.org/POM/4.0.0"


def make_pom(kafka_version: str = "${kafka.version}", properties: str = "") -> str:
    return f"""<project xmlns="{POM_NS}">
      <properties>{properties}</properties>
      <dependencies>
        <dependency>
          <groupId>org.apache.logging.log4j</groupId>
          <artifactId>log4j-core</artifactId>
          <version>2.24.3</version>
        </dependency>
        <dependency>
          <groupId>org.apache.kafka</groupId>
          <artifactId>kafka_2.13</artifactId>
          <version>{kafka_version}</version>
        </dependency>
      </dependencies>
    </project>"""


def parse_properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def free_port_pair() -> int:
    """A port p such that p and p + 1 are both free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port < 65535 and devkafka._port_free("127.0.0.1", port + 1):
            return port
    raise AssertionError("no two adjacent free ports")


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds only an empty directory: no java, no mvn."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return bin_dir


@pytest.fixture
def a_process_that_is_not_kafka() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


# --- the pom -------------------------------------------------------------------------------------


def test_the_kafka_version_is_read_from_the_repository_pom() -> None:
    pom = find_deploy_dir() / "pom.xml"

    assert kafka_version_from_pom(pom.read_text()) == "4.1.1"


def test_a_version_property_is_resolved() -> None:
    pom = make_pom(properties="<kafka.version>4.0.0</kafka.version>")

    assert kafka_version_from_pom(pom) == "4.0.0"


def test_a_literal_version_is_read_as_is() -> None:
    assert kafka_version_from_pom(make_pom(kafka_version="4.2.0")) == "4.2.0"


def test_a_pom_without_the_kafka_dependency_is_an_error() -> None:
    pom = f'<project xmlns="{POM_NS}"><dependencies/></project>'

    with pytest.raises(DevKafkaError, match="kafka_<scala>"):
        kafka_version_from_pom(pom)


def test_the_deploy_dir_ships_the_log4j2_config_next_to_the_pom() -> None:
    assert (find_deploy_dir() / "log4j2.yaml").is_file()


def test_a_missing_deploy_dir_says_to_use_a_checkout_or_kafka_home(tmp_path: Path) -> None:
    with pytest.raises(DevKafkaError, match="KAFKA_HOME") as raised:
        find_deploy_dir(start=tmp_path / "site-packages" / "controller" / "devkafka.py")

    assert "deploy/kafka/pom.xml" in str(raised.value)


# --- server.properties ---------------------------------------------------------------------------


def test_server_properties_make_one_kraft_node_on_localhost(tmp_path: Path) -> None:
    text = render_server_properties(
        host="127.0.0.1", port=19092, controller_port=19093, log_dir=tmp_path / "data"
    )

    props = parse_properties(text)
    expected = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": "127.0.0.1:19093",
        "listeners": "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
        "advertised.listeners": "PLAINTEXT://127.0.0.1:19092",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(tmp_path / "data"),
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "auto.create.topics.enable": "false",
        "log.cleaner.enable": "true",
    }
    assert expected == {key: props.get(key) for key in expected}


def test_the_controller_port_follows_the_client_port(tmp_path: Path) -> None:
    broker = LocalKafka(29092, cache_dir=tmp_path)

    assert (
        broker.port,
        broker.controller_port,
        broker.bootstrap,
    ) == (29092, 29093, "127.0.0.1:29092")


def test_the_data_dir_is_per_port_under_the_cache(tmp_path: Path) -> None:
    broker = LocalKafka(29092, cache_dir=tmp_path)

    assert tmp_path.resolve() / "kafka-data" / "29092" == broker.data_dir


@pytest.mark.parametrize(("port", "controller_port"), [(29092, 29092), (65535, None)])
def test_an_impossible_controller_port_is_refused(
    tmp_path: Path, port: int, controller_port: int | None
) -> None:
    with pytest.raises(DevKafkaError, match="ROLLOUT_KAFKA_CONTROLLER_PORT"):
        LocalKafka(port, cache_dir=tmp_path, controller_port=controller_port)


# --- java ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("no version here", None),
    ],
)
def test_the_java_major_version_is_read_from_java_version(output: str, major: int | None) -> None:
    assert major == java_major_version(output)


def test_no_java_on_path_says_what_to_install(empty_path: Path) -> None:
    with pytest.raises(DevKafkaError) as raised:
        devkafka.require_java()

    message = str(raised.value)
    assert "Java 17 or newer is needed" in message
    assert "install a JDK or JRE 17" in message


def test_an_old_java_is_named_in_the_message(empty_path: Path) -> None:
    fake_java = empty_path / "java"
    fake_java.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    fake_java.chmod(0o755)

    with pytest.raises(DevKafkaError, match="is Java 8"):
        devkafka.require_java()


def test_the_cli_turns_missing_java_into_one_sentence_and_exit_2(
    empty_path: Path, tmp_path: Path
) -> None:
    port = free_port_pair()

    result = CliRunner().invoke(
        cli,
        ["dev-kafka", "start", "--port", str(port)],
        env={"ROLLOUT_CACHE_DIR": str(tmp_path / "cache"), "KAFKA_HOME": None},
    )

    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("rollout dev-kafka:")]
    assert len(errors) == 1
    assert "Java 17 or newer is needed" in errors[0]


# --- the jars ------------------------------------------------------------------------------------


def test_no_maven_and_no_cached_jars_says_what_to_install(empty_path: Path, tmp_path: Path) -> None:
    pom = find_deploy_dir() / "pom.xml"

    with pytest.raises(DevKafkaError, match="install Maven") as raised:
        devkafka.fetch_libs(tmp_path / "cache", pom)

    assert "KAFKA_HOME" in str(raised.value)


def cache_libs(cache_dir: Path, pom: Path, digest: str | None = None) -> Path:
    root = cache_dir / "kafka" / kafka_version_from_pom(pom.read_text())
    (root / "libs").mkdir(parents=True)
    (root / "libs" / "kafka_2.13.jar").write_bytes(b"")
    marker = digest or hashlib.sha256(pom.read_bytes()).hexdigest()
    (root / "libs.complete").write_text(marker + "\n")
    return root / "libs"


def test_cached_jars_are_reused_without_maven(empty_path: Path, tmp_path: Path) -> None:
    pom = find_deploy_dir() / "pom.xml"
    libs = cache_libs(tmp_path / "cache", pom)

    assert libs == devkafka.fetch_libs(tmp_path / "cache", pom)


def test_jars_cached_for_another_pom_are_fetched_again(empty_path: Path, tmp_path: Path) -> None:
    pom = find_deploy_dir() / "pom.xml"
    cache_libs(tmp_path / "cache", pom, digest="0" * 64)

    with pytest.raises(DevKafkaError, match="install Maven"):
        devkafka.fetch_libs(tmp_path / "cache", pom)


def test_kafka_home_is_used_with_its_own_log4j2_config(tmp_path: Path) -> None:
    home = tmp_path / "kafka_2.13-4.1.1"
    (home / "libs").mkdir(parents=True)
    (home / "config").mkdir()
    (home / "config" / "log4j2.yaml").write_text("Configuration: {}\n")

    dist = devkafka.resolve_distribution(tmp_path / "cache", kafka_home=home)

    assert (f"{home / 'libs'}/*", home / "config" / "log4j2.yaml") == (
        dist.classpath,
        dist.log4j_config,
    )


def test_kafka_home_without_log4j2_config_gets_ours(tmp_path: Path) -> None:
    home = tmp_path / "kafka"
    (home / "libs").mkdir(parents=True)

    dist = devkafka.resolve_distribution(tmp_path / "cache", kafka_home=home)

    assert find_deploy_dir() / "log4j2.yaml" == dist.log4j_config


def test_kafka_home_without_libs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DevKafkaError, match="no libs directory"):
        devkafka.resolve_distribution(tmp_path / "cache", kafka_home=tmp_path)


# --- the process ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "ours"),
    [
        (
            ["/usr/bin/java", "-Xmx512m", "-cp", "libs/*", "kafka.Kafka", "/c/server.properties"],
            True,
        ),
        (["java", "kafka.Kafka", "/other/server.properties"], False),
        (["/usr/bin/python3", "kafka.Kafka", "/c/server.properties"], False),
        (["/usr/bin/java", "-jar", "app.jar", "/c/server.properties"], False),
        ([], False),
    ],
)
def test_only_java_kafka_with_our_properties_counts_as_our_broker(
    argv: list[str], ours: bool
) -> None:
    assert ours == is_broker_command(argv, Path("/c/server.properties"))


def test_a_pid_file_naming_another_process_is_stale_and_that_process_is_left_alone(
    tmp_path: Path, a_process_that_is_not_kafka: subprocess.Popen[bytes]
) -> None:
    broker = LocalKafka(free_port_pair(), cache_dir=tmp_path)
    broker.data_dir.mkdir(parents=True)
    broker.pid_file.write_text(f"{a_process_that_is_not_kafka.pid}\n")

    assert broker.status().state == State.STALE
    assert broker.stop() is False
    assert a_process_that_is_not_kafka.poll() is None, "stop signalled a process that is not ours"
    assert not broker.pid_file.exists()


def test_stop_without_a_broker_is_harmless(tmp_path: Path) -> None:
    broker = LocalKafka(free_port_pair(), cache_dir=tmp_path)

    assert (broker.stop(), broker.status().state) == (False, State.STOPPED)


def test_a_port_taken_by_another_process_is_named(tmp_path: Path) -> None:
    port = free_port_pair()
    broker = LocalKafka(port, cache_dir=tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()

        assert "another process listens" in broker.status().reason
        with pytest.raises(DevKafkaError, match=f"Port {port} on 127.0.0.1 .* already in use"):
            broker.start(timeout=5)


def test_status_and_stop_through_the_cli_when_nothing_runs(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--port", str(free_port_pair())]
    env = {"ROLLOUT_CACHE_DIR": str(tmp_path)}

    status = runner.invoke(cli, ["dev-kafka", "status", *args], env=env)
    stop = runner.invoke(cli, ["dev-kafka", "stop", *args], env=env)

    assert (status.exit_code, stop.exit_code) == (3, 0)
    assert status.stdout.startswith("not running on 127.0.0.1:")
    assert "nothing to stop" in stop.stdout


def test_dev_kafka_errors_share_the_project_root() -> None:
    assert issubclass(DevKafkaError, RolloutError)


def test_the_log_tail_keeps_the_last_lines() -> None:
    assert devkafka.log_tail("a\nb\nc\nd\n", lines=2) == "c\nd"


def test_from_settings_takes_port_cache_and_kafka_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path / "kafka"))
    settings = load_settings(kafka_port=29092, kafka_controller_port=29999, cache_dir=tmp_path)

    from_settings = LocalKafka.from_settings(settings)
    with_port = LocalKafka.from_settings(settings, port=39092)

    assert (29092, 29999, tmp_path.resolve() / "kafka") == (
        from_settings.port,
        from_settings.controller_port,
        from_settings.kafka_home,
    )
    assert (with_port.port, with_port.controller_port) == (39092, 29999)
