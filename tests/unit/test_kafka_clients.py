"""The CLI against brokers that are not there or are not Kafka: one sentence, no traceback.

Each case is a real situation on this machine (a closed port, a name that does not resolve, a
TCP server that is not Kafka); the Kafka ones are in tests/integration/test_cli_failures.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from controller.cli import cli
from controller.kafka_clients import client_options
from controller.settings import load_settings

pytestmark = pytest.mark.timeout(60)

#: Every command that talks to Kafka, with what it needs to get that far.
KAFKA_COMMANDS = [
    ["status"],
    ["watch", "some-deployment", "--timeout", "30"],
    ["alerts"],
    ["topics", "create"],
    ["pause", "some-deployment", "--no-wait"],
    ["monitor", "list"],
    ["pool", "list"],
]


def run(args: list[str], bootstrap: str, **env: str) -> Result:
    environment = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ROLLOUT_CONNECT_TIMEOUT_S": "2", **env}
    return CliRunner().invoke(cli, args, env=environment)


def assert_one_sentence(result: Result, *parts: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for part in parts:
        assert part in lines[0]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


@pytest.fixture
def server() -> Iterator[Callable[[bytes | None], int]]:
    """Start a TCP server on 127.0.0.1 that answers each connection with `reply` (None: says
    nothing and keeps it open); returns its port."""
    sockets: list[socket.socket] = []

    def start(reply: bytes | None) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sockets.append(listener)

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                sockets.append(conn)
                if reply is not None:
                    conn.recv(1024)
                    conn.sendall(reply)
                    conn.close()

        threading.Thread(target=serve, daemon=True).start()
        return int(listener.getsockname()[1])

    yield start
    for sock in sockets:
        sock.close()


@pytest.mark.parametrize("args", KAFKA_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_says_nothing_listens_at_a_closed_port(
    args: list[str], closed_port: int
) -> None:
    address = f"127.0.0.1:{closed_port}"
    result = run(args, address)
    assert_one_sentence(result, address, "connection refused", "KAFKA_BOOTSTRAP_SERVERS")


def test_deploy_and_emit_say_nothing_listens(closed_port: int, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "model: fraud\ncandidate_version: v2\nbaseline_version: v1\n"
        "plan:\n  steps:\n    - canary_percent: 10\n"
    )
    address = f"127.0.0.1:{closed_port}"
    assert_one_sentence(run(["deploy", str(plan)], address), address, "connection refused")
    events = tmp_path / "events.jsonl"
    events.write_text('{"deployment_id": "d1", "by": "me", "reason": ""}\n')
    result = run(["emit", str(events), "--type", "pause.requested.v1"], address)
    assert_one_sentence(result, address, "connection refused")


def test_a_name_that_does_not_resolve_is_named() -> None:
    result = run(["status"], "no-such-broker.invalid:9092")
    assert_one_sentence(result, "no-such-broker.invalid:9092", "does not resolve")


def test_an_http_server_is_not_kafka(server: Callable[[bytes | None], int]) -> None:
    port = server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    result = run(["status"], f"127.0.0.1:{port}")
    assert_one_sentence(result, f"127.0.0.1:{port}", "does not answer as a Kafka broker")


def test_a_silent_server_is_not_kafka(server: Callable[[bytes | None], int]) -> None:
    port = server(None)
    result = run(["status"], f"127.0.0.1:{port}", ROLLOUT_CONNECT_TIMEOUT_S="1")
    assert_one_sentence(result, f"127.0.0.1:{port}", "no answer to ApiVersions")


def test_a_plaintext_server_is_no_tls_listener(server: Callable[[bytes | None], int]) -> None:
    port = server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    result = run(["status"], f"127.0.0.1:{port}", ROLLOUT_SECURITY_PROTOCOL="SSL")
    assert_one_sentence(result, f"127.0.0.1:{port}", "TLS handshake", "ROLLOUT_SECURITY_PROTOCOL")


def test_the_worker_says_nothing_listens(closed_port: int) -> None:
    result = run(["worker"], f"127.0.0.1:{closed_port}")
    assert_one_sentence(result, f"127.0.0.1:{closed_port}", "connection refused")


def test_the_clients_are_given_the_connect_timeout() -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:1", connect_timeout_s=2.5)
    assert 2500 == client_options(settings)["bootstrap_timeout_ms"]


def test_the_connect_timeout_is_ten_seconds_by_default() -> None:
    assert 10.0 == load_settings().connect_timeout_s
