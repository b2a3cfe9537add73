"""Kafka security on a real broker: `rollout dev-kafka start --secure` (SASL_SSL with SCRAM
users, an mTLS listener, the StandardAuthorizer) with the ACLs of `rollout acls --apply`.

Only the controller's principal writes commands, decisions and alerts; only serving principals
write predictions; the worker, the SDK and the CLI connect over SASL_SSL (SCRAM) and over mTLS
(a client certificate), and the worker, as `controller`, decides on a request an SRE sent. Under
CI=true a broker that cannot start fails these tests (tests/conftest.py).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError

from controller.cli import cli
from controller.dev.kafka import SecureAccess
from controller.engine import Engine
from controller.policy_io import default_policy
from controller.sdk import CommandListener
from controller.settings import Settings, load_settings
from controller.stream.app import RolloutWorker
from controller.stream.embedded import EmbeddedWorker
from schemas import Command, DeploymentRequested, RolloutPlan, TrafficStep, make_event
from tests.integration.conftest import report_baseline

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass(frozen=True)
class Secured:
    """The secure broker with the project's topics and ACLs for one prefix and group."""

    access: SecureAccess
    prefix: str
    group: str

    def env(self, user: str, transport: str = "sasl_ssl") -> dict[str, str]:
        """The CLI's environment for `user` over SASL_SSL (or mTLS: `transport` "mtls")."""
        connect = self.access.mtls_environment if transport == "mtls" else self.access.environment
        return {
            **connect(user),
            "ROLLOUT_TOPIC_PREFIX": self.prefix,
            "ROLLOUT_CONSUMER_GROUP": self.group,
            "ROLLOUT_CONNECT_TIMEOUT_S": "10",
        }

    def settings(self, env: dict[str, str], **extra: object) -> Settings:
        fields: dict[str, object] = {"bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]}
        fields.update(
            {
                k.removeprefix("ROLLOUT_").lower(): v
                for k, v in env.items()
                if k != "KAFKA_BOOTSTRAP_SERVERS"
            }
        )
        fields.update(topic_prefix=self.prefix, consumer_group=self.group, topic_partitions=2)
        fields.update(extra)
        return load_settings(**fields)

    def topic(self, name: str) -> str:
        return self.prefix + name


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, args, env=env, input=stdin)


@pytest.fixture(scope="module")
def secured(secure_broker: SecureAccess) -> Secured:
    """Topics created by the admin, then the ACLs applied by `rollout acls --apply`."""
    run_id = uuid.uuid4().hex[:8]
    secured = Secured(secure_broker, f"sec{run_id}.", f"sec-worker-{run_id}")
    admin = {**secured.env("admin"), "ROLLOUT_TOPIC_PARTITIONS": "2"}
    created = run(["topics", "create"], admin)
    assert 0 == created.exit_code, created.output
    applied = run(["acls", "--apply"], admin)
    assert 0 == applied.exit_code, applied.output
    assert "applied" in applied.output.splitlines()[-1]
    return secured


def produce(options: dict[str, object], topic: str) -> None:
    producer = KafkaProducer(**options, max_block_ms=10_000, request_timeout_ms=10_000)
    try:
        producer.send(topic, key=b"k", value=b"{}").get(timeout=15)
    finally:
        producer.close(timeout=5)


@pytest.mark.parametrize("topic", ["commands", "decisions", "alerts"])
def test_only_the_controller_writes_commands_decisions_and_alerts(
    secured: Secured, topic: str
) -> None:
    produce(secured.access.kafka_python_options("controller"), secured.topic(topic))
    for other in ("serving", "sre"):
        with pytest.raises(TopicAuthorizationFailedError):
            produce(secured.access.kafka_python_options(other), secured.topic(topic))


def test_only_serving_writes_predictions(secured: Secured) -> None:
    produce(secured.access.kafka_python_options("serving"), secured.topic("predictions"))
    produce(secured.access.mtls_kafka_python_options("serving"), secured.topic("predictions"))
    for other in ("sre", "controller"):
        with pytest.raises(TopicAuthorizationFailedError):
            produce(secured.access.kafka_python_options(other), secured.topic("predictions"))


