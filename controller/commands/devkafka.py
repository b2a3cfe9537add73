"""`rollout dev-kafka start|stop|status`: a local single-node Kafka broker for development.

Messages go to stderr; `start` prints only the bootstrap address on stdout, so
`export KAFKA_BOOTSTRAP_SERVERS=$(rollout dev-kafka start)` works. `start --secure` prints the
variables that connect to the secure broker instead, one `NAME=value` a line, so
`export $(rollout dev-kafka start --secure)` works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import click

from controller.dev.kafka import DEFAULT_START_TIMEOUT_S, DevKafkaError, LocalKafka, State
from controller.settings import load_settings

EXIT_ERROR = 2
EXIT_NOT_RUNNING = 3

F = TypeVar("F", bound=Callable[..., object])


def _port_option(func: F) -> F:
    option = click.option(
        "--port",
        type=click.IntRange(1, 65535),
        default=None,
        help="Client port [default: ROLLOUT_KAFKA_PORT or 9092]; the KRaft controller listens "
        "on ROLLOUT_KAFKA_CONTROLLER_PORT, else port + 1.",
    )
    return option(func)


def _secure_option(func: F) -> F:
    option = click.option(
        "--secure",
        is_flag=True,
        help="The secure broker: SASL_SSL with SCRAM-SHA-512 users and ACLs, on its own ports "
        "[default: ROLLOUT_KAFKA_PORT + 2, controller + 3], beside the plain one.",
    )
    return option(func)


def _broker(port: int | None, secure: bool = False) -> LocalKafka:
    return LocalKafka.from_settings(load_settings(), port=port, secure=secure)


@contextmanager
def _reported_errors() -> Iterator[None]:
    """A DevKafkaError becomes its message (plus details such as a log tail) and exit code 2."""
    try:
        yield
    except DevKafkaError as exc:
        click.echo(f"rollout dev-kafka: {exc}", err=True)
        if exc.details:
            click.echo(exc.details, err=True)
        raise SystemExit(EXIT_ERROR) from exc


@click.group("dev-kafka")
def dev_kafka() -> None:
    """A local single-node Apache Kafka 4 broker (KRaft) on 127.0.0.1.

    The broker runs from the Maven Central jars of deploy/kafka/pom.xml, fetched once into the
    cache (ROLLOUT_CACHE_DIR), or from KAFKA_HOME when that names an unpacked Kafka distribution.
    Needs Java 17+, and Maven for the first fetch.
    """


@dev_kafka.command()
@_port_option
@_secure_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=DEFAULT_START_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the broker to accept clients.",
)
def start(port: int | None, secure: bool, timeout: float) -> None:
    """Start the broker (harmless when it runs already); print its bootstrap address, or with
    --secure the variables that connect to it as the super user `admin`."""
    with _reported_errors():
        broker = _broker(port, secure)
        before = broker.status()
        kind = "secure Kafka (SASL_SSL, SCRAM-SHA-512)" if secure else "Kafka"
        if not before.running:
            click.echo(f"Starting {kind} on {broker.bootstrap} (log: {broker.log_file})", err=True)
        bootstrap = broker.start(timeout)
        after = broker.status()
    if before.running:
        click.echo(f"{kind} already runs on {bootstrap} (pid {after.pid}).", err=True)
    else:
        click.echo(f"{kind} started on {bootstrap} (pid {after.pid}).", err=True)
    if not secure:
        click.echo(bootstrap)
        return
    with _reported_errors():
        access = broker.access()
    click.echo(
        f"CA file: {access.ca_file}; users: {', '.join(access.users)} (admin is a super user; "
        f"passwords in {broker.credentials_file})",
        err=True,
    )
    for name, value in access.environment().items():
        click.echo(f"{name}={value}")


@dev_kafka.command()
@_port_option
@_secure_option
def status(port: int | None, secure: bool) -> None:
    """Say whether the broker runs; exit 0 when it does, 3 when not."""
    with _reported_errors():
        current = _broker(port, secure).status()
    if current.running:
        click.echo(f"{current.state.value}: pid {current.pid}, bootstrap {current.bootstrap}")
        if current.state is State.STARTING:
            click.echo(current.reason)
        click.echo(f"log: {current.log_file}")
        return
    click.echo(f"not running on {current.bootstrap}: {current.reason}")
    if current.state is State.STALE:
        click.echo("`rollout dev-kafka start` or `stop` removes the stale pid file.")
    raise SystemExit(EXIT_NOT_RUNNING)


@dev_kafka.command()
@_port_option
@_secure_option
def stop(port: int | None, secure: bool) -> None:
    """Stop the broker that `start` launched on this port (SIGTERM, then SIGKILL after 30 s)."""
    with _reported_errors():
        broker = _broker(port, secure)
        pid = broker.status().pid
        stopped = broker.stop()
    if stopped:
        click.echo(f"Stopped Kafka on {broker.bootstrap} (pid {pid}).")
    else:
        click.echo(f"Kafka is not running on {broker.bootstrap}; nothing to stop.")
