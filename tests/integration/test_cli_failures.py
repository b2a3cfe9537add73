"""The CLI against real brokers that refuse it, and the worker's output in a log file.

The secure broker is `rollout dev-kafka start --secure` (SASL_SSL, SCRAM-SHA-512, ACLs), run on
free ports for the session; under CI=true a broker that cannot start fails these tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from controller import kafka_clients
from controller.cli import cli
from controller.dev.kafka import SecureAccess
from controller.settings import load_settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def run(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(cli, args, env={"ROLLOUT_CONNECT_TIMEOUT_S": "5", **env})


def one_sentence(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_a_wrong_password_is_an_authentication_failure(secure_broker: SecureAccess) -> None:
    env = secure_broker.environment("rollout", password="not-the-password")
    line = one_sentence(run(["status"], env))
    assert (
        f"authentication failed for user rollout with SCRAM-SHA-512 at {secure_broker.bootstrap}"
        f": check ROLLOUT_SASL_USERNAME / ROLLOUT_SASL_PASSWORD"
    ) in line


def test_an_unknown_user_is_an_authentication_failure(secure_broker: SecureAccess) -> None:
    env = {**secure_broker.environment(), "ROLLOUT_SASL_USERNAME": "nobody"}
    assert "authentication failed for user nobody" in one_sentence(run(["topics", "create"], env))


def test_an_untrusted_certificate_is_a_tls_failure(secure_broker: SecureAccess) -> None:
    env = {**secure_broker.environment(), "ROLLOUT_SSL_CAFILE": ""}
    line = one_sentence(run(["status"], env))
    assert "TLS handshake" in line and "ROLLOUT_SSL_CAFILE" in line


def test_a_plaintext_client_is_told_the_listener_speaks_tls(secure_broker: SecureAccess) -> None:
    line = one_sentence(run(["status"], {"KAFKA_BOOTSTRAP_SERVERS": secure_broker.bootstrap}))
    assert "with TLS: set ROLLOUT_SECURITY_PROTOCOL to SSL or SASL_SSL" in line


def test_the_right_password_gets_in(secure_broker: SecureAccess) -> None:
    env = {**secure_broker.environment(), "ROLLOUT_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:8]}."}
    result = run(["topics", "create"], env)
    assert 0 == result.exit_code, result.output
    assert "created" in result.output


def test_the_clients_are_given_the_connect_timeout(kafka_bootstrap: str) -> None:
    settings = load_settings(bootstrap_servers=kafka_bootstrap, connect_timeout_s=3.5)
    producer = kafka_clients.producer(settings)
    try:
        assert 3500 == producer.config["bootstrap_timeout_ms"]
        assert 3500 == producer.config["max_block_ms"]
    finally:
        producer.close()


def started(output: bytes) -> bool:
    """The worker got past its startup (the spinner's part): its tables recovered."""
    return b"Ready" in output or b"recovered" in output


def test_the_worker_writes_no_terminal_codes_to_a_log(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Faust's spinner writes cursor codes to stdout; a log file must not get them."""
    unique = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        ROLLOUT_TOPIC_PREFIX=f"esc{unique}.",
        ROLLOUT_CONSUMER_GROUP=f"esc-{unique}",
        ROLLOUT_TOPIC_PARTITIONS="1",
        ROLLOUT_METRICS_PORT="0",
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "worker"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not started(log.read_bytes()):
                assert worker.poll() is None, log.read_text(errors="replace")
                time.sleep(0.5)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    output = log.read_bytes()
    assert started(output), output[-2000:]
    assert b"\x1b" not in output, output[:2000]