def written(secured: Secured, name: str) -> int:
    """How many records the topic holds (its end offsets, read as the controller)."""
    reader = KafkaConsumer(**secured.access.kafka_python_options("controller"))
    topic = secured.topic(name)
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        return sum(reader.end_offsets(partitions).values())
    finally:
        reader.close()


TRANSPORTS = ["sasl_ssl", "mtls"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_sdk_reports_predictions_over_sasl_ssl_and_mtls(
    secured: Secured, transport: str
) -> None:
    settings = secured.settings(secured.env("serving", transport))
    expected = "SSL" if transport == "mtls" else "SASL_SSL"
    assert expected == settings.security_protocol
    assert bool(settings.ssl_certfile) == (transport == "mtls")
    before = written(secured, "predictions")
    report_baseline(settings, "sec-sdk", 5)
    after = written(secured, "predictions")
    assert after > before, "the reporter wrote nothing"


def test_a_certificate_for_a_role_is_that_role(secured: Secured) -> None:
    """CN=sre over mTLS is User:sre: it may not write predictions."""
    with pytest.raises(TopicAuthorizationFailedError):
        produce(secured.access.mtls_kafka_python_options("sre"), secured.topic("predictions"))


def decisions_for(secured: Secured, deployment_id: str, timeout: float = 90.0) -> list[bytes]:
    """The decisions recorded for `deployment_id`, read as sre (who may read them)."""
    consumer = KafkaConsumer(
        **secured.access.kafka_python_options("sre"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    topic = secured.topic("decisions")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [
                r.value
                for records in consumer.poll(timeout_ms=500).values()
                for r in records
                if r.key == deployment_id.encode()
            ]
            if found:
                return found
    finally:
        consumer.close()
    return []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_worker_decides_as_the_controller_and_the_cli_reads_it(
    secured: Secured, tmp_path: Path, transport: str
) -> None:
    """The worker over SASL_SSL (SCRAM) or mTLS (CN=controller); the CLI as sre the same way."""
    settings = secured.settings(
        secured.env("controller", transport),
        tick_interval_s=0.5,
        data_dir=tmp_path,
        metrics_port=0,
        metrics_host="127.0.0.1",
    )
    deployment_id = f"ranker-secure-{transport}"
    deployment = DeploymentRequested(
        deployment_id=deployment_id,
        model="ranker",
        candidate_version="v2",
        baseline_version="v1",
        plan=RolloutPlan(
            steps=(
                TrafficStep(canary_percent=20, min_bake_s=600, min_samples=500),
                TrafficStep(canary_percent=100),
            )
        ),
    )
    with EmbeddedWorker(RolloutWorker(settings, Engine(default_policy()))):
        line = make_event(deployment, source="sre").to_json().decode()
        sent = run(["emit"], secured.env("sre", transport), stdin=line + "\n")
        assert 0 == sent.exit_code, sent.output
        decisions = decisions_for(secured, deployment_id)
    assert decisions, f"no decision for {deployment_id}"
    # Faust created its changelog topics under the prefixed grant on `<group>-`
    admin = KafkaAdminClient(**secured.access.kafka_python_options("admin"))
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    assert f"{secured.group}-rollouts-changelog" in topics
    assert any(json.loads(d)["data"]["deployment_id"] == deployment_id for d in decisions)
    status = run(["status", deployment_id], secured.env("sre", transport))
    assert 0 == status.exit_code, status.output
    assert deployment_id in status.output
    # a router (the SDK's CommandListener, as serving) applies the worker's first command
    applied: list[Command] = []
    listener = CommandListener(
        secured.settings(secured.env("serving", transport)),
        apply=applied.append,
        applied_by=f"router-{transport}",
        deployment_ids=[deployment_id],
    )
    try:
        deadline = time.monotonic() + 60
        while not applied and time.monotonic() < deadline:
            listener.poll_once(timeout_ms=500)
    finally:
        listener.close()
    assert [("set_traffic", 20.0)] == [(c.action.value, c.canary_percent) for c in applied]
    assert 1 == listener.stats().acked


def test_the_cli_is_refused_what_its_user_may_not_do(secured: Secured) -> None:
    """sre may not create topics: the admin does."""
    refused = run(["topics", "create"], {**secured.env("sre"), "ROLLOUT_TOPIC_PREFIX": "other."})
    assert 0 != refused.exit_code
    assert "Traceback" not in refused.output
